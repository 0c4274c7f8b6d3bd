import Cumulocity
import Foundation
import HandlerKit
import JSONSupport
import Logging
import Sandbox
import Testing
@testable import Switchyard

/// What an operator sees: log lines, configuration checks, exit codes, systemd's notify protocol.
@Suite(.closesHarnesses)
struct LogFormatTests {
    let metadata: Logger.Metadata = ["error": "Traceback (most recent call last):\n  File \"x.py\"\nValueError: bad", "retryIn": "1.7 s"]

    @Test func textKeepsOneEventOnOneLine() {
        let line = AgentLogHandler.render(format: .text, timestamp: "2026-12-01T10:00:00.000Z", level: .error, label: "switchyard",
                                          message: "operation failed\nbadly", metadata: metadata)
        #expect(line.hasSuffix("\n"))
        #expect(line.dropLast().contains("\n") == false)
        #expect(line.hasPrefix("2026-12-01T10:00:00.000Z error operation failed\\nbadly "))
        #expect(line.contains(#"error="Traceback (most recent call last):\n  File \"x.py\"\nValueError: bad""#))
        #expect(line.contains(#"retryIn="1.7 s""#))
    }

    @Test func journalLinesStartWithTheSyslogPriority() {
        let levels: [(Logger.Level, String)] = [(.trace, "<7>"), (.debug, "<7>"), (.info, "<6>"), (.notice, "<5>"),
                                                (.warning, "<4>"), (.error, "<3>"), (.critical, "<2>")]
        for (level, prefix) in levels {
            let line = AgentLogHandler.render(format: .journal, timestamp: "t", level: level, label: "switchyard", message: "m", metadata: [:])
            #expect(line == prefix + "m\n")
        }
    }

    @Test func aJSONLineIsOneObjectEvenForAMessageOfTwoLines() throws {
        let line = AgentLogHandler.render(format: .json, timestamp: "2026-12-01T10:00:00.000Z", level: .warning, label: "switchyard",
                                          message: "two\nlines", metadata: metadata)
        #expect(line.dropLast().contains("\n") == false)
        let object = try JSONValue.parse(String(line.dropLast()))
        #expect(object["timestamp"]?.stringValue == "2026-12-01T10:00:00.000Z")
        #expect(object["level"]?.stringValue == "warning")
        #expect(object["message"]?.stringValue == "two\nlines")
        #expect(object["metadata"]?["error"]?.stringValue?.hasSuffix("ValueError: bad") == true)
    }

    @Test func controlCharactersAreEscaped() {
        #expect(AgentLogHandler.escaped("a\tb\r\u{1B}[31m\\") == "a\\tb\\r\\u{1B}[31m\\\\")
        #expect(AgentLogHandler.escaped("plain") == "plain")
    }

    @Test func valuesWithSpacesQuotesOrEqualsAreQuoted() {
        #expect(AgentLogHandler.quotedIfNeeded("plain") == "plain")
        #expect(AgentLogHandler.quotedIfNeeded("") == "\"\"")
        #expect(AgentLogHandler.quotedIfNeeded("0.8 ms") == "\"0.8 ms\"")
        #expect(AgentLogHandler.quotedIfNeeded("a=b") == "\"a=b\"")
        #expect(AgentLogHandler.quotedIfNeeded("say \"hi\" ünïcode") == "\"say \\\"hi\\\" ünïcode\"")
    }

    /// The agent's timestamps (log lines, events, alarms) are written without the formatter, exactly as it writes them.
    @Test func timestampsAreWhatTheISO8601FormatterWrites() {
        let style = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
        var generator = SystemRandomNumberGenerator()
        var instants: [(Int64, Int)] = [(0, 0), (-1, 999_999_999), (951_782_400, 999_999_999), (4_107_542_399, 500_000_000),
                                        (1_796_083_200, 1_000_000), (253_402_300_799, 999_000_000), (-12_212_553_600, 0)]
        for _ in 0..<20_000 {
            instants.append((Int64.random(in: -2_208_988_800...4_102_444_800, using: &generator), Int.random(in: 0..<1_000_000_000, using: &generator)))
        }
        for (seconds, nanoseconds) in instants {
            // Half a millisecond in: the formatter reads a Date's Double, which is off by a few
            // nanoseconds far from 2001 (and its calendar is Julian before 1582, out of range here).
            let milliseconds = nanoseconds / 1_000_000
            let date = Date(timeIntervalSince1970: Double(seconds) + (Double(milliseconds) + 0.5) / 1e3)
            #expect(platformTimestamp(seconds: seconds, nanoseconds: nanoseconds) == date.formatted(style), "\(seconds).\(nanoseconds)")
        }
        #expect(platformTimestamp(seconds: 1_796_126_400, nanoseconds: 123_456_789) == "2026-12-01T12:00:00.123Z")
    }

    @Test func durationsReadAsPeopleWriteThem() {
        #expect(Duration.seconds(0.8922420342577627).readable == "892 ms")
        #expect(Duration.milliseconds(1_734).readable == "1.7 s")
        #expect(Duration.seconds(12.4).readable == "12 s")
        #expect(Duration.seconds(300).readable == "5 min")
        #expect(Duration.seconds(30 * 86_400).readable == "30 d")
        #expect(Duration.microseconds(250).readable == "250 µs")
        #expect(Duration.zero.readable == "0 s")
    }

    @Test func journalFormatIsChosenWhenStandardErrorIsJournaldsStream() {
        var info = stat()
        #expect(fstat(2, &info) == 0)
        let matching = ["JOURNAL_STREAM": "\(info.st_dev):\(info.st_ino)"]
        #expect(LogSettings().resolvedFormat(environment: matching) == .journal)
        #expect(LogSettings().resolvedFormat(environment: ["JOURNAL_STREAM": "\(info.st_dev):\(info.st_ino + 1)"]) == .text)
        #expect(LogSettings().resolvedFormat(environment: [:]) == .text)
        #expect(LogSettings(format: .json).resolvedFormat(environment: matching) == .json)
    }
}

@Suite(.closesHarnesses)
struct OperatorConfigurationTests {
    let required: [String: String] = [
        "SWITCHYARD_C8Y_URL": "https://acme.example.com", "SWITCHYARD_DEVICE_EXTERNAL_ID": "gw-1",
        "SWITCHYARD_AUTH_USERNAME": "device", "SWITCHYARD_AUTH_PASSWORD": "s3cret-pw",
    ]

    @Test func aMisspeltVariableStopsTheAgentNamingIt() {
        var environment = required
        environment["SWITCHYARD_AUTH_PASWORD"] = "x"
        #expect {
            try AgentConfiguration.load(file: nil, environment: environment)
        } throws: { error in
            "\(error)".contains("unknown variable SWITCHYARD_AUTH_PASWORD (did you mean SWITCHYARD_AUTH_PASSWORD?)")
        }
        // The variables the agent gives its plugins are not mistakes (a plugin may run `switchyard token`).
        environment["SWITCHYARD_AUTH_PASWORD"] = nil
        environment["SWITCHYARD_OPERATION_ID"] = "42"
        environment["SWITCHYARD_PROXY_SECRET"] = "x"
        #expect(throws: Never.self) { try AgentConfiguration.load(file: nil, environment: environment) }
    }

    @Test func logLevelAndFormatComeFromTheFileOrTheVariables() throws {
        let dir = temporaryDirectory()
        defer { FileSystem.removeTree(dir) }
        write("log:\n  level: debug\n  format: json\n", to: dir + "/switchyard.yaml")
        let configuration = try AgentConfiguration.load(file: dir + "/switchyard.yaml", environment: required)
        #expect(configuration.log == LogSettings(level: .debug, format: .json))
        var environment = required
        environment["SWITCHYARD_LOG_LEVEL"] = "warning"
        environment["SWITCHYARD_LOG_FORMAT"] = "journal"
        #expect(try AgentConfiguration.load(file: dir + "/switchyard.yaml", environment: environment).log
                == LogSettings(level: .warning, format: .journal))
        environment["SWITCHYARD_LOG_LEVEL"] = "loud"
        environment["SWITCHYARD_LOG_FORMAT"] = "xml"
        #expect {
            try AgentConfiguration.load(file: dir + "/switchyard.yaml", environment: environment)
        } throws: { error in
            "\(error)".contains("SWITCHYARD_LOG_LEVEL: log.level must be one of trace, debug, info, notice, warning, error, critical, found 'loud'")
                && "\(error)".contains("SWITCHYARD_LOG_FORMAT: log.format must be text, json or journal, found 'xml'")
        }
    }

    @Test func theFileComesFromTheOptionThenTheVariable() {
        #expect(AgentConfiguration.file(option: "/a.yaml", environment: ["SWITCHYARD_CONFIG": "/b.yaml"]) == "/a.yaml")
        #expect(AgentConfiguration.file(option: nil, environment: ["SWITCHYARD_CONFIG": "/b.yaml"]) == "/b.yaml")
        let fallback = FileSystem.exists(AgentConfiguration.defaultFile) ? AgentConfiguration.defaultFile : nil
        #expect(AgentConfiguration.file(option: nil, environment: [:]) == fallback)
    }

    @Test func inspectionShowsEachValueWithItsOriginAndMasksSecrets() throws {
        let dir = temporaryDirectory()
        defer { FileSystem.removeTree(dir) }
        write("c8y:\n  url: https://acme.example.com\nstateDir: state\n", to: dir + "/switchyard.yaml")
        var environment = required
        environment["SWITCHYARD_C8Y_URL"] = nil
        let inspection = AgentConfiguration.inspect(file: dir + "/switchyard.yaml", environment: environment)
        #expect(inspection.problems.isEmpty)
        let entries = Dictionary(uniqueKeysWithValues: inspection.entries.map { ($0.key, $0) })
        #expect(entries["c8y.url"] == .init(key: "c8y.url", value: "https://acme.example.com", origin: dir + "/switchyard.yaml:2"))
        #expect(entries["stateDir"] == .init(key: "stateDir", value: dir + "/state", origin: dir + "/switchyard.yaml:3"))
        #expect(entries["auth.password"] == .init(key: "auth.password", value: "********", origin: "SWITCHYARD_AUTH_PASSWORD"))
        #expect(entries["c8y.timeout"] == .init(key: "c8y.timeout", value: "30s", origin: "default"))
        #expect(entries["device.name"]?.origin == "-")
        #expect(!inspection.entries.contains { $0.value.contains("s3cret-pw") })
    }

    @Test func handlersDirectoryComesFromTheConfiguration() throws {
        let dir = temporaryDirectory()
        defer { FileSystem.removeTree(dir) }
        write("handlers: mine.d\n", to: dir + "/switchyard.yaml")
        #expect(try AgentConfiguration.handlersDirectory(file: dir + "/switchyard.yaml", environment: [:]) == dir + "/mine.d")
        #expect(try AgentConfiguration.handlersDirectory(file: dir + "/switchyard.yaml", environment: ["SWITCHYARD_HANDLERS": "/x.d"]) == "/x.d")
        #expect(try AgentConfiguration.handlersDirectory(file: nil, environment: [:]) == FileSystem.absolute("handlers.d"))
    }

    @Test func runtimeProblemsNameTheStateAndHandlersDirectories() throws {
        let dir = temporaryDirectory()
        defer { FileSystem.removeTree(dir) }
        write("x", to: dir + "/file")
        var configuration = try AgentConfiguration.load(file: nil, environment: required)
        configuration.stateDir = dir + "/file/state"
        configuration.handlers = dir + "/missing.d"
        let problems = configuration.runtimeProblems(handlerProblems: ["a.yaml:3: unknown key 'exce'"])
        #expect(problems == [
            "stateDir: \(dir)/file is not a directory",
            "handlers: \(dir)/missing.d is not a directory; no operation would be advertised",
            "handlers: a.yaml:3: unknown key 'exce'",
        ])
        configuration.stateDir = dir + "/new/state"
        configuration.handlers = dir
        #expect(configuration.runtimeProblems(handlerProblems: []).isEmpty)
    }
}

/// A datagram socket standing in for systemd's `$NOTIFY_SOCKET`.
final class NotifySocket: @unchecked Sendable {
    let path: String
    private let fd: Int32
    private(set) var received: [String] = []

    init() throws {
        path = "/tmp/sy-notify-\(getpid())-\(UUID().uuidString.prefix(8))"
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard fd >= 0, bound == 0 else { throw TimedOut(what: "binding \(path)") }
    }

    /// Every datagram that arrived so far, in order (non-blocking).
    func drain() -> [String] {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            guard count > 0 else { break }
            received.append(String(decoding: buffer[0..<count], as: UTF8.self))
        }
        return received
    }

    deinit {
        close(fd)
        unlink(path)
    }
}

@Suite(.closesHarnesses, .timeLimit(.minutes(2)))
struct SystemdNotifyTests {
    @Test func notificationsReachAPathSocket() throws {
        let socket = try NotifySocket()
        let notifier = try #require(SystemdNotifier.fromEnvironment(["NOTIFY_SOCKET": socket.path, "WATCHDOG_USEC": "2000000"]))
        #expect(notifier.watchdogInterval == .seconds(2))
        #expect(notifier.notify(["READY=1", "STATUS=two\nlines"]))
        #expect(socket.drain() == ["READY=1\nSTATUS=two lines"])
        // A watchdog meant for another process is not ours; no socket, no notifier.
        #expect(SystemdNotifier.fromEnvironment(["NOTIFY_SOCKET": socket.path, "WATCHDOG_USEC": "1", "WATCHDOG_PID": "1"])?.watchdogInterval == nil)
        #expect(SystemdNotifier.fromEnvironment([:]) == nil)
    }

    @Test func theWatchdogIsFedOnlyWhileEveryLoopKeepsItsDeadline() async throws {
        let socket = try NotifySocket()
        let logs = LogCapture()
        let liveness = Liveness()
        let probes = Counter()
        liveness.beat("listener", within: .seconds(60))
        let watchdog = Watchdog(notifier: SystemdNotifier(socketPath: socket.path), interval: .milliseconds(100), liveness: liveness,
                                probe: { await probes.increment() }, logger: logs.logger())
        let task = Task { await watchdog.run() }
        defer { task.cancel() }
        try await eventually("WATCHDOG=1 while healthy") { socket.drain().count >= 2 }

        liveness.beat("listener", within: .zero)   // its deadline passes: a stall
        try await eventually("the stall logged") { logs.contains("withholding the watchdog notification: stalled listener") }
        let (fed, probed) = (socket.drain().count, await probes.value)
        try await eventually("three more periods") { await probes.value >= probed + 3 }
        #expect(socket.drain().count == fed, "fed while a loop was stalled")

        liveness.beat("listener", within: .seconds(60))
        try await eventually("fed again") { socket.drain().count >= fed + 2 }
        #expect(logs.contains("watchdog notifications resumed"))
    }

    @Test func aStuckProbeStarvesTheWatchdog() async throws {
        let socket = try NotifySocket()
        let gate = Gate()
        let watchdog = Watchdog(notifier: SystemdNotifier(socketPath: socket.path), interval: .milliseconds(50), liveness: Liveness(),
                                probe: { await gate.wait() }, logger: Logger(label: "test"))
        let task = Task { await watchdog.run() }
        defer { task.cancel() }
        try await eventually("the probe is waited on") { await gate.waiters > 0 }
        #expect(socket.drain().isEmpty)
        await gate.open()
        try await eventually("fed once the probe answers") { !socket.drain().isEmpty }
    }
}

actor Counter {
    private(set) var value = 0
    func increment() { value += 1 }
}

/// Holds every `wait()` until `open()`.
actor Gate {
    private var isOpen = false
    private var continuations: [CheckedContinuation<Void, Never>] = []
    var waiters: Int { continuations.count }

    func wait() async {
        if isOpen { return }
        await withCheckedContinuation { continuations.append($0) }
    }

    func open() {
        isOpen = true
        for continuation in continuations { continuation.resume() }
        continuations = []
    }
}

/// The real binary, as an operator and systemd run it.
// One at a time: each test runs agents or real binaries, and the rest of the suite runs meanwhile.
@Suite(.closesHarnesses, .serialized, .timeLimit(.minutes(3)))
struct OperatorProcessTests {
    struct Result {
        let status: Int32
        let output: String
        let error: String
    }

    func switchyard(_ arguments: [String], environment: [String: String] = [:]) throws -> Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try switchyardBinary())
        process.arguments = arguments
        process.environment = ["PATH": "/usr/bin:/bin"].merging(environment) { $1 }
        let output = Pipe(), error = Pipe()
        process.standardOutput = output
        process.standardError = error
        try launch(process)
        let out = output.fileHandleForReading.readDataToEndOfFile()
        let err = error.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Result(status: process.terminationStatus, output: String(decoding: out, as: UTF8.self),
                      error: String(decoding: err, as: UTF8.self))
    }

    @Test func versionIsTheOneInVersionSwift() throws {
        let result = try switchyard(["--version"])
        #expect(result.status == 0)
        #expect(result.output == switchyardVersion + "\n")
    }

    @Test func exitCodesAreTheDocumentedOnes() throws {
        let dir = temporaryDirectory()
        defer { FileSystem.removeTree(dir) }
        // 2: a configuration that cannot be used (run and token), every problem named.
        let unusable = try switchyard(["run"], environment: ["SWITCHYARD_AUTH_PASWORD": "x"])
        #expect(unusable.status == 2)
        #expect(unusable.error.contains("missing c8y.url"))
        #expect(unusable.error.contains("unknown variable SWITCHYARD_AUTH_PASWORD"))
        #expect(try switchyard(["run", "--config", dir + "/missing.yaml"]).status == 2)
        // 64: wrong usage.
        #expect(try switchyard(["run", "--no-such-option"]).status == 64)
        // 1: rejected handler files; 0 when all are valid.
        write("operation: acme_X\nexce: {command: [/bin/true]}\n", to: dir + "/bad.d/x.yaml")
        write("operation: acme_Y\nexec: {command: [/bin/true]}\n", to: dir + "/good.d/y.yaml")
        #expect(try switchyard(["handlers", "validate", "--dir", dir + "/bad.d"]).status == 1)
        #expect(try switchyard(["handlers", "list", "--dir", dir + "/bad.d"]).status == 1)
        #expect(try switchyard(["handlers", "validate", "--dir", dir + "/good.d"]).status == 0)
        // Without --dir the configuration's `handlers` is used.
        write("handlers: good.d\n", to: dir + "/switchyard.yaml")
        let fromConfiguration = try switchyard(["handlers", "list"], environment: ["SWITCHYARD_CONFIG": dir + "/switchyard.yaml"])
        #expect(fromConfiguration.status == 0)
        #expect(fromConfiguration.output.contains("acme_Y"))
    }

    @Test func configCheckListsValuesOriginsAndEveryProblem() throws {
        let dir = temporaryDirectory()
        defer { FileSystem.removeTree(dir) }
        write("operation: acme_Y\nexec: {command: [/bin/true]}\n", to: dir + "/handlers.d/y.yaml")
        write("c8y:\n  url: https://acme.example.com\ndevice:\n  externalId: gw-1\nauth:\n  username: device\n  passwordFile: pw\n"
              + "stateDir: state\nhandlers: handlers.d\n", to: dir + "/switchyard.yaml")
        write("s3cret-pw\n", to: dir + "/pw", mode: 0o644)
        let open = try switchyard(["config", "check", "--config", dir + "/switchyard.yaml"])
        #expect(open.status == 1)
        #expect(open.output.contains("c8y.url"))
        #expect(open.output.contains(dir + "/switchyard.yaml:2"))
        #expect(open.error.contains("has mode 0644; it holds a secret"))

        chmod(dir + "/pw", 0o600)
        let usable = try switchyard(["config", "check", "--config", dir + "/switchyard.yaml"])
        #expect(usable.status == 0, "\(usable.error)")
        #expect(usable.output.contains("configuration is usable"))
        #expect(usable.output.contains("handlers: 1 declarations"))
        #expect(!usable.output.contains("s3cret-pw"))

        write("operation: acme_Z\nexce: {}\n", to: dir + "/handlers.d/z.yaml")
        let rejected = try switchyard(["config", "check", "--config", dir + "/switchyard.yaml"])
        #expect(rejected.status == 1)
        #expect(rejected.error.contains("z.yaml:2"))
    }

    @Test func jsonLogsAreOneObjectPerLine() async throws {
        let harness = try await Harness()
        defer { Task { await harness.close() } }
        let agent = try AgentProcess(harness, environment: ["SWITCHYARD_LOG_FORMAT": "json"])
        defer { agent.stop() }
        try await eventually("subscribed") { agent.log.contains("subscribed to operations") }
        await agent.stopAndWait()
        let lines = agent.log.split(separator: "\n")
        #expect(lines.count >= 3)
        for line in lines {
            let object = try JSONValue.parse(String(line))
            #expect(object["level"]?.stringValue != nil && object["message"]?.stringValue != nil && object["timestamp"]?.stringValue != nil)
        }
    }

    @Test func whileBootstrapWaitsTheStatusSaysSoAndReadyComesAfterAcceptance() async throws {
        let harness = try await Harness()
        defer { Task { await harness.close() } }
        let settings = harness.tenant.settings
        let socket = try NotifySocket()
        let agent = try AgentProcess(harness, environment: [
            "NOTIFY_SOCKET": socket.path, "SWITCHYARD_AUTH_MODE": "bootstrap",
            "SWITCHYARD_AUTH_BOOTSTRAP_TENANT": settings.bootstrapTenantID, "SWITCHYARD_AUTH_BOOTSTRAP_USERNAME": settings.bootstrapUsername,
            "SWITCHYARD_AUTH_BOOTSTRAP_PASSWORD": settings.bootstrapPassword, "SWITCHYARD_AUTH_BOOTSTRAP_INTERVAL": "100ms",
        ])
        defer { agent.stop() }
        try await eventually("asked for credentials") { await harness.tenant.credentialRequests >= 2 }
        #expect(socket.drain().contains("STATUS=bootstrap: waiting for the operator to accept device \(harness.externalId) in device registration"))
        #expect(!socket.received.contains { $0.contains("READY=1") })
        await harness.tenant.accept(deviceId: harness.externalId)
        try await eventually("READY=1 once accepted and subscribed") { socket.drain().contains { $0.contains("READY=1") } }
    }

    @Test func underSystemdItSaysReadyStatusWatchdogAndStopping() async throws {
        let harness = try await Harness()
        defer { Task { await harness.close() } }
        let socket = try NotifySocket()
        let agent = try AgentProcess(harness, environment: ["NOTIFY_SOCKET": socket.path, "WATCHDOG_USEC": "400000"])
        defer { agent.stop() }
        try await eventually("READY=1") { socket.drain().contains { $0.contains("READY=1") } }
        let ready = try #require(socket.received.firstIndex { $0.contains("READY=1") })
        #expect(socket.received[..<ready].contains("STATUS=registering the device"))
        #expect(socket.received[ready].contains("STATUS=handling operations of device"))
        try await eventually("watchdog fed") { socket.drain().filter { $0 == "WATCHDOG=1" }.count >= 3 }
        // Down until the agent has noticed (an answer released by the stop may let it reconnect later).
        try await harness.outage(for: .milliseconds(100)) {
            try await eventually("STATUS says it reconnects") {
                socket.drain().contains { $0.hasPrefix("STATUS=reconnecting: a notification request failed; retrying in ") }
            }
        }
        await agent.stopAndWait()
        #expect(socket.drain().contains { $0.hasPrefix("STOPPING=1") }, "\(socket.received)\n\(agent.log)")
    }
}
