import Foundation
import JSONSupport
import Sandbox
import ServiceLifecycle
import Testing
@testable import Switchyard

/// c8y_Restart: the boot id decides, across an agent restart with a new boot-id file.
@Suite(.closesHarnesses, .timeLimit(.minutes(2)))
struct RestartHandlerTests {
    func prepare(_ harness: Harness, reboot: String = "touch \"$0.done\"", restartTimeout: Int = 30) -> (bootID: String, marker: String) {
        let bootID = harness.root + "/boot_id"
        write("aaaa-1111\n", to: bootID)
        let script = harness.script("reboot.sh", reboot)
        harness.declare("restart.yaml", """
            operation: c8y_Restart
            swift: Restart
            resumable: true
            options: {command: [\(script)], bootIdFile: \(bootID), restartTimeout: \(restartTimeout)}
            """)
        return (bootID, script + ".done")
    }

    @Test func restartSpansTheReboot() async throws {
        let harness = try await Harness()
        let (bootID, marker) = prepare(harness)
        try await harness.startAgent()
        let id = try await harness.createOperation(["c8y_Restart": [:]])
        try await eventually("reboot command run") { FileManager.default.fileExists(atPath: marker) }
        try await eventually("EXECUTING reported") { await harness.tenant.operation(id)?["status"] == "EXECUTING" }
        await harness.stopAgent()          // the device goes down …
        write("bbbb-2222\n", to: bootID)   // … and comes back with a new boot id
        try await harness.startAgent()
        let operation = try await harness.waitForEnd(id)
        #expect(operation["status"] == "SUCCESSFUL")
        #expect(await harness.statuses(id) == ["PENDING", "EXECUTING", "SUCCESSFUL"])
        await harness.close()
    }

    @Test func unchangedBootIDMeansTheDeviceDidNotRestart() async throws {
        let harness = try await Harness()
        let (_, marker) = prepare(harness)
        try await harness.startAgent()
        let id = try await harness.createOperation(["c8y_Restart": [:]])
        try await eventually("reboot command run") { FileManager.default.fileExists(atPath: marker) }
        await harness.stopAgent()
        try await harness.startAgent()
        let operation = try await harness.waitForEnd(id)
        #expect(operation["status"] == "FAILED")
        #expect(operation["failureReason"]?.stringValue?.contains("device did not restart") == true)
        await harness.close()
    }

    @Test func failingRebootCommandFails() async throws {
        let harness = try await Harness()
        _ = prepare(harness, reboot: "echo 'reboot: permission denied' >&2\nexit 1")
        try await harness.startAgent()
        let id = try await harness.createOperation(["c8y_Restart": [:]])
        let operation = try await harness.waitForEnd(id)
        #expect(operation["status"] == "FAILED")
        #expect(operation["failureReason"] == "the reboot command failed: exited with code 1: reboot: permission denied")
        await harness.close()
    }

    @Test func noRestartWithinTheTimeoutFails() async throws {
        let harness = try await Harness()
        _ = prepare(harness, restartTimeout: 1)
        try await harness.startAgent()
        let id = try await harness.createOperation(["c8y_Restart": [:]])
        let operation = try await harness.waitForEnd(id)
        #expect(operation["status"] == "FAILED")
        #expect(operation["failureReason"]?.stringValue?.contains("did not restart within 1.0 seconds") == true)
        await harness.close()
    }

    @Test func shutdownDuringTheRestartDoesNotWaitForIt() async throws {
        let harness = try await Harness()
        let (bootID, marker) = prepare(harness)
        let group = harness.serviceGroup(harness.configuration)  // shutdownGrace: the default 20 s
        let running = Task { try await group.run() }
        try await eventually("agent subscribed") { await harness.tenant.bayeuxClientCount > 0 }
        let id = try await harness.createOperation(["c8y_Restart": [:]])
        try await eventually("reboot command run") { FileManager.default.fileExists(atPath: marker) }
        let stopping = ContinuousClock.now
        await group.triggerGracefulShutdown()  // what the reboot does to the agent
        try await running.value
        #expect(ContinuousClock.now - stopping < .seconds(10))
        write("cccc-3333\n", to: bootID)
        try await harness.startAgent()
        #expect(try await harness.waitForEnd(id)["status"] == "SUCCESSFUL")
        await harness.close()
    }
}

/// c8y_Configuration and c8y_SendConfiguration with a real file and a real apply command.
@Suite(.closesHarnesses, .timeLimit(.minutes(2)))
struct ConfigurationHandlerTests {
    func prepare(_ harness: Harness, apply: String = "echo applied >> \"$0.count\"", maxBytes: Int = 1024) -> (file: String, counter: String) {
        let file = harness.root + "/etc/device.conf"
        write("speed=1\n", to: file, mode: 0o640)
        let script = harness.script("apply.sh", apply)
        harness.declare("configuration.yaml", """
            operation: c8y_Configuration
            swift: Configuration
            options: {file: \(file), apply: [\(script)], maxBytes: \(maxBytes)}
            ---
            operation: c8y_SendConfiguration
            swift: Configuration
            options: {file: \(file)}
            """)
        return (file, script + ".count")
    }

    @Test func writesAppliesAndReports() async throws {
        let harness = try await Harness()
        let (file, counter) = prepare(harness)
        try await harness.startAgent()
        let deviceID = try #require(await harness.deviceID())
        try await eventually("current configuration reported at start") {
            await harness.tenant.managedObject(deviceID)?["c8y_Configuration"]?["config"] == "speed=1\n"
        }
        let id = try await harness.createOperation(["c8y_Configuration": ["config": "speed=2\n"]])
        #expect(try await harness.waitForEnd(id)["status"] == "SUCCESSFUL")
        #expect(try String(contentsOfFile: file, encoding: .utf8) == "speed=2\n")
        #expect(try String(contentsOfFile: file + ".previous", encoding: .utf8) == "speed=1\n")
        #expect(try String(contentsOfFile: counter, encoding: .utf8) == "applied\n")
        let mode = try FileManager.default.attributesOfItem(atPath: file)[.posixPermissions] as? Int
        #expect(mode == 0o640)
        #expect(await harness.tenant.managedObject(deviceID)?["c8y_Configuration"]?["config"] == "speed=2\n")
        await harness.close()
    }

    @Test func failedApplyRestoresThePreviousFile() async throws {
        let harness = try await Harness()
        let (file, counter) = prepare(harness, apply: "echo tried >> \"$0.count\"\necho 'speed must be 1' >&2\nexit 2")
        try await harness.startAgent()
        let id = try await harness.createOperation(["c8y_Configuration": ["config": "speed=9\n"]])
        let operation = try await harness.waitForEnd(id)
        #expect(operation["status"] == "FAILED")
        let reason = operation["failureReason"]?.stringValue ?? ""
        #expect(reason.contains("applying the configuration failed: exited with code 2: speed must be 1"))
        #expect(reason.contains("restored"))
        #expect(try String(contentsOfFile: file, encoding: .utf8) == "speed=1\n")
        #expect(try String(contentsOfFile: counter, encoding: .utf8) == "tried\ntried\n")
        await harness.close()
    }

    @Test func oversizeConfigurationIsRefused() async throws {
        let harness = try await Harness()
        let (file, _) = prepare(harness, maxBytes: 16)
        try await harness.startAgent()
        let id = try await harness.createOperation(["c8y_Configuration": ["config": .string(String(repeating: "x", count: 17))]])
        let operation = try await harness.waitForEnd(id)
        #expect(operation["status"] == "FAILED")
        #expect(operation["failureReason"] == "the configuration is 17 bytes; this device accepts at most 16")
        #expect(try String(contentsOfFile: file, encoding: .utf8) == "speed=1\n")
        await harness.close()
    }

    @Test func sendConfigurationReportsTheFile() async throws {
        let harness = try await Harness()
        let (file, _) = prepare(harness)
        try await harness.startAgent()
        let deviceID = try #require(await harness.deviceID())
        #expect(await harness.advertised() == ["c8y_Configuration", "c8y_SendConfiguration"])
        write("speed=5\n", to: file)
        let id = try await harness.createOperation(["c8y_SendConfiguration": [:]])
        #expect(try await harness.waitForEnd(id)["status"] == "SUCCESSFUL")
        #expect(await harness.tenant.managedObject(deviceID)?["c8y_Configuration"]?["config"] == "speed=5\n")
        await harness.close()
    }

    @Test func missingConfigTextFails() async throws {
        let harness = try await Harness()
        _ = prepare(harness)
        try await harness.startAgent()
        let id = try await harness.createOperation(["c8y_Configuration": ["config": 5]])
        #expect(try await harness.waitForEnd(id)["failureReason"] == "c8y_Configuration.config is missing or not text")
        await harness.close()
    }
}
