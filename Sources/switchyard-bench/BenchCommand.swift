import ArgumentParser
import Cumulocity
import Foundation
import JSONSupport

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The agent measured against the physical limits of the machine it runs on (docs/performance.md).
///
/// Starts the release sandbox and the release agent as separate processes, drives operations through
/// them, reads every duration off the sandbox's own clock (an operation's creation to its final
/// status arriving), and measures in the same run what the machine allows: process spawns, the
/// loopback round trip of a PUT with the agent's HTTP client, the sandbox's PUT capacity, an append
/// and fsync. Prints a table of figures and their ratio to the limit, and writes them as JSON.
@main
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchyard-bench",
        abstract: "Measure the agent (latency, throughput, memory, start-up, fsyncs, size) against this machine's limits.",
        discussion: """
            Build first: swift build -c release --product switchyard --product switchyard-sandbox \
            (packaging/dev bench does it all). --one-core runs the one-core benchmark instead: the agent \
            pinned to CPU 0 while a firmware image is downloaded, hashed and fsynced, c8y_Message latency \
            against its idle figure.
            """)

    @Option(help: "Sequential operations per latency figure.") var operations = 1000
    @Option(help: "Operations in a burst.") var burst = 200
    @Option(help: "Operations in the memory-growth run.") var soak = 10_000
    @Option(help: "Milliseconds the sandbox adds to every answer for the remote-tenant figures.") var latency = 50
    @Option(help: "Where the figures go as JSON.") var output = "switchyard-bench.json"
    @Option(help: "The directory with switchyard and switchyard-sandbox (default: this program's).") var binaries: String?
    @Option(help: "A statically linked switchyard to measure the size of (packaging/deb builds one).") var staticBinary: String?
    @Flag(help: "Run the one-core firmware benchmark instead.") var oneCore = false
    @Option(name: .customLong("image-mib"), help: "Image size for --one-core, in MiB.") var imageMiB = 1024
    @Option(help: .hidden) var fsyncProbe: String?

    func run() async throws {
        if let fsyncProbe {  // the one-core run's physical limit, in a process pinned to CPU 0
            let (idle, loaded) = FsyncProbe.run(imageMiB: imageMiB, directory: fsyncProbe)
            print(JSONValue.object(["idle": .array(idle.map(JSONValue.double)), "loaded": .array(loaded.map(JSONValue.double))]).encodedString())
            return
        }
        let directory = binaries ?? URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent().path
        if oneCore {
            // The agent alone on CPU 0: the bench and the sandbox keep to CPU 1.
            guard ProcessInfo.processInfo.activeProcessorCount >= 2 else { throw ValidationError("--one-core needs two CPUs") }
            if ProcessInfo.processInfo.environment["SWITCHYARD_BENCH_PINNED"] == nil { pinToCPU(1) }
        }
        let bench = try await Bench(binaries: directory, sandboxCPU: oneCore ? 1 : nil)
        defer { bench.close() }
        if oneCore {
            try await bench.oneCore(imageMiB: imageMiB, output: output)
        } else {
            try await bench.all(operations: operations, burst: burst, soak: soak, latency: latency,
                                staticBinary: staticBinary, output: output)
        }
    }
}

/// One run: a work directory, the sandbox, the agent, and the figures gathered.
final class Bench: @unchecked Sendable {
    let binaries: String
    let work: String
    let url: String
    let transport: CurlTransport
    let client: PlatformClient
    var sandbox: Child?
    var agent: Child?
    /// CPU milliseconds per operation of the agent, the sandbox and the bench in the last ``burst(_:count:)``
    /// (creating the operations and waiting for their ends included).
    var lastBurstCPU: (agent: Double, sandbox: Double, bench: Double) = (.nan, .nan, .nan)
    var device = ""
    var figures: [String: JSONValue] = [:]
    var rows: [(String, String, String, String)] = []
    var startups: [Double] = []

    init(binaries: String, sandboxCPU: Int? = nil) async throws {
        self.binaries = binaries
        for program in ["switchyard", "switchyard-sandbox"] where access(binaries + "/" + program, X_OK) != 0 {
            throw ValidationError("\(binaries)/\(program) is missing: swift build -c release --product \(program)")
        }
        work = NSTemporaryDirectory() + "switchyard-bench-\(getpid())"
        try FileManager.default.createDirectory(atPath: work + "/handlers", withIntermediateDirectories: true)
        let port = 20_000 + Int.random(in: 0..<20_000)
        url = "http://127.0.0.1:\(port)"
        transport = try CurlTransport()
        client = PlatformClient(baseURL: url, transport: transport,
                                credentials: BasicCredentials(tenant: "t100", username: "device", password: "device-secret"))
        let pin = sandboxCPU.map { ["/usr/bin/taskset", "-c", "\($0)"] } ?? []
        sandbox = try Child("sandbox", pin + [binaries + "/switchyard-sandbox", "serve", "--port", "\(port)", "--mtls-port", "0"],
                            log: work + "/sandbox.log")
        try await until("the sandbox answers") { (try? await self.transport.send(HTTPRequest(method: "GET", url: self.url + "/"))) != nil }
    }

    func close() {
        agent?.stop()
        sandbox?.stop()
        transport.shutdown()
        try? FileManager.default.removeItem(atPath: work)
    }

    // MARK: The agent

    /// Starts the agent (registered after the first start) and waits until it is subscribed; the
    /// time from its exec to its subscription, in ms.
    @discardableResult
    func startAgent(concurrency: Int = 4, pinned: Bool = false, binary: String? = nil) async throws -> Double {
        agent?.stop()
        let before = try await subscriptions().count
        let environment = [
            "SWITCHYARD_C8Y_URL": url, "SWITCHYARD_DEVICE_EXTERNAL_ID": "bench-gw", "SWITCHYARD_AUTH_TENANT": "t100",
            "SWITCHYARD_AUTH_USERNAME": "device", "SWITCHYARD_AUTH_PASSWORD": "device-secret",
            "SWITCHYARD_HANDLERS": work + "/handlers", "SWITCHYARD_STATE_DIR": work + "/state", "SWITCHYARD_PROXY_PORT": "0",
            "SWITCHYARD_OPERATIONS_CONCURRENCY": "\(concurrency)", "SWITCHYARD_LOG_LEVEL": "notice",
        ]
        let argv = (pinned ? ["/usr/bin/taskset", "-c", "0"] : []) + [binary ?? binaries + "/switchyard", "run"]
        let started = wallClock()
        agent = try Child("agent", argv, environment: environment, log: work + "/agent-\(startups.count).log")
        try await until("the agent subscribed", seconds: 60) { try await self.subscriptions().count > before }
        let subscribed = try await subscriptions().last ?? 0
        if device.isEmpty {
            device = try await client.managedObjectID(externalIdType: "c8y_Serial", externalId: "bench-gw") ?? ""
        }
        let milliseconds = Double(subscribed - started) / 1e6
        startups.append(milliseconds)
        return milliseconds
    }

    func declare(_ name: String, _ yaml: String) throws {
        try yaml.write(toFile: work + "/handlers/" + name, atomically: true, encoding: .utf8)
    }

    // MARK: The sandbox

    func subscriptions() async throws -> [Int64] {
        let response = try await transport.send(HTTPRequest(method: "GET", url: url + "/sandbox/subscriptions"))
        return (try JSONValue.parse(response.body)).arrayValue?.compactMap(\.intValue) ?? []
    }

    func create(_ fragments: JSONValue) async throws -> String {
        let created = try await client.createOperation(fragments.merging(["deviceId": .string(device)]))
        guard let id = created["id"]?.idValue else { throw ValidationError("the sandbox created an operation without id") }
        return id
    }

    func waitForEnd(_ id: String) async throws {
        let response = try await transport.send(HTTPRequest(method: "GET", url: url + "/sandbox/operations/\(id)/end?timeout=300",
                                                            timeout: .seconds(310)))
        guard (try? JSONValue.parse(response.body))?["ended"]?.boolValue == true else {
            throw ValidationError("operation \(id) did not end within 300 s (see \(work)/agent-*.log)")
        }
    }

    /// The operation's creation and final-status times (wall clock, ns) as the sandbox saw them.
    func span(_ id: String) async throws -> (created: Int64, ended: Int64, status: String) {
        let response = try await transport.send(HTTPRequest(method: "GET", url: url + "/sandbox/operations/\(id)/timeline"))
        let statuses = (try JSONValue.parse(response.body))["statuses"]?.arrayValue ?? []
        guard let first = statuses.first?["at"]?.intValue, let last = statuses.last, let ended = last["at"]?.intValue else {
            throw ValidationError("no timeline for operation \(id)")
        }
        return (first, ended, last["status"]?.stringValue ?? "")
    }

    func setLatency(_ milliseconds: Int) async throws {
        _ = try await transport.send(HTTPRequest(method: "POST", url: url + "/sandbox/latency",
                                                 headers: [("Content-Type", "application/json")],
                                                 body: JSONValue.object(["milliseconds": .int(Int64(milliseconds))]).encoded()))
    }

    // MARK: Runs

    /// `count` operations one after the other: end-to-end durations in ms.
    func sequential(_ fragments: JSONValue, count: Int) async throws -> [Double] {
        var ids: [String] = []
        for _ in 0..<count {
            let id = try await create(fragments)
            try await waitForEnd(id)
            ids.append(id)
        }
        var durations: [Double] = []
        for id in ids {
            let span = try await span(id)
            guard span.status == "SUCCESSFUL" else { throw ValidationError("operation \(id) ended \(span.status)") }
            durations.append(Double(span.ended - span.created) / 1e6)
        }
        return durations
    }

    /// `count` operations created at once (8 creators): operations per second from the first creation to the last end.
    func burst(_ fragments: JSONValue, count: Int) async throws -> Double {
        let processes = [agent?.pid, sandbox?.pid, getpid()].map { $0.map(ProcessFigures.init(pid:)) }
        let cpuBefore = processes.map { $0?.cpuSeconds ?? .nan }
        let ids = try await withThrowingTaskGroup(of: [String].self) { group in
            for creator in 0..<8 {
                group.addTask {
                    var mine: [String] = []
                    for _ in stride(from: creator, to: count, by: 8) { mine.append(try await self.create(fragments)) }
                    return mine
                }
            }
            var all: [String] = []
            for try await some in group { all += some }
            return all
        }
        for id in ids { try await waitForEnd(id) }
        let cpu = zip(processes, cpuBefore).map { process, before in ((process?.cpuSeconds ?? .nan) - before) * 1000 / Double(ids.count) }
        lastBurstCPU = (cpu[0], cpu[1], cpu[2])
        var first = Int64.max
        var last = Int64.min
        for id in ids {
            let span = try await span(id)
            first = min(first, span.created)
            last = max(last, span.ended)
        }
        return Double(ids.count) / (Double(last - first) / 1e9)
    }

    func row(_ figure: String, _ value: String, limit: String = "", ratio: String = "") {
        rows.append((figure, value, limit, ratio))
        say(Self.format(figure, value, limit, ratio))
    }

    static func format(_ figure: String, _ value: String, _ limit: String, _ ratio: String) -> String {
        func pad(_ text: String, _ width: Int) -> String { text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count) }
        return pad(figure, 62) + pad(value, 26) + pad(limit, 34) + ratio
    }

    func until(_ what: String, seconds: Double = 30, _ condition: @Sendable () async throws -> Bool) async throws {
        let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
        while ContinuousClock.now < deadline {
            if (try? await condition()) == true { return }
            try await Task.sleep(for: .milliseconds(2))
        }
        throw ValidationError("timed out waiting for \(what) (see \(work))")
    }

    func save(_ output: String) throws {
        figures["rows"] = .array(rows.map { ["figure": .string($0.0), "value": .string($0.1), "limit": .string($0.2), "ratio": .string($0.3)] })
        try Data(JSONValue.object(figures).encoded()).write(to: URL(fileURLWithPath: output))
        print("\nfigures written to \(output)")
    }
}

/// Runs this program again on one CPU (through taskset); returns only when that cannot be done.
func pinToCPU(_ cpu: Int) {
    setenv("SWITCHYARD_BENCH_PINNED", "\(cpu)", 1)
    let program = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
    let argv = ["/usr/bin/taskset", "-c", "\(cpu)", program] + CommandLine.arguments.dropFirst()
    let cArguments = argv.map { strdup($0) } + [nil]
    execv(argv[0], cArguments)
    say("cannot pin the bench to CPU \(cpu) (taskset); it shares the agent's CPU")
}


/// Prints a line at once (also into a pipe, where `print` would wait for a full buffer).
func say(_ line: String) { FileHandle.standardOutput.write(Data((line + "\n").utf8)) }

func f(_ value: Double, _ digits: Int = 2) -> String { String(format: "%.\(digits)f", value) }
/// A difference with its sign ("+0.88", "-1.81").
func signed(_ value: Double, _ digits: Int = 2) -> String { (value >= 0 ? "+" : "") + f(value, digits) }
func ratio(_ value: Double, _ limit: Double) -> String { limit > 0 && value.isFinite ? f(value / limit, 2) + "×" : "" }
