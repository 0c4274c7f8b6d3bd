import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A child process the benchmark starts (the sandbox, the agent), its output in a file.
final class Child: @unchecked Sendable {
    let process = Process()
    let name: String

    init(_ name: String, _ argv: [String], environment: [String: String] = [:], log: String) throws {
        self.name = name
        process.executableURL = URL(fileURLWithPath: argv[0])
        process.arguments = Array(argv.dropFirst())
        // The bench configures the children itself; SWITCHYARD_EXECUTOR alone passes through, to
        // compare the agent's own pool with libdispatch's (`SWITCHYARD_EXECUTOR=dispatch`).
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("SWITCHYARD_") || $0.key == "SWITCHYARD_EXECUTOR" }
        env.merge(environment) { $1 }
        process.environment = env
        FileManager.default.createFile(atPath: log, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
    }

    var pid: pid_t { process.processIdentifier }

    /// SIGTERM, then waits for the exit.
    func stop() {
        guard process.isRunning else { return }
        process.terminate()
        process.waitUntilExit()
    }
}

/// Figures of a running process, from /proc.
struct ProcessFigures {
    let pid: pid_t

    private func status() -> [String: String] {
        let text = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        var fields: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            fields[String(line[..<colon])] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        return fields
    }

    private func kibibytes(_ field: String) -> Double {
        Double(status()[field]?.split(separator: " ").first ?? "") ?? .nan
    }

    var rssMiB: Double { kibibytes("VmRSS") / 1024 }
    var anonymousMiB: Double { kibibytes("RssAnon") / 1024 }
    var peakMiB: Double { kibibytes("VmHWM") / 1024 }
    var threads: Int { Int(status()["Threads"] ?? "") ?? -1 }

    var pssMiB: Double {
        let text = (try? String(contentsOfFile: "/proc/\(pid)/smaps_rollup", encoding: .utf8)) ?? ""
        let line = text.split(separator: "\n").first { $0.hasPrefix("Pss:") } ?? ""
        return (Double(line.split(separator: " ").dropFirst().first ?? "") ?? .nan) / 1024
    }

    /// Resident KiB by what is mapped (a file's name, `[anon]`, `[heap]`, `[stack]`), from /proc/PID/smaps.
    var residentByMapping: [String: Int] {
        // Read to its end: a /proc file has no size to read up to.
        let text = String(decoding: FileHandle(forReadingAtPath: "/proc/\(pid)/smaps")?.readDataToEndOfFile() ?? Data(), as: UTF8.self)
        var resident: [String: Int] = [:]
        var current = "[anon]"
        for line in text.split(separator: "\n") {
            let columns = line.split(separator: " ", omittingEmptySubsequences: true)
            if let first = columns.first, first.contains("-"), !first.hasSuffix(":") {
                current = columns.count > 5 ? String(columns[5].split(separator: "/").last ?? "") : "[anon]"
            } else if columns.first == "Rss:", columns.count > 1, let kibibytes = Int(columns[1]) {
                resident[current, default: 0] += kibibytes
            }
        }
        return resident
    }

    /// CPU time used so far (user and system, all threads), in seconds: fields 14 and 15 of /proc/PID/stat.
    var cpuSeconds: Double {
        let text = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
        guard let close = text.lastIndex(of: ")") else { return .nan }
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return .nan }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    var descriptors: Int { ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []).count }

    /// Context switches so far of each of its threads: each is a wake-up.
    var contextSwitches: [String: Int] {
        var switches: [String: Int] = [:]
        for task in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? [] {
            let text = (try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/status", encoding: .utf8)) ?? ""
            for line in text.split(separator: "\n") where line.contains("ctxt_switches:") {
                switches[task, default: 0] += Int(line.split(separator: "\t").last?.trimmingCharacters(in: .whitespaces) ?? "") ?? 0
            }
        }
        return switches
    }

    /// Wake-ups between two samples of ``contextSwitches`` (a thread started meanwhile counts from zero).
    static func wakeups(from before: [String: Int], to after: [String: Int]) -> Int {
        after.reduce(0) { $0 + $1.value - (before[$1.key] ?? 0) }
    }

    /// Resets the peak resident size (VmHWM) to the current one.
    func resetPeak() {
        try? "5".write(toFile: "/proc/\(pid)/clear_refs", atomically: false, encoding: .utf8)
    }
}

/// The limits of this machine the agent's figures are set against.
enum Limits {
    /// posix_spawn + waitpid of `argv`, `count` times on `threads` threads: runs per second and the median duration (ms).
    static func spawnRate(_ argv: [String], count: Int, threads: Int) -> (perSecond: Double, medianMilliseconds: Double) {
        final class Durations: @unchecked Sendable {
            let lock = NSLock()
            var values: [Double] = []
        }
        let durations = Durations()
        let started = DispatchTime.now().uptimeNanoseconds
        DispatchQueue.concurrentPerform(iterations: threads) { _ in
            var mine: [Double] = []
            for _ in 0..<(count / threads) {
                let before = DispatchTime.now().uptimeNanoseconds
                spawnAndWait(argv)
                mine.append(Double(DispatchTime.now().uptimeNanoseconds - before) / 1e6)
            }
            durations.lock.lock()
            durations.values += mine
            durations.lock.unlock()
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
        let values = durations.values
        return (Double(values.count) / seconds, median(values))
    }

    static func spawnAndWait(_ argv: [String]) {
        var pid = pid_t()
        let cArguments = argv.map { strdup($0) } + [nil]
        defer { cArguments.forEach { free($0) } }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        defer { posix_spawn_file_actions_destroy(&actions) }
        guard posix_spawn(&pid, argv[0], &actions, nil, cArguments, environ) == 0 else { return }
        var status: Int32 = 0
        waitpid(pid, &status, 0)
    }

    /// A journal-sized record (120 bytes and a newline).
    static let record = [UInt8](repeating: 0x61, count: 120) + [0x0A]

    /// One append of a journal-sized record and its fsync, in `directory`: the median (ms) of `count`.
    static func appendAndSync(in directory: String, count: Int) -> Double {
        let path = directory + "/bench-fsync"
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        defer { close(fd); unlink(path) }
        let record = Self.record
        var durations: [Double] = []
        for _ in 0..<count {
            let before = DispatchTime.now().uptimeNanoseconds
            _ = record.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            fsync(fd)
            durations.append(Double(DispatchTime.now().uptimeNanoseconds - before) / 1e6)
        }
        return median(durations)
    }
}

func median(_ values: [Double]) -> Double { percentile(values, 0.5) }

/// The nearest-rank percentile.
func percentile(_ values: [Double], _ fraction: Double) -> Double {
    guard !values.isEmpty else { return .nan }
    let sorted = values.sorted()
    let rank = max(1, Int((fraction * Double(sorted.count)).rounded(.up)))
    return sorted[min(sorted.count, rank) - 1]
}

func wallClock() -> Int64 {
    var time = timespec()
    clock_gettime(CLOCK_REALTIME, &time)
    return Int64(time.tv_sec) * 1_000_000_000 + Int64(time.tv_nsec)
}

/// Runs a command and returns its standard output (empty when it cannot run).
func capture(_ argv: [String]) -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: argv[0])
    process.arguments = Array(argv.dropFirst())
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = FileHandle.nullDevice
    guard (try? process.run()) != nil else { return "" }
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return String(decoding: data, as: UTF8.self)
}

/// The first of `names` found on the PATH.
func which(_ name: String) -> String? {
    for directory in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
        let path = "\(directory)/\(name)"
        if access(path, X_OK) == 0 { return path }
    }
    return nil
}
