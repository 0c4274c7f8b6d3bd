import ArgumentParser
import Cumulocity
import Foundation
import JSONSupport
import Logging

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

extension Bench {
    static let message: JSONValue = ["c8y_Message": ["text": "bench"]]
    static let shell: JSONValue = ["acme_Shell": [:]]
    static let compiled: JSONValue = ["acme_True": [:]]

    func declareNoOps() throws {
        try declare("message.yaml", "operation: c8y_Message\nswift: Message\nconcurrency: 64\n")
        try declare("shell.yaml", "operation: acme_Shell\nconcurrency: 64\nexec:\n  command: [/bin/sh, -c, 'exit 0']\n")
        try declare("true.yaml", "operation: acme_True\nconcurrency: 64\nexec:\n  command: [/bin/true]\n")
    }

    /// Every figure of docs/performance.md, each with its limit measured in this run.
    func all(operations: Int, burst size: Int, soak: Int, latency: Int, staticBinary: String?, output: String) async throws {
        say("switchyard-bench: \(ProcessInfo.processInfo.activeProcessorCount) CPUs; \(operations) sequential operations per latency figure, bursts of \(size)\n")
        say(Self.format("figure", "value", "limit", "ratio"))

        // The limits.
        try FileManager.default.createDirectory(atPath: work + "/state", withIntermediateDirectories: true)
        let sync = Limits.appendAndSync(in: work + "/state", count: 200)
        let spawnTrue = Limits.spawnRate(["/bin/true"], count: 400, threads: 1)
        let spawnShell = Limits.spawnRate(["/bin/sh", "-c", "exit 0"], count: 400, threads: 1)
        let parallel = ProcessInfo.processInfo.activeProcessorCount * 2
        let spawnParallel = Limits.spawnRate(["/bin/sh", "-c", "exit 0"], count: 2000, threads: parallel)
        let spawnAgent = Limits.spawnRate([binaries + "/switchyard", "--version"], count: 40, threads: 1)
        row("limit: append + fsync (state directory), median", f(sync, 3) + " ms")
        row("limit: posix_spawn + wait /bin/true, median", f(spawnTrue.medianMilliseconds, 3) + " ms", limit: f(spawnTrue.perSecond, 0) + "/s")
        row("limit: posix_spawn + wait sh -c 'exit 0', median", f(spawnShell.medianMilliseconds, 3) + " ms", limit: f(spawnShell.perSecond, 0) + "/s")
        row("limit: parallel spawn sh (\(parallel) threads)", f(spawnParallel.perSecond, 0) + "/s")
        row("limit: exec switchyard --version, median", f(spawnAgent.medianMilliseconds, 2) + " ms")

        // The first start registers the device.
        try declareNoOps()
        try await startAgent()
        let roundTrip = try await putRoundTrip(count: 500)
        let capacity = try await putCapacity(connections: 16, seconds: 3)
        row("limit: PUT round trip, same client, median", f(roundTrip, 3) + " ms")
        row("limit: sandbox PUT capacity (16 connections)", f(capacity, 0) + "/s", limit: f(capacity / 2, 0) + " ops/s")
        let floors = try await floorLatency(count: min(operations, 500), sync: work + "/state")
        let floor = median(floors)
        row("limit: minimal agent (same client and listener, 2 fsyncs), p50 / p99", f(floor, 3) + " / " + f(percentile(floors, 0.99), 3) + " ms")
        figures["limits"] = ["fsyncMs": .double(sync), "spawnTruePerSecond": .double(spawnTrue.perSecond),
                             "spawnShellMs": .double(spawnShell.medianMilliseconds), "parallelSpawnPerSecond": .double(spawnParallel.perSecond),
                             "putRoundTripMs": .double(roundTrip), "putCapacityPerSecond": .double(capacity), "floorMs": .double(floor)]

        // Start-up of a registered device, idle figures.
        let startup = try await startAgent()
        let startupFloor = spawnAgent.medianMilliseconds + 6 * roundTrip
        row("start-up: exec → subscribed (registered device)", f(startup, 1) + " ms", limit: "exec + 6 round trips " + f(startupFloor, 1) + " ms",
            ratio: ratio(startup, startupFloor))
        try await Task.sleep(for: .seconds(3))
        let idle = try idleFigures(seconds: 10)
        figures["startupMs"] = .double(startup)
        figures["idle"] = idle
        if let staticBinary {
            // The memory target is the static build's: the same device, idle, started from it.
            _ = try await startAgent(binary: staticBinary)
            try await Task.sleep(for: .seconds(3))
            staticIdleFigures(binary: staticBinary)
            _ = try await startAgent()
        }

        // Latency.
        for (name, fragments, limit) in [("in-process c8y_Message", Self.message, floor),
                                         ("exec sh no-op", Self.shell, floor + spawnShell.medianMilliseconds),
                                         ("exec compiled no-op (/bin/true)", Self.compiled, floor + spawnTrue.medianMilliseconds)] {
            _ = try await sequential(fragments, count: 20)  // warm up
            let durations = try await sequential(fragments, count: operations)
            let (p50, p90, p99) = (median(durations), percentile(durations, 0.9), percentile(durations, 0.99))
            row("latency: \(name), p50 / p90 / p99", "\(f(p50)) / \(f(p90)) / \(f(p99)) ms", limit: "floor " + f(limit, 2) + " ms",
                ratio: ratio(p50, limit) + " (p99/p50 " + f(p99 / p50) + ")")
            figures["latency " + name] = ["p50": .double(p50), "p90": .double(p90), "p99": .double(p99), "floor": .double(limit)]
        }

        // fsyncs per operation: the agent's own count (every journal and outbox sync), logged when it
        // stops; a run without operations gives what start-up and shutdown cost.
        let count = min(operations, 200)
        let base = try await syncsOfOneRun(operations: 0)
        let loaded = try await syncsOfOneRun(operations: count)
        if let base, let loaded {
            let perOperation = Double(loaded - base) / Double(count)
            row("fsyncs per operation (\(count) sequential c8y_Message)", f(perOperation, 2), limit: "2", ratio: ratio(perOperation, 2))
            figures["fsyncsPerOperation"] = .double(perOperation)
        }
        try await startAgent()

        // Throughput, memory in a burst.
        guard let pid = agent?.pid else { return }
        ProcessFigures(pid: pid).resetPeak()
        let before = ProcessFigures(pid: pid).rssMiB
        let inProcess = try await burst(Self.message, count: size)
        let peak = ProcessFigures(pid: pid).peakMiB
        row("throughput: in-process burst of \(size), concurrency 4", f(inProcess, 0) + " ops/s", limit: f(capacity / 2, 0) + " ops/s (tenant)",
            ratio: ratio(inProcess, capacity / 2))
        row("memory: peak RSS in that burst", f(peak, 1) + " MiB", limit: "idle " + f(before, 1) + " + 4 MiB", ratio: signed(peak - before, 1) + " MiB")
        cpuRow("in-process", inProcess)
        let exec = try await burst(Self.shell, count: size)
        row("throughput: exec sh burst of \(size), concurrency 4", f(exec, 0) + " ops/s", limit: f(spawnParallel.perSecond, 0) + "/s (spawn)",
            ratio: ratio(exec, spawnParallel.perSecond))
        cpuRow("exec sh", exec)
        figures["burst"] = ["inProcess": .double(inProcess), "exec": .double(exec), "peakMiB": .double(peak), "beforeMiB": .double(before)]

        try await startAgent(concurrency: 32)
        let inProcessRaised = try await burst(Self.message, count: size)
        let execRaised = try await burst(Self.shell, count: size)
        row("throughput: in-process burst, concurrency 32", f(inProcessRaised, 0) + " ops/s", limit: f(capacity / 2, 0) + " ops/s",
            ratio: ratio(inProcessRaised, capacity / 2))
        row("throughput: exec sh burst, concurrency 32", f(execRaised, 0) + " ops/s", limit: f(spawnParallel.perSecond, 0) + "/s",
            ratio: ratio(execRaised, spawnParallel.perSecond))
        figures["burstRaised"] = ["inProcess": .double(inProcessRaised), "exec": .double(execRaised)]

        // A remote tenant.
        try await setLatency(latency)
        var remote: [String: JSONValue] = [:]
        for concurrency in [4, 8, 32] {
            try await startAgent(concurrency: concurrency)
            let throughput = try await burst(Self.message, count: size)
            // Each operation needs its notification and two status updates, one after the other.
            let limit = Double(min(concurrency, size)) / (3 * Double(latency) / 1000)
            row("throughput, +\(latency) ms per answer, concurrency \(concurrency)", f(throughput, 0) + " ops/s",
                limit: f(limit, 0) + " ops/s (c / 3 answers)", ratio: ratio(throughput, limit))
            remote["\(concurrency)"] = .double(throughput)
        }
        figures["remote"] = .object(remote)
        try await setLatency(0)

        // Memory growth: RSS after 1,000 and after `soak` operations; and after 4,000, when the
        // journal's window of 2,000 finished operations (a bound by design) has filled and been
        // compacted, so that growth past it is told apart from the window filling.
        try await startAgent()
        let windowFull = 4_000
        var after: [Int: (rss: Double, anonymous: Double)] = [:]
        var done = 0
        while done < soak {
            let count = min(size, soak - done)
            _ = try await burst(Self.message, count: count)
            done += count
            if [min(1000, soak), windowFull, soak].contains(done) {
                let figures = ProcessFigures(pid: agent?.pid ?? 0)
                after[done] = (figures.rssMiB, figures.anonymousMiB)
            }
        }
        let first = after[min(1000, soak)]?.rss ?? .nan
        let last = after[soak]?.rss ?? .nan
        row("memory: RSS after \(min(1000, soak)) / \(soak) operations", f(first, 1) + " / " + f(last, 1) + " MiB", limit: "growth 0",
            ratio: signed(last - first, 2) + " MiB")
        var soakFigures: [String: JSONValue] = ["operations": .int(Int64(soak)), "rssAfter1000MiB": .double(first), "rssAfterAllMiB": .double(last)]
        if soak > windowFull, let (full, fullAnonymous) = after[windowFull], let lastAnonymous = after[soak]?.anonymous {
            row("memory: RSS after \(windowFull) (journal window full) / \(soak) operations", f(full, 1) + " / " + f(last, 1) + " MiB",
                limit: "growth 0", ratio: signed(last - full, 2) + " MiB")
            // Anonymous memory is the agent's heap and stacks; the rest of RSS is mapped files
            // (libraries' pages touched for the first time count as growth too).
            row("memory: anonymous after \(windowFull) / \(soak) operations", f(fullAnonymous, 1) + " / " + f(lastAnonymous, 1) + " MiB",
                limit: "growth 0", ratio: signed(lastAnonymous - fullAnonymous, 2) + " MiB")
            soakFigures["rssAfterWindowFullMiB"] = .double(full)
            soakFigures["anonymousAfterWindowFullMiB"] = .double(fullAnonymous)
            soakFigures["anonymousAfterAllMiB"] = .double(lastAnonymous)
        }
        figures["soak"] = .object(soakFigures)

        row("start-up: median of \(startups.count - 1) starts of the registered device", f(median(Array(startups.dropFirst())), 1) + " ms")
        sizes(staticBinary: staticBinary)
        try save(output)
    }

    /// The floor of one operation's end-to-end time: a minimal agent in this process (the agent's HTTP
    /// client and Bayeux listener, no journal, no dispatch, no outbox) takes each operation as it
    /// arrives, appends and fsyncs a record, sends EXECUTING, appends and fsyncs again, sends
    /// SUCCESSFUL; measured like the agent's operations, on the sandbox's clock.
    func floorLatency(count: Int, sync directory: String) async throws -> [Double] {
        let floorDevice = try await client.createManagedObject(["name": "bench-floor", "c8y_IsDevice": [:]])["id"]?.idValue ?? ""
        let client = self.client
        let fd = open(directory + "/floor-journal", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        defer { Glibc.close(fd) }
        let record = Limits.record
        let listener = BayeuxListener(client: client, channel: "/" + floorDevice, logger: Logger(label: "floor", factory: { _ in SwiftLogNoOpLogHandler() }))
        let before = try await subscriptions().count
        let task = Task {
            await listener.run(onSubscribed: {}, onMessage: { item in
                guard case .operation(let operation) = item, let id = operation["id"]?.idValue else { return }
                _ = record.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                fsync(fd)
                _ = try? await client.send("PUT", "/devicecontrol/operations/" + id, body: ["status": "EXECUTING"], accept: "application/json")
                _ = record.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                fsync(fd)
                _ = try? await client.send("PUT", "/devicecontrol/operations/" + id, body: ["status": "SUCCESSFUL"], accept: "application/json")
            })
        }
        defer { task.cancel() }
        try await until("the minimal agent subscribed") { try await self.subscriptions().count > before }
        let device = self.device
        self.device = floorDevice
        defer { self.device = device }
        _ = try await sequential(Self.message, count: 20)
        return try await sequential(Self.message, count: count)
    }

    /// Idle: resident memory and its kinds, threads, descriptors, and wake-ups over `seconds`.
    func idleFigures(seconds: Int) throws -> JSONValue {
        guard let pid = agent?.pid else { return .null }
        let figures = ProcessFigures(pid: pid)
        let switchesBefore = figures.contextSwitches
        Thread.sleep(forTimeInterval: Double(seconds))
        let wakeups = Double(ProcessFigures.wakeups(from: switchesBefore, to: figures.contextSwitches)) / Double(seconds)
        row("idle: RSS / anonymous / PSS", "\(f(figures.rssMiB, 1)) / \(f(figures.anonymousMiB, 1)) / \(f(figures.pssMiB, 1)) MiB",
            limit: "RSS ≤ 16, anon ≤ 3 MiB")
        row("idle: threads / descriptors", "\(figures.threads) / \(figures.descriptors)")
        row("idle: wake-ups per second (context switches)", f(wakeups, 2), limit: "≤ 0.2 beyond the long-poll")
        return ["rssMiB": .double(figures.rssMiB), "anonymousMiB": .double(figures.anonymousMiB), "pssMiB": .double(figures.pssMiB),
                "threads": .int(Int64(figures.threads)), "descriptors": .int(Int64(figures.descriptors)), "wakeupsPerSecond": .double(wakeups)]
    }

    /// The libraries an agent needs whatever libcurl it has: the C library's parts, the C++ runtime the
    /// Swift runtime uses, OpenSSL, libcurl itself with zlib, libyaml and libmicrohttpd.
    static let ownLibraries = ["libc.so", "libm.so", "ld-linux", "libstdc++", "libgcc_s", "libcrypto", "libssl", "libcurl",
                               "libz.so", "libyaml", "libmicrohttpd", "linux-vdso", "[vdso]"]

    /// Idle memory of the static build (`--static-binary`), and what of it is the binary, what Debian's
    /// libcurl brings along (gnutls, krb5, ldap, ssh2, rtmp, …) that an OpenSSL-only build would not.
    func staticIdleFigures(binary: String) {
        guard let pid = agent?.pid else { return }
        let figures = ProcessFigures(pid: pid)
        let resident = figures.residentByMapping
        let name = String(binary.split(separator: "/").last ?? "")
        let own = resident[name] ?? 0
        let curlExtras = resident.filter { key, _ in
            !key.hasPrefix("[") && key != name && !Self.ownLibraries.contains { key.hasPrefix($0) }
        }.values.reduce(0, +)
        row("idle, static build: RSS / anonymous / PSS", "\(f(figures.rssMiB, 1)) / \(f(figures.anonymousMiB, 1)) / \(f(figures.pssMiB, 1)) MiB",
            limit: "RSS ≤ 16, anon ≤ 3 MiB", ratio: ratio(figures.rssMiB, 16))
        row("idle, static build: RSS of the binary / of libcurl's other dependencies", f(Double(own) / 1024, 1) + " / " + f(Double(curlExtras) / 1024, 1) + " MiB",
            limit: "without them: " + f(figures.rssMiB - Double(curlExtras) / 1024, 1) + " MiB")
        self.figures["idleStatic"] = ["rssMiB": .double(figures.rssMiB), "anonymousMiB": .double(figures.anonymousMiB), "pssMiB": .double(figures.pssMiB),
                                  "binaryMiB": .double(Double(own) / 1024), "curlDependenciesMiB": .double(Double(curlExtras) / 1024)]
    }

    /// Sequential inventory PUTs with the agent's HTTP client: the median round trip in ms.
    func putRoundTrip(count: Int) async throws -> Double {
        var durations: [Double] = []
        for index in 0..<count {
            let started = ContinuousClock.now
            try await client.updateManagedObject(id: device, fragments: ["bench_Counter": .int(Int64(index))])
            durations.append((ContinuousClock.now - started).inSeconds * 1000)
        }
        return median(durations)
    }

    /// PUTs per second the sandbox takes over `connections` parallel connections.
    func putCapacity(connections: Int, seconds: Int) async throws -> Double {
        let deadline = ContinuousClock.now + .seconds(seconds)
        let started = ContinuousClock.now
        let total = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<connections {
                group.addTask {
                    var done = 0
                    while ContinuousClock.now < deadline {
                        try await self.client.updateManagedObject(id: self.device, fragments: ["bench_Counter": .int(Int64(done))])
                        done += 1
                    }
                    return done
                }
            }
            return try await group.reduce(0, +)
        }
        return Double(total) / (ContinuousClock.now - started).inSeconds
    }

    /// Where a burst's CPU went, per operation: the agent's, the sandbox's and the bench's own (which
    /// creates the operations and waits for them). The machine's CPUs divided by the sum bound the
    /// rate any agent could reach here; without the agent's share, what a free agent would reach.
    func cpuRow(_ name: String, _ throughput: Double) {
        let (agentCPU, sandboxCPU, benchCPU) = lastBurstCPU
        let cpus = Double(ProcessInfo.processInfo.activeProcessorCount)
        let bound = cpus * 1000 / (agentCPU + sandboxCPU + benchCPU)
        let freeAgent = cpus * 1000 / (sandboxCPU + benchCPU)
        row("CPU per operation in that burst: agent / sandbox / bench", f(agentCPU, 3) + " / " + f(sandboxCPU, 3) + " / " + f(benchCPU, 3) + " ms",
            limit: "\(Int(cpus)) CPUs: ≤ " + f(bound, 0) + " ops/s; free agent ≤ " + f(freeAgent, 0),
            ratio: ratio(throughput, bound))
        figures["burstCPU " + name] = ["agentMs": .double(agentCPU), "sandboxMs": .double(sandboxCPU), "benchMs": .double(benchCPU),
                                       "boundOpsPerSecond": .double(bound), "freeAgentOpsPerSecond": .double(freeAgent)]
    }

    /// The fsyncs of one run of the agent (start, `operations` sequential c8y_Message, stop), from its last log line.
    func syncsOfOneRun(operations: Int) async throws -> Int? {
        try await startAgent()
        if operations > 0 { _ = try await sequential(Self.message, count: operations) }
        agent?.stop()
        let log = work + "/agent-\(startups.count - 1).log"
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        guard let line = text.split(separator: "\n").last(where: { $0.contains("stopped") && $0.contains("fsyncs=") }),
              let range = line.range(of: "fsyncs=") else { return nil }
        return Int(line[range.upperBound...].prefix { $0.isNumber })
    }

    /// Binary sizes, stripped, and the modules that take most of the dynamic build.
    func sizes(staticBinary: String?) {
        let binary = binaries + "/switchyard"
        let stripped = work + "/switchyard.stripped"
        try? FileManager.default.copyItem(atPath: binary, toPath: stripped)
        _ = capture(["/usr/bin/strip", stripped])
        let dynamicSize = fileSize(stripped)
        row("size: dynamic, stripped", f(dynamicSize / 1e6, 1) + " MB", limit: "static ≤ 12 MB")
        var sizes: [String: JSONValue] = ["dynamicStrippedBytes": .double(dynamicSize)]
        if let staticBinary {
            let copy = work + "/switchyard.static"
            try? FileManager.default.copyItem(atPath: staticBinary, toPath: copy)
            _ = capture(["/usr/bin/strip", copy])
            let staticSize = fileSize(copy)
            row("size: static, stripped", f(staticSize / 1e6, 1) + " MB", limit: "12 MB", ratio: ratio(staticSize / 1e6, 12))
            sizes["staticStrippedBytes"] = .double(staticSize)
        }
        let modules = Self.moduleSizes(capture(["/usr/bin/nm", "-S", "--size-sort", binary]))
        let top = modules.sorted { $0.value > $1.value }.prefix(8)
        row("size: largest modules in the dynamic build", top.map { "\($0.key) \(f(Double($0.value) / 1e6, 2))" }.joined(separator: ", ") + " MB")
        sizes["modules"] = .object(Dictionary(uniqueKeysWithValues: top.map { ($0.key, JSONValue.int(Int64($0.value))) }))
        figures["sizes"] = .object(sizes)
    }

    func fileSize(_ path: String) -> Double {
        ((try? FileManager.default.attributesOfItem(atPath: path)[.size]) as? NSNumber)?.doubleValue ?? .nan
    }

    /// Symbol bytes by Swift module (the name after `$s` in a mangled symbol), the rest as "C and other".
    static func moduleSizes(_ nm: String) -> [String: Int] {
        var sizes: [String: Int] = [:]
        for line in nm.split(separator: "\n") {
            let columns = line.split(separator: " ")
            guard columns.count >= 4, let size = Int(columns[1], radix: 16) else { continue }
            sizes[module(of: String(columns[3])), default: 0] += size
        }
        return sizes
    }

    static func module(of symbol: String) -> String {
        guard symbol.hasPrefix("$s") else { return "C and other" }
        let digits = symbol.dropFirst(2).prefix { $0.isNumber }
        guard let length = Int(digits), length > 0 else { return "Swift (standard library)" }
        let name = symbol.dropFirst(2 + digits.count).prefix(length)
        return name.count == length ? String(name) : "other Swift"
    }

    // MARK: One core

    /// The agent pinned to CPU 0: c8y_Message latency idle, then while a firmware image is
    /// downloaded, hashed and fsynced; p99 loaded within 3× idle p99 is the target.
    func oneCore(imageMiB: Int, output: String) async throws {
        let installer = work + "/installer"
        try "#!/bin/sh\ncase \"$1\" in needs-reboot) exit 1;; *) exit 0;; esac\n".write(toFile: installer, atomically: true, encoding: .utf8)
        chmod(installer, 0o755)
        try declare("message.yaml", "operation: c8y_Message\nswift: Message\nconcurrency: 64\n")
        try declare("firmware.yaml", """
            operation: c8y_Firmware
            swift: Firmware
            resumable: true
            timeout: 2h
            options:
              installer: [\(installer)]
              maxImageBytes: \(Int64(imageMiB + 1) << 20)

            """)
        say("one core: image of \(imageMiB) MiB")
        var image = [UInt8](repeating: 0, count: imageMiB << 20)
        for index in stride(from: 0, to: image.count, by: 4096) { image[index] = UInt8(truncatingIfNeeded: index >> 12) }
        let imageFile = work + "/image"
        try Data(image).write(to: URL(fileURLWithPath: imageFile))
        let digest = capture(["/usr/bin/sha256sum", imageFile]).split(separator: " ").first.map(String.init) ?? ""
        let uploaded = try await transport.send(HTTPRequest(method: "PUT", url: url + "/sandbox/binaries", body: image, timeout: .seconds(300)))
        image = []
        guard let path = (try JSONValue.parse(uploaded.body))["path"]?.stringValue else { throw ValidationError("upload failed") }

        try await startAgent(pinned: true)
        _ = try await sequential(Self.message, count: 20)
        let idle = try await sequential(Self.message, count: 300)
        let firmware = try await create(["c8y_Firmware": ["name": "bench", "version": "1", "url": .string(url + path), "sha256": .string(digest)]])
        var loaded: [Double] = []
        var ended = false
        while !ended {
            loaded += try await sequential(Self.message, count: 10)
            let status = (try? await span(firmware))?.status ?? ""
            ended = status == "SUCCESSFUL" || status == "FAILED"
        }
        let firmwareSpan = try await span(firmware)
        say(Self.format("figure", "value", "limit", "ratio"))
        row("one core: firmware \(imageMiB) MiB (download, SHA-256, fsync)", firmwareSpan.status + " in " + f(Double(firmwareSpan.ended - firmwareSpan.created) / 1e9, 1) + " s")
        row("one core: c8y_Message idle p50 / p99 (\(idle.count))", "\(f(median(idle))) / \(f(percentile(idle, 0.99))) ms")
        row("one core: c8y_Message during the firmware p50 / p99 (\(loaded.count))", "\(f(median(loaded))) / \(f(percentile(loaded, 0.99))) ms",
            limit: "3 × idle p99 = " + f(3 * percentile(idle, 0.99)) + " ms", ratio: ratio(percentile(loaded, 0.99), percentile(idle, 0.99)))
        // The disk's own figure: one append+fsync idle and while an image is written as the agent writes it.
        let probe = (try? JSONValue.parse(capture(["/usr/bin/taskset", "-c", "0", CommandLine.arguments[0], "--fsync-probe", work,
                                                   "--image-mib", "\(imageMiB)"]))) ?? .null
        let fsyncIdle = (probe["idle"]?.arrayValue ?? []).compactMap(\.doubleValue).sorted()
        let fsyncLoaded = (probe["loaded"]?.arrayValue ?? []).compactMap(\.doubleValue).sorted()
        if !fsyncIdle.isEmpty, !fsyncLoaded.isEmpty {
            row("one core, the disk: append+fsync idle p50 / p99 (\(fsyncIdle.count))",
                "\(f(median(fsyncIdle))) / \(f(percentile(fsyncIdle, 0.99))) ms")
            row("one core, the disk: append+fsync while an image is written p50 / p99 (\(fsyncLoaded.count))",
                "\(f(median(fsyncLoaded))) / \(f(percentile(fsyncLoaded, 0.99))) ms",
                ratio: ratio(percentile(fsyncLoaded, 0.99), percentile(fsyncIdle, 0.99)))
            figures["oneCoreDisk"] = ["idleP99": .double(percentile(fsyncIdle, 0.99)), "loadedP99": .double(percentile(fsyncLoaded, 0.99))]
        }
        let target = 3 * percentile(idle, 0.99)
        row("one core: during the firmware p90 / max, and how many over 3 × idle p99",
            "\(f(percentile(loaded, 0.9))) / \(f(loaded.max() ?? 0)) ms, \(loaded.filter { $0 > target }.count) of \(loaded.count)")
        figures["oneCore"] = ["imageMiB": .int(Int64(imageMiB)), "firmwareStatus": .string(firmwareSpan.status),
                              "idleP50": .double(median(idle)), "idleP99": .double(percentile(idle, 0.99)),
                              "loadedP50": .double(median(loaded)), "loadedP99": .double(percentile(loaded, 0.99)),
                              "loadedCount": .int(Int64(loaded.count))]
        try save(output)
    }
}
