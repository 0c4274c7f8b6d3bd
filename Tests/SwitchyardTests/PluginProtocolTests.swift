import Foundation
import JSONSupport
import Sandbox
import Testing
@testable import Switchyard

/// Conformance of executable plugins with docs/plugin-protocol.md, running the examples it shows
/// (docs/examples/handlers.d and Plugins/) as real processes against the sandbox.
@Suite(.closesHarnesses, .timeLimit(.minutes(3)))
struct PluginProtocolTests {
    static let examples = FileSystem.absolute("docs/examples/handlers.d")

    @Test func shellPluginDirectivesRoundTrip() async throws {
        let harness = try await Harness()
        harness.handlers = Self.examples
        try await harness.startAgent()
        let deviceID = try #require(await harness.deviceID())
        let id = try await harness.createOperation(["acme_ShellExample": ["argument": "hello"]])
        let operation = try await harness.waitForEnd(id)
        #expect(operation["status"] == "SUCCESSFUL")
        #expect(operation["acme_ShellExample"]?["argument"] == "hello")
        #expect(await harness.tenant.managedObject(deviceID)?["acme_ShellPlugin"]?["lastOperation"]?.idValue == id)
        #expect(await harness.tenant.eventList(type: "acme_ShellEvent").first?["source"]?["id"]?.idValue == deviceID)
        #expect(await harness.tenant.measurementList(type: "acme_ShellMeasurement").first?["acme_Shell"]?["runs"]?["value"] == 1)
        let alarms = await harness.tenant.alarmList(source: deviceID, type: "acme_ShellAlarm")
        #expect(alarms.count == 1)
        #expect(alarms.first?["status"] == "CLEARED")
        #expect(alarms.first?["severity"] == "MINOR")
        let log = harness.log(id)
        #expect(log.contains("shell plugin: operation \(id), phase execute"))
        #expect(log.contains("directive ignored: unknown directive \"nonsense\""))
        await harness.close()
    }

    @Test func failureDirectiveGivesTheReason() async throws {
        let harness = try await Harness()
        harness.handlers = Self.examples
        try await harness.startAgent()
        let id = try await harness.createOperation(["acme_ShellExample": ["argument": "x", "mode": "fail"]])
        let operation = try await harness.waitForEnd(id)
        #expect(operation["status"] == "FAILED")
        #expect(operation["failureReason"] == "the shell plugin was asked to fail")
        #expect(operation["acme_ShellExample"]?["argument"] == "x")
        await harness.close()
    }

    @Test func pythonPluginDirectivesRoundTrip() async throws {
        let harness = try await Harness()
        harness.handlers = Self.examples
        try await harness.startAgent()
        let deviceID = try #require(await harness.deviceID())
        let id = try await harness.createOperation(["acme_PythonExample": ["echo": "ping"]])
        let operation = try await harness.waitForEnd(id)
        #expect(operation["status"] == "SUCCESSFUL", "\(harness.log(id))")
        #expect(operation["acme_PythonExample"]?["echo"] == "ping")
        #expect(operation["acme_PythonExample"]?["argv"] == ["ping"])
        #expect(await harness.tenant.managedObject(deviceID)?["acme_PythonPlugin"] != nil)
        #expect(await harness.tenant.eventList(type: "acme_PythonEvent").count == 1)
        #expect(await harness.tenant.measurementList(type: "acme_PythonMeasurement").count == 1)
        #expect(await harness.tenant.alarmList(source: deviceID, type: "acme_PythonAlarm").first?["status"] == "CLEARED")

        let failing = try await harness.createOperation(["acme_PythonExample": ["fail": true, "clear": false]])
        let failed = try await harness.waitForEnd(failing)
        #expect(failed["status"] == "FAILED")
        #expect(failed["failureReason"] == "the python plugin was asked to fail")
        #expect(await harness.tenant.alarmList(source: deviceID, status: "ACTIVE", type: "acme_PythonAlarm").count == 1)
        await harness.close()
    }

    @Test func compiledExecutablePlugin() async throws {
        let harness = try await Harness()
        let binary = harness.root + "/bin/hello"
        try FileManager.default.createDirectory(atPath: harness.root + "/bin", withIntermediateDirectories: true)
        let cc = Process()
        cc.executableURL = URL(fileURLWithPath: "/usr/bin/cc")
        cc.arguments = ["-O2", "-o", binary, FileSystem.absolute("Plugins/examples/hello.c")]
        try launch(cc)
        cc.waitUntilExit()
        try #require(cc.terminationStatus == 0)
        harness.declare("hello.yaml", "operation: acme_Hello\nexec: {command: [../bin/hello]}\n")
        try await harness.startAgent()
        let id = try await harness.createOperation(["acme_Hello": [:]])
        let operation = try await harness.waitForEnd(id)
        #expect(operation["status"] == "SUCCESSFUL")
        #expect(operation["acme_Hello"]?["greeting"] == "hello from C")
        #expect((operation["acme_Hello"]?["inputBytes"]?.intValue ?? 0) > 20)
        await harness.close()
    }

    @Test func commandPluginReturnsItsOutput() async throws {
        let harness = try await Harness()
        harness.handlers = Self.examples
        try await harness.startAgent()
        let id = try await harness.createOperation(["c8y_Command": ["text": "echo one; echo 'two three'"]])
        let operation = try await harness.waitForEnd(id)
        #expect(operation["status"] == "SUCCESSFUL")
        #expect(operation["c8y_Command"]?["result"] == "one\ntwo three\n")
        let failing = try await harness.createOperation(["c8y_Command": ["text": "echo broken >&2; exit 7"]])
        let failed = try await harness.waitForEnd(failing)
        #expect(failed["status"] == "FAILED")
        #expect(failed["failureReason"] == "command exited with code 7: broken")
        await harness.close()
    }

    @Test(arguments: ["; rm -rf /", "it's \"quoted\" $(whoami) `id` $HOME", "line one\nline two", "", " leading and trailing ", "*"])
    func hostileTemplateValuesArriveAsOneLiteralArgument(value: String) async throws {
        let harness = try await Harness()
        let out = harness.root + "/argv"
        harness.script("argv.sh", "printf '%s\\0' \"$#\" \"$@\" > '\(out)'")
        harness.declare("argv.yaml", "operation: acme_Argv\nexec: {command: [../bin/argv.sh, '${acme_Argv.value}', after]}\n")
        try await harness.startAgent()
        let id = try await harness.createOperation(["acme_Argv": ["value": .string(value)]])
        #expect(try await harness.waitForEnd(id)["status"] == "SUCCESSFUL")
        let fields = try String(contentsOfFile: out, encoding: .utf8).split(separator: "\0", omittingEmptySubsequences: false)
        #expect(fields.first == "2")
        #expect(fields.count > 2 && String(fields[1]) == value && fields[2] == "after")
        await harness.close()
    }

    @Test(.serialized, arguments: ["lines", "one line"])
    func outputFloodKeepsMemoryBoundedAndTheLogTruncated(kind: String) async throws {
        try await takingTurns {
            let harness = try await Harness()
            let flood = kind == "lines" ? "yes 'flood flood flood' | head -c 100000000" : "head -c 100000000 /dev/zero | tr '\\0' x"
            harness.script("flood.sh", flood + "\necho 'still fine' >&2")
            harness.declare("flood.yaml", "operation: acme_Flood\nexec: {command: [../bin/flood.sh], timeout: 60s}\n")
            try await harness.startAgent()
            let before = residentKilobytes()
            let id = try await harness.createOperation(["acme_Flood": [:]])
            let operation = try await harness.waitForEnd(id, within: 60)
            #expect(operation["status"] == "SUCCESSFUL")
            let growth = residentKilobytes() - before
            #expect(growth < 64 * 1024, "resident memory grew by \(growth) KiB while a plugin printed 100 MB")
            let logSize = (try? FileManager.default.attributesOfItem(atPath: harness.state + "/operations/\(id)/execute.log")[.size] as? Int) ?? 0
            #expect(logSize > 1_000_000 && logSize < 1_100_000)
            #expect(harness.log(id).contains("[switchyard: output truncated at 1048576 bytes]"))
            await harness.close()
        }
    }

    @Test func resumablePluginAskingForRestartIsResumedAfterTheAgentRestarts() async throws {
        let harness = try await Harness()
        let rebooted = harness.root + "/rebooted"
        let phases = harness.root + "/phases"
        harness.script("reboot.sh", "touch '\(rebooted)'")
        harness.declare("restart.yaml", "operation: c8y_Restart\nexec: {command: [../bin/reboot.sh]}\n")
        harness.script("update.sh", """
            echo "$SWITCHYARD_PHASE" >> '\(phases)'
            if [ "$SWITCHYARD_PHASE" = execute ]; then
                echo '{"switchyard":"restart"}'
            else
                echo '{"switchyard":"result","fragments":{"acme_Update":{"resumed":true}}}'
            fi
            """)
        harness.declare("update.yaml", "operation: acme_Update\nexec: {command: [../bin/update.sh]}\nresumable: true\n")
        try await harness.startAgent()
        let id = try await harness.createOperation(["acme_Update": [:]])
        try await eventually("restart handler called") { FileManager.default.fileExists(atPath: rebooted) }
        // The agent has settled what it does before the device goes down: the operation waits, unfinished.
        try await eventually("waiting for the restart") { harness.logs.contains("operation waits for the device restart") }
        #expect(await harness.tenant.operation(id)?["status"] == "EXECUTING")
        await harness.stopAgent()  // the device restarts
        try await harness.startAgent()
        let operation = try await harness.waitForEnd(id)
        #expect(operation["status"] == "SUCCESSFUL")
        #expect(operation["acme_Update"]?["resumed"] == true)
        #expect(try String(contentsOfFile: phases, encoding: .utf8) == "execute\nresume\n")
        await harness.close()
    }

    /// The restart a plugin asks for runs the c8y_Restart plugin like any operation's: its directives
    /// are applied (an event here) and it writes its log to restart.log.
    @Test func anExecRestartHandlerAskedForByAPluginHasItsDirectivesApplied() async throws {
        let harness = try await Harness()
        harness.script("reboot.sh", "echo '{\"switchyard\":\"event\",\"type\":\"acme_GoingDown\",\"text\":\"rebooting\"}'\necho down >&2")
        harness.declare("restart.yaml", "operation: c8y_Restart\nexec: {command: [../bin/reboot.sh]}\n")
        harness.script("update.sh", "echo '{\"switchyard\":\"restart\"}'")
        harness.declare("update.yaml", "operation: acme_Update\nexec: {command: [../bin/update.sh]}\nresumable: true\n")
        try await harness.startAgent()
        let id = try await harness.createOperation(["acme_Update": [:]])
        try await eventually("the restart handler's event") { await !harness.tenant.eventList(type: "acme_GoingDown").isEmpty }
        #expect(harness.log(id, phase: "restart").contains("down"))
        #expect(await harness.tenant.operation(id)?["status"] == "EXECUTING")
        await harness.close()
    }

    @Test func restartRequestWithoutARestartHandlerFails() async throws {
        let harness = try await Harness()
        harness.script("update.sh", "echo '{\"switchyard\":\"restart\"}'")
        harness.declare("update.yaml", "operation: acme_Update\nexec: {command: [../bin/update.sh]}\nresumable: true\n")
        try await harness.startAgent()
        let id = try await harness.createOperation(["acme_Update": [:]])
        let operation = try await harness.waitForEnd(id)
        #expect(operation["status"] == "FAILED")
        #expect(operation["failureReason"]?.stringValue?.contains("no c8y_Restart handler") == true)
        await harness.close()
    }

    @Test(.enabled(if: geteuid() == 0 && getpwnam("nobody") != nil, "changing user needs root and a user 'nobody'"))
    func pluginRunsAsTheDeclaredUser() async throws {
        let nobody = try #require(getpwnam("nobody"))
        let harness = try await Harness()
        harness.script("whoami.sh", "id -u > \"$SWITCHYARD_STATE_DIR/uid\"")
        harness.declare("whoami.yaml", "operation: acme_WhoAmI\nexec: {command: [../bin/whoami.sh], user: nobody}\n")
        try await harness.startAgent()
        let id = try await harness.createOperation(["acme_WhoAmI": [:]])
        let operation = try await harness.waitForEnd(id)
        #expect(operation["status"] == "SUCCESSFUL", "\(operation)")
        let uid = try String(contentsOfFile: harness.state + "/operations/\(id)/uid", encoding: .utf8)
        #expect(uid == "\(nobody.pointee.pw_uid)\n")
        await harness.close()
    }
}

/// This process's resident set size in KiB (from /proc/self/status).
func residentKilobytes() -> Int {
    let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
    let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
    return Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
}

/// handlers.d is live: the registry follows the directory and the device follows the registry.
@Suite(.closesHarnesses, .timeLimit(.minutes(3)))
struct LiveHandlersTests {
    @Test func addingAndRemovingAFileChangesTheAdvertisement() async throws {
        try await takingTurns {
            let harness = try await Harness()
            harness.declare("message.yaml", "operation: c8y_Message\nswift: Message\n")
            try await harness.startAgent()
            #expect(await harness.advertised() == ["c8y_Message"])
            harness.script("ok.sh", "exit 0")
            harness.declare("ok.yaml", "operation: acme_Ok\nexec: {command: [../bin/ok.sh]}\n")
            try await eventually("acme_Ok advertised", within: 6) { await harness.advertised() == ["acme_Ok", "c8y_Message"] }
            let id = try await harness.createOperation(["acme_Ok": [:]])
            #expect(try await harness.waitForEnd(id)["status"] == "SUCCESSFUL")
            try FileManager.default.removeItem(atPath: harness.handlers + "/ok.yaml")
            try await eventually("acme_Ok withdrawn", within: 6) { await harness.advertised() == ["c8y_Message"] }
            let deviceID = try #require(await harness.deviceID())
            let updates = await harness.tenant.updates(of: deviceID).filter { $0["c8y_SupportedOperations"] != nil }
            #expect(updates.count == 2)
            await harness.close()
        }
    }

    @Test func aBrokenFileRaisesExactlyOneAlarmAndFixingItClearsIt() async throws {
        try await takingTurns {
            let harness = try await Harness()
            harness.declare("message.yaml", "operation: c8y_Message\nswift: Message\n")
            try await harness.startAgent()
            let deviceID = try #require(await harness.deviceID())
            harness.declare("broken.yaml", "operation: acme_Broken\nexec:\n  command: [nope\n")
            let type = RegistryKeeper.alarmType(for: "broken.yaml")
            try await eventually("alarm raised", within: 6) {
                await !harness.tenant.alarmList(source: deviceID, status: "ACTIVE", type: type).isEmpty
            }
            // Several more checks happen meanwhile: wait for three of them (each a sync with the platform).
            let checks = harness.logs.count("handlers.d checked")
            try await eventually("three more checks", within: 10) { harness.logs.count("handlers.d checked") >= checks + 3 }
            let alarms = await harness.tenant.alarmList(source: deviceID, type: type)
            #expect(alarms.count == 1)
            #expect(alarms.first?["count"] == 1)
            #expect(alarms.first?["text"]?.stringValue?.contains("broken.yaml:") == true)
            #expect(await harness.advertised() == ["c8y_Message"])

            harness.script("ok.sh", "exit 0")
            harness.declare("broken.yaml", "operation: acme_Broken\nexec: {command: [../bin/ok.sh]}\n")
            try await eventually("alarm cleared", within: 6) {
                await harness.tenant.alarmList(source: deviceID, type: type).first?["status"] == "CLEARED"
            }
            try await eventually("fixed file advertised", within: 6) { await harness.advertised() == ["acme_Broken", "c8y_Message"] }
            await harness.close()
        }
    }

    @Test func alarmOfAFileFixedWhileTheAgentWasDownIsClearedAtStart() async throws {
        let harness = try await Harness()
        harness.declare("broken.yaml", "operation: [\n")
        try await harness.startAgent()
        let deviceID = try #require(await harness.deviceID())
        let type = RegistryKeeper.alarmType(for: "broken.yaml")
        try await eventually("alarm raised") { await !harness.tenant.alarmList(source: deviceID, status: "ACTIVE", type: type).isEmpty }
        await harness.stopAgent()
        try FileManager.default.removeItem(atPath: harness.handlers + "/broken.yaml")
        try await harness.startAgent()
        try await eventually("alarm cleared") {
            await harness.tenant.alarmList(source: deviceID, type: type).first?["status"] == "CLEARED"
        }
        await harness.close()
    }
}

@Suite(.closesHarnesses, .timeLimit(.minutes(2)))
struct PluginEdgeTests {
    @Test func pluginThatNeverReadsALargeInputOrClosesStdoutEarlySucceeds() async throws {
        let harness = try await Harness()
        harness.script("ignore.sh", "exit 0")
        harness.script("close.sh", "exec >&-\nsleep 0.2\nexit 0")
        harness.declare("ignore.yaml", "operation: acme_Ignore\nexec: {command: [../bin/ignore.sh]}\n")
        harness.declare("close.yaml", "operation: acme_Close\nexec: {command: [../bin/close.sh]}\n")
        try await harness.startAgent()
        let big = JSONValue.string(String(repeating: "y", count: 300_000))
        let ignored = try await harness.createOperation(["acme_Ignore": ["blob": big]])
        let closed = try await harness.createOperation(["acme_Close": ["blob": big]])
        #expect(try await harness.waitForEnd(ignored)["status"] == "SUCCESSFUL")
        #expect(try await harness.waitForEnd(closed)["status"] == "SUCCESSFUL")
        await harness.close()
    }

    @Test func oneDeclarationServesSeveralFragmentsUnderOneAdvertisedName() async throws {
        let harness = try await Harness()
        let seen = harness.root + "/fragments"
        harness.script("soft.sh", "echo \"$SWITCHYARD_FRAGMENT\" >> '\(seen)'")
        harness.declare("soft.yaml", "operation: c8y_SoftwareUpdate\nfragments: [c8y_SoftwareUpdate, c8y_SoftwareList]\nexec: {command: [../bin/soft.sh]}\n")
        try await harness.startAgent()
        #expect(await harness.advertised() == ["c8y_SoftwareUpdate"])
        let a = try await harness.createOperation(["c8y_SoftwareUpdate": []])
        #expect(try await harness.waitForEnd(a)["status"] == "SUCCESSFUL")
        let b = try await harness.createOperation(["c8y_SoftwareList": []])
        #expect(try await harness.waitForEnd(b)["status"] == "SUCCESSFUL")
        #expect(try String(contentsOfFile: seen, encoding: .utf8) == "c8y_SoftwareUpdate\nc8y_SoftwareList\n")
        await harness.close()
    }

    @Test func missingProgramAtRunTimeFailsTheOperationWithTheReason() async throws {
        let harness = try await Harness()
        let program = harness.script("vanishing.sh", "exit 0")
        harness.declare("vanishing.yaml", "operation: acme_Vanishing\nexec: {command: [../bin/vanishing.sh]}\n")
        // The program goes unseen by the watcher (which would withdraw the declaration).
        var tuning = Harness.tuning
        tuning.reloadInterval = .seconds(3600)
        tuning.fileEvents = false
        try await harness.startAgent(harness.configuration, tuning: tuning, waitForRegistration: true)
        try FileManager.default.removeItem(atPath: program)
        let id = try await harness.createOperation(["acme_Vanishing": [:]])
        let operation = try await harness.waitForEnd(id)
        #expect(operation["status"] == "FAILED")
        #expect(operation["failureReason"]?.stringValue?.hasPrefix("could not start \(program)") == true)
        await harness.close()
    }
}

@Suite(.closesHarnesses, .timeLimit(.minutes(2)))
struct DurableDirectiveTests {
    @Test func whatAPluginSendsDuringAnOutageArrivesAfterwardsAndBeforeTheFinalStatus() async throws {
        let harness = try await Harness()
        harness.handlers = PluginProtocolTests.examples
        try await harness.startAgent()
        let deviceID = try #require(await harness.deviceID())
        await harness.tenant.refuse(next: 3, status: 503, method: "POST", pathPrefix: "/event/events")
        let id = try await harness.createOperation(["acme_ShellExample": ["argument": "outage"]])
        #expect(try await harness.waitForEnd(id)["status"] == "SUCCESSFUL")
        #expect(await harness.tenant.refusalsLeft == 0)
        let events = await harness.tenant.eventList(type: "acme_ShellEvent")
        #expect(events.count == 1)
        #expect(events.first?["source"]?["id"]?.idValue == deviceID)
        #expect(await harness.tenant.managedObject(deviceID)?["acme_ShellPlugin"] != nil)
        await harness.close()
    }
}
