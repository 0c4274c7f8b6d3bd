import ArgumentParser
import Cumulocity
import Foundation
import JSONSupport

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
        print("switchyard-bench: \(ProcessInfo.processInfo.activeProcessorCount) CPUs; \(operations) sequential operations per latency figure, bursts of \(size)\n")
        print(String(format: "%-58@ %-22@ %-26@ %@", "figure", "value", "limit", "ratio"))

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
        let floor = 3 * roundTrip + 2 * sync
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

        // fsyncs per operation, counted by strace on the running agent.
        if let strace = which("strace"), let pid = agent?.pid {
            let count = min(operations, 200)
            let syncs = try await countSyncs(strace: strace, pid: pid, count: count)
            row("fsyncs per operation (strace, \(count) sequential)", syncs.map { f($0, 2) } ?? "n/a", limit: "2")
            if let syncs { figures["fsyncsPerOperation"] = .double(syncs) }
        }

        // Throughput, memory in a burst.
        guard let pid = agent?.pid else { return }
        ProcessFigures(pid: pid).resetPeak()
        let before = ProcessFigures(pid: pid).rssMiB
        let inProcess = try await burst(Self.message, count: size)
        let peak = ProcessFigures(pid: pid).peakMiB
        row("throughput: in-process burst of \(size), concurrency 4", f(inProcess, 0) + " ops/s", limit: f(capacity / 2, 0) + " ops/s (tenant)",
            ratio: ratio(inProcess, capacity / 2))
        row("memory: peak RSS in that burst", f(peak, 1) + " MiB", limit: "idle " + f(before, 1) + " + 4 MiB", ratio: "+" + f(peak - before, 1) + " MiB")
        let exec = try await burst(Self.shell, count: size)
        row("throughput: exec sh burst of \(size), concurrency 4", f(exec, 0) + " ops/s", limit: f(spawnParallel.perSecond, 0) + "/s (spawn)",
            ratio: ratio(exec, spawnParallel.perSecond))
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

        // Memory growth: RSS after 1,000 and after `soak` operations.
        try await startAgent()
        var rssAfter: [Int: Double] = [:]
        var done = 0
        while done < soak {
            let count = min(size, soak - done)
            _ = try await burst(Self.message, count: count)
            done += count
            if done == min(1000, soak) || done == soak { rssAfter[done] = ProcessFigures(pid: agent?.pid ?? 0).rssMiB }
        }
        let first = rssAfter[min(1000, soak)] ?? .nan
        let last = rssAfter[soak] ?? .nan
        row("memory: RSS after \(min(1000, soak)) / \(soak) operations", f(first, 1) + " / " + f(last, 1) + " MiB", limit: "growth 0",
            ratio: "+" + f(last - first, 2) + " MiB")
        figures["soak"] = ["operations": .int(Int64(soak)), "rssAfter1000MiB": .double(first), "rssAfterAllMiB": .double(last)]

        row("start-up: median of \(startups.count - 1) starts of the registered device", f(median(Array(startups.dropFirst())), 1) + " ms")
        sizes(staticBinary: staticBinary)
        try save(output)
    }

    /// Idle: resident memory and its kinds, threads, descriptors, and wake-ups over `seconds`.
    func idleFigures(seconds: Int) throws -> JSONValue {
        guard let pid = agent?.pid else { return .null }
        let figures = ProcessFigures(pid: pid)
        let switchesBefore = figures.contextSwitches
        Thread.sleep(forTimeInterval: Double(seconds))
        let wakeups = Double(figures.contextSwitches - switchesBefore) / Double(seconds)
        row("idle: RSS / anonymous / PSS", "\(f(figures.rssMiB, 1)) / \(f(figures.anonymousMiB, 1)) / \(f(figures.pssMiB, 1)) MiB",
            limit: "RSS ≤ 16, anon ≤ 3 MiB")
        row("idle: threads / descriptors", "\(figures.threads) / \(figures.descriptors)")
        row("idle: wake-ups per second (context switches)", f(wakeups, 2), limit: "≤ 0.2 beyond the long-poll")
        return ["rssMiB": .double(figures.rssMiB), "anonymousMiB": .double(figures.anonymousMiB), "pssMiB": .double(figures.pssMiB),
                "threads": .int(Int64(figures.threads)), "descriptors": .int(Int64(figures.descriptors)), "wakeupsPerSecond": .double(wakeups)]
    }

    /// Sequential inventory PUTs with the agent's HTTP client: the median round trip in ms.
    func putRoundTrip(count: Int) async throws -> Double {
        var durations: [Double] = []
        for index in 0..<count {
            let started = ContinuousClock.now
            try await client.updateManagedObject(id: device, fragments: ["bench_Counter": .int(Int64(index))])
            durations.append(Double((ContinuousClock.now - started).components.attoseconds) / 1e15
                             + Double((ContinuousClock.now - started).components.seconds) * 1000)
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
        let elapsed = ContinuousClock.now - started
        return Double(total) / (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
    }

    /// fsyncs and fdatasyncs of the agent while `count` c8y_Message operations run one after the other.
    func countSyncs(strace: String, pid: pid_t, count: Int) async throws -> Double? {
        let log = work + "/strace.txt"
        let tracer = try Child("strace", [strace, "-f", "-qq", "-c", "-e", "trace=fsync,fdatasync,sync_file_range", "-o", log, "-p", "\(pid)"],
                               log: work + "/strace.log")
        try await Task.sleep(for: .milliseconds(500))  // attached to every thread
        _ = try await sequential(Self.message, count: count)
        kill(tracer.pid, SIGINT)
        tracer.process.waitUntilExit()
        guard let text = try? String(contentsOfFile: log, encoding: .utf8) else { return nil }
        var calls = 0
        for line in text.split(separator: "\n") {
            let columns = line.split(separator: " ", omittingEmptySubsequences: true)
            guard let name = columns.last, ["fsync", "fdatasync", "sync_file_range"].contains(String(name)), columns.count >= 5 else { continue }
            calls += Int(columns[3]) ?? 0
        }
        return Double(calls) / Double(count)
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
        print("one core: image of \(imageMiB) MiB")
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
        print(String(format: "%-58@ %-22@ %-26@ %@", "figure", "value", "limit", "ratio"))
        row("one core: firmware \(imageMiB) MiB (download, SHA-256, fsync)", firmwareSpan.status + " in " + f(Double(firmwareSpan.ended - firmwareSpan.created) / 1e9, 1) + " s")
        row("one core: c8y_Message idle p50 / p99 (\(idle.count))", "\(f(median(idle))) / \(f(percentile(idle, 0.99))) ms")
        row("one core: c8y_Message during the firmware p50 / p99 (\(loaded.count))", "\(f(median(loaded))) / \(f(percentile(loaded, 0.99))) ms",
            limit: "3 × idle p99 = " + f(3 * percentile(idle, 0.99)) + " ms", ratio: ratio(percentile(loaded, 0.99), percentile(idle, 0.99)))
        figures["oneCore"] = ["imageMiB": .int(Int64(imageMiB)), "firmwareStatus": .string(firmwareSpan.status),
                              "idleP50": .double(median(idle)), "idleP99": .double(percentile(idle, 0.99)),
                              "loadedP50": .double(median(loaded)), "loadedP99": .double(percentile(loaded, 0.99)),
                              "loadedCount": .int(Int64(loaded.count))]
        try save(output)
    }
}
