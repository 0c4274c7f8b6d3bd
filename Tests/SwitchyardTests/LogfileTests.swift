import Foundation
import HandlerKit
import HandlerKitTesting
import JSONSupport
import Sandbox
import Testing
@testable import LogfileHandler
@testable import Switchyard

/// Timestamps of log requests and log lines.
@Suite struct LogTimeTests {
    @Test func readsTheFormsRequestsAndLogsUse() {
        #expect(LogTime.parse("1970-01-01T00:00:00Z") == 0)
        #expect(LogTime.parse("2021-09-22T11:40:27+0200") == 1_632_303_627)
        #expect(LogTime.parse("2021-09-22T09:40:27Z") == 1_632_303_627)
        #expect(LogTime.parse("2021-09-22T11:40:27.123+02:00") == 1_632_303_627)
        #expect(LogTime.parse("2021-09-22 09:40:27") == 1_632_303_627)
        #expect(LogTime.parse("2024-02-29T00:00:00Z") == 1_709_164_800)
        #expect(LogTime.parse("2021-09-22T09:40") == 1_632_303_600)
        #expect(LogTime.parse("yesterday") == nil)
        #expect(LogTime.parse("2021-13-01T00:00:00Z") == nil)
        #expect(LogTime.parse("2021-09-22T09:40:27Z trailing") == nil)
        let line = Array("2021-09-22T09:40:27+0000 host app[1]: started".utf8)
        #expect(LogTime.parse(prefixOf: line)?.seconds == 1_632_303_627)
        #expect(LogTime.parse(prefixOf: line)?.length == 24)
        #expect(LogTime.format(1_632_303_627) == "2021-09-22 09:40:27")
    }
}

/// c8y_LogfileRequest with the handler alone (RecordingContext) and end to end against the sandbox.
@Suite(.closesHarnesses, .timeLimit(.minutes(2)))
struct LogfileHandlerTests {
    static let day: Int64 = 86400
    static let base: Int64 = 1_764_547_200  // 2025-12-01T00:00:00Z

    static func iso(_ seconds: Int64) -> String { LogTime.format(seconds).replacingOccurrences(of: " ", with: "T") + "Z" }

    /// app.log (today), app.log.1 (yesterday), app.log.2.gz (two days ago): each line carries its time.
    static func makeRotatedLogs(in directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        func lines(_ day: Int64, _ words: [String]) -> String {
            words.enumerated().map { "\(iso(base + day * Self.day + Int64($0.offset) * 3600)) app: \($0.element)\n" }.joined()
        }
        write(lines(0, ["boot", "ERROR disk", "ok", "ERROR net"]) + "  continuation of ERROR net\n", to: directory + "/app.log")
        write(lines(-1, ["boot", "ERROR fan", "ok"]), to: directory + "/app.log.1")
        write(lines(-2, ["boot", "ERROR old", "ok"]), to: directory + "/app.log.2")
        let gzip = Process()
        gzip.executableURL = URL(fileURLWithPath: "/bin/gzip")
        gzip.arguments = ["-f", directory + "/app.log.2"]
        try launch(gzip)
        gzip.waitUntilExit()
        for (file, day) in [("app.log", Int64(0)), ("app.log.1", -1), ("app.log.2.gz", -2)] {
            let end = Date(timeIntervalSince1970: TimeInterval(base + day * Self.day + 23 * 3600))
            try FileManager.default.setAttributes([.modificationDate: end], ofItemAtPath: directory + "/" + file)
        }
    }

    static func declaration(_ directory: String, extra: String = "") -> String {
        """
        operation: c8y_LogfileRequest
        swift: Logfile
        options:
          types:
            - {type: app, files: "\(directory)/app.log*"}
            - {type: missing, files: "\(directory)/none*"}
            - {type: broken, files: /proc/self/mem}
        \(extra)
        """
    }

    @Test func selectsByRangeTextAndCountAcrossRotatedAndGzippedFiles() async throws {
        let harness = try await Harness()
        let logs = harness.root + "/logs"
        try Self.makeRotatedLogs(in: logs)
        harness.declare("logs.yaml", Self.declaration(logs))
        try await harness.startAgent()
        let deviceID = try #require(await harness.deviceID())
        try await eventually("c8y_SupportedLogs reported") {
            await harness.tenant.managedObject(deviceID)?["c8y_SupportedLogs"] == ["app", "missing", "broken"]
        }
        let request: JSONValue = [
            "logFile": "app", "searchText": "ERROR", "maximumLines": 3,
            "dateFrom": .string(Self.iso(Self.base - 2 * Self.day)), "dateTo": .string(Self.iso(Self.base + 2 * 3600)),
        ]
        let id = try await harness.createOperation(["c8y_LogfileRequest": request])
        let operation = try await harness.waitForEnd(id)
        #expect(operation["status"] == "SUCCESSFUL", "\(operation)")
        let url = try #require(operation["c8y_LogfileRequest"]?["file"]?.stringValue)
        #expect(operation["c8y_LogfileRequest"]?["logFile"] == "app")
        let eventID = try #require(url.split(separator: "/").dropLast().last.map(String.init))
        #expect(url == harness.server.url + "/event/events/\(eventID)/binaries")
        let file = try #require(await harness.tenant.eventBinary(eventID))
        // The last three ERROR lines up to 02:00 today, oldest first: two days ago (from the .gz) is
        // beyond the count, "ERROR net" (03:00) beyond the range.
        #expect(String(decoding: file.bytes, as: UTF8.self) == """
            \(Self.iso(Self.base - 2 * Self.day + 3600)) app: ERROR old
            \(Self.iso(Self.base - Self.day + 3600)) app: ERROR fan
            \(Self.iso(Self.base + 3600)) app: ERROR disk

            """)
        #expect(file.type == "text/plain")
        let event = try #require(await harness.tenant.eventList(type: "c8y_Logfile").first)
        #expect(event["source"]?["id"]?.stringValue == deviceID)
        #expect(event["c8y_LogfileRequest"]?["logFile"] == "app")
        await harness.close()
    }

    @Test func theLastLinesWinAndContinuationsFollowTheirLine() async throws {
        let directory = NSTemporaryDirectory() + "logs-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try Self.makeRotatedLogs(in: directory)
        try FileManager.default.createDirectory(atPath: directory + "/op", withIntermediateDirectories: true)
        let context = RecordingContext(stateDirectory: directory + "/op", commands: { argv, _, _ in
            let result = await runTool(argv)
            return result
        })
        let handler = try LogfileHandler(options: ["types": [["type": "app", "files": .string(directory + "/app.log*")]]])
        let operation = Operation(id: "1", deviceId: "d", externalId: nil, fragment: "c8y_LogfileRequest",
                                  json: ["c8y_LogfileRequest": ["logFile": "app", "searchText": "ERROR", "maximumLines": "2"]])
        let outcome = try await handler.execute(operation, context: context)
        guard case .successful(let result) = outcome else { Issue.record("\(outcome)"); return }
        #expect(result["c8y_LogfileRequest"]?["file"] == "https://recording.invalid/event/events/1/binaries")
        let sent = context.calls.compactMap { call -> String? in
            if case .eventWithFile(_, _, _, _, let contents) = call { String(decoding: contents, as: UTF8.self) } else { nil }
        }
        // No range: the two newest matches, the continuation line kept with the line it belongs to.
        #expect(sent == ["\(Self.iso(Self.base + 3 * 3600)) app: ERROR net\n  continuation of ERROR net\n"])
    }

    @Test func theTypesAreAdvertisedAgainWhenTheDeclarationChanges() async throws {
        let harness = try await Harness()
        harness.declare("logs.yaml", Self.declaration(harness.root))
        try await harness.startAgent()
        let deviceID = try #require(await harness.deviceID())
        try await eventually("types advertised at start") {
            await harness.tenant.managedObject(deviceID)?["c8y_SupportedLogs"] == ["app", "missing", "broken"]
        }
        harness.declare("logs.yaml", Self.declaration(harness.root) + "    - {type: added, files: /var/log/added*}\n")
        try await eventually("types advertised after the reload") {
            await harness.tenant.managedObject(deviceID)?["c8y_SupportedLogs"] == ["app", "missing", "broken", "added"]
        }
        await harness.close()
    }

    @Test func unknownTypeFailsNamingTheKnownOnes() async throws {
        let harness = try await Harness()
        harness.declare("logs.yaml", Self.declaration(harness.root))
        try await harness.startAgent()
        let id = try await harness.createOperation(["c8y_LogfileRequest": ["logFile": "kernel"]])
        let operation = try await harness.waitForEnd(id)
        #expect(operation["status"] == "FAILED")
        #expect(operation["failureReason"] == "unknown log type kernel; this device has: app, missing, broken")
        await harness.close()
    }

    @Test func noMatchingFileIsAnEmptyFileAndAnUnreadableOneFails() async throws {
        let harness = try await Harness()
        let logs = harness.root + "/logs"
        try Self.makeRotatedLogs(in: logs)
        harness.declare("logs.yaml", Self.declaration(logs))
        try await harness.startAgent()
        let empty = try await harness.waitForEnd(try await harness.createOperation(["c8y_LogfileRequest": ["logFile": "missing"]]))
        #expect(empty["status"] == "SUCCESSFUL")
        let url = try #require(empty["c8y_LogfileRequest"]?["file"]?.stringValue)
        let eventID = try #require(url.split(separator: "/").dropLast().last.map(String.init))
        #expect(await harness.tenant.eventBinary(eventID)?.bytes == [])

        // A file that opens but cannot be read (as root too): /proc/self/mem answers EIO at offset 0.
        let unreadable = try await harness.waitForEnd(try await harness.createOperation(["c8y_LogfileRequest": ["logFile": "broken"]]))
        #expect(unreadable["status"] == "FAILED")
        #expect(unreadable["failureReason"] == "cannot read the broken log: cannot read /proc/self/mem: Input/output error")
        let after = try await harness.waitForEnd(try await harness.createOperation(["c8y_LogfileRequest": ["logFile": "app"]]))
        #expect(after["status"] == "SUCCESSFUL")  // the failure lost nothing else
        await harness.close()
    }

    @Test func aCommandAndALogPluginAreSourcesToo() async throws {
        let harness = try await Harness()
        let command = harness.script("journal.sh", """
            echo "since=$1 until=$2"
            echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) unit: ERROR from the command"
            """)
        let plugin = harness.script("log-plugin", """
            case "$1" in
              list) echo container-a; echo container-b ;;
              get) echo "type=$2 $3 $4 $5 $6 $7 $8 $9 ${10}" ;;
              *) exit 2 ;;
            esac
            """)
        harness.declare("logs.yaml", """
            operation: c8y_LogfileRequest
            swift: Logfile
            options:
              types:
                - {type: journal, command: [\(command), "{since}", "{untilISO}"], timeout: 5}
                - {type: slow, command: [\(harness.script("slow.sh", "exec sleep 30"))], timeout: 1}
              plugins: [\(plugin)]
            """)
        try await harness.startAgent()
        let deviceID = try #require(await harness.deviceID())
        try await eventually("types of the plugin advertised") {
            await harness.tenant.managedObject(deviceID)?["c8y_SupportedLogs"] == ["journal", "slow", "container-a", "container-b"]
        }
        let fromCommand = try await harness.waitForEnd(try await harness.createOperation(["c8y_LogfileRequest": [
            "logFile": "journal", "dateFrom": "2021-09-21T11:40:27+0200", "dateTo": "2031-09-22T11:40:27+0200",
        ]]))
        #expect(fromCommand["status"] == "SUCCESSFUL", "\(fromCommand)")
        let commandFile = try #require(fromCommand["c8y_LogfileRequest"]?["file"]?.stringValue?.split(separator: "/").dropLast().last)
        let commandText = String(decoding: await harness.tenant.eventBinary(String(commandFile))?.bytes ?? [], as: UTF8.self)
        #expect(commandText.hasPrefix("since=2021-09-21 09:40:27 UTC until=2031-09-22T09:40:27Z\n"))
        #expect(commandText.contains("unit: ERROR from the command"))

        let fromPlugin = try await harness.waitForEnd(try await harness.createOperation(["c8y_LogfileRequest": [
            "logFile": "container-b", "searchText": "type", "maximumLines": 5, "dateFrom": "2021-09-21T11:40:27+0200",
            "dateTo": "2031-09-22T11:40:27+0200",
        ]]))
        #expect(fromPlugin["status"] == "SUCCESSFUL", "\(fromPlugin)")
        let pluginFile = try #require(fromPlugin["c8y_LogfileRequest"]?["file"]?.stringValue?.split(separator: "/").dropLast().last)
        #expect(String(decoding: await harness.tenant.eventBinary(String(pluginFile))?.bytes ?? [], as: UTF8.self)
                == "type=container-b --since 2021-09-21T09:40:27Z --until 2031-09-22T09:40:27Z --filter type --lines 5\n")

        // Each type's own time limit.
        let slow = try await harness.waitForEnd(try await harness.createOperation(["c8y_LogfileRequest": ["logFile": "slow"]]))
        #expect(slow["status"] == "FAILED")
        #expect(slow["failureReason"]?.stringValue?.hasPrefix("the slow log command failed: timed out after 1.0 seconds") == true,
                "\(slow["failureReason"] ?? .null)")
        await harness.close()
    }

    @Test func theSizeCapKeepsTheNewestLines() throws {
        let directory = NSTemporaryDirectory() + "logs-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        write((1...1000).map { "line \($0)\n" }.joined(), to: directory + "/big.log")
        let summary = try LogSelection.select([LogInput(path: directory + "/big.log", modified: nil)],
                                              query: LogQuery(from: nil, to: nil, searchText: "", maximumLines: 500, maxBytes: 40),
                                              into: directory + "/out")
        #expect(try String(contentsOfFile: directory + "/out", encoding: .utf8) == "line 997\nline 998\nline 999\nline 1000\n")
        #expect(summary == LogSelectionSummary(lines: 4, bytes: 37, droppedForSize: 496))
    }

    @Test func badOptionsAndRequestsSayWhatIsWrong() throws {
        #expect(throws: HandlerOptionsError("options.types[0] needs exactly one of files and command")) {
            try LogfileHandler(options: ["types": [["type": "a"]]])
        }
        #expect(throws: HandlerOptionsError("options.types[1]: type a is declared twice")) {
            try LogfileHandler(options: ["types": [["type": "a", "files": "/x"], ["type": "a", "files": "/y"]]])
        }
        #expect(throws: HandlerOptionsError("options need types or plugins: this device would have no logs")) {
            try LogfileHandler(options: .null)
        }
        let handler = try LogfileHandler(options: ["types": [["type": "a", "files": "/x"]]])
        guard case .failure(let problem) = handler.query(["dateFrom": "last week"]) else { Issue.record("accepted"); return }
        #expect(problem.detail == "c8y_LogfileRequest.dateFrom is not an ISO 8601 date and time: \"last week\"")
    }
}
