import Foundation
import JSONSupport
import Sandbox
import Testing
@testable import Switchyard

/// A compiled handler built as its own executable (HandlerKitRunner) and declared with
/// `swift: {executable: …}`: the same HandlerKit calls reach the platform as in-process, through
/// directives and the plugin proxy (issue 15 §1).
@Suite(.closesHarnesses, .timeLimit(.minutes(2)))
struct HandlerRunnerTests {
    /// The probe traps in one test: without SWIFT_BACKTRACE=enable=no, Swift's backtracer would
    /// symbolicate the debug binary for seconds on both cores, starving every other test's agent.
    func declare(_ harness: Harness, options: String = "{greeting: hello}") throws {
        let fixture = try builtBinary("switchyard-runner-fixture")
        let bootID = harness.root + "/boot_id"
        write("boot-1\n", to: bootID)
        let reboot = harness.script("reboot.sh", "touch \"$0.done\"")
        harness.declare("probe.yaml", """
            operation: acme_Probe
            swift: {executable: \(fixture), env: {SWIFT_BACKTRACE: "enable=no"}}
            resumable: true
            options: \(options)
            ---
            operation: c8y_Message
            swift: {executable: \(fixture)}
            ---
            operation: c8y_Restart
            swift: Restart
            resumable: true
            options: {command: [\(reboot)], bootIdFile: \(bootID), restartTimeout: 30}
            """)
    }

    @Test func everyContextCallCrossesTheProcessBoundary() async throws {
        let harness = try await Harness()
        try declare(harness)
        let binary = await harness.tenant.addBinary(Array("artifact bytes".utf8))
        try await harness.startAgent()
        let deviceID = try #require(await harness.deviceID())
        try await eventually("reported at start with phase report") {
            await harness.tenant.managedObject(deviceID)?["acme_ProbeReport"] == ["greeting": "hello"]
        }
        let id = try await harness.createOperation(["acme_Probe": ["url": .string(harness.server.url + "/inventory/binaries/\(binary)")]])
        let operation = try await harness.waitForEnd(id)
        #expect(operation["status"] == "SUCCESSFUL", "\(operation)")
        let result = operation["acme_Probe"]
        #expect(result?["state"] == "saved")
        #expect(result?["output"] == "from a command\n")
        #expect(result?["size"] == 14)
        #expect(result?["sha256"] == "4659fc0570122b0e0aa14f4ff7c261b1fe51795a01ba79963f462ebf40d7520d")
        let attached = try #require(result?["attached"]?.stringValue)
        #expect(attached.hasPrefix(harness.server.url + "/event/events/"), "the URL is the tenant's, not the proxy's: \(attached)")
        let eventID = try #require(attached.split(separator: "/").dropLast().last.map(String.init))
        #expect(await harness.tenant.eventBinary(eventID)?.bytes == Array("artifact bytes".utf8))
        #expect(await harness.tenant.managedObject(deviceID)?["acme_Probe"] == ["greeting": "hello"])
        #expect(await harness.tenant.measurementList(type: "acme_ProbeMeasurement").count == 1)
        #expect(await harness.tenant.eventList(type: "acme_ProbeEvent").count == 1)
        #expect(await harness.tenant.alarmList().contains { $0["type"] == "acme_ProbeAlarm" && $0["severity"] == "MINOR" })
        let log = try String(contentsOfFile: harness.state + "/operations/\(id)/execute.log", encoding: .utf8)
        #expect(log.contains("probe: hello, phase execute"))

        // The same standard handler as in-process, out of process.
        let message = try await harness.waitForEnd(try await harness.createOperation(["c8y_Message": ["text": "hi"]]))
        #expect(message["status"] == "SUCCESSFUL")
        #expect(message["c8y_Message"] == ["text": "hi", "delivered": true])
        await harness.close()
    }

    @Test func aRestartIsAskedForAndTheHandlerResumesAfterIt() async throws {
        let harness = try await Harness()
        try declare(harness)
        try await harness.startAgent()
        let id = try await harness.createOperation(["acme_Probe": ["restart": true]])
        try await eventually("device restart requested") { FileManager.default.fileExists(atPath: harness.root + "/bin/reboot.sh.done") }
        await harness.stopAgent()
        write("boot-2\n", to: harness.root + "/boot_id")
        try await harness.startAgent()
        let operation = try await harness.waitForEnd(id)
        #expect(operation["status"] == "SUCCESSFUL", "\(operation)")
        #expect(operation["acme_Probe"] == ["resumed": true, "state": "saved"])
        await harness.close()
    }

    @Test func badOptionsAndATrapFailTheOperationNotTheAgent() async throws {
        let harness = try await Harness()
        try declare(harness, options: "{greting: typo}")
        try await harness.startAgent()
        let refused = try await harness.waitForEnd(try await harness.createOperation(["acme_Probe": [:]]))
        #expect(refused["status"] == "FAILED")
        #expect(refused["failureReason"] == "options of Probe: options.greeting is required")
        await harness.stopAgent()
        try declare(harness)
        try await harness.startAgent()
        let trapped = try await harness.waitForEnd(try await harness.createOperation(["acme_Probe": ["crash": true]]))
        #expect(trapped["status"] == "FAILED")
        #expect(trapped["failureReason"]?.stringValue?.hasPrefix("killed by signal") == true, "\(trapped)")
        let after = try await harness.waitForEnd(try await harness.createOperation(["c8y_Message": ["text": "still here"]]))
        #expect(after["status"] == "SUCCESSFUL")
        await harness.close()
    }

    @Test func theDeclarationFormIsCheckedAndRoundTrips() throws {
        let directory = NSTemporaryDirectory() + "runner-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let fixture = try builtBinary("switchyard-runner-fixture")
        write("operation: acme_Probe\nswift: {executable: \(fixture), env: {A: b}}\noptions: {greeting: hi}\n", to: directory + "/a.yaml")
        write("operation: acme_Other\nswift: {executable: [\(fixture), --flag]}\n", to: directory + "/b.yaml")
        write("operation: acme_Third\nswift: {program: \(fixture)}\n", to: directory + "/c.yaml")
        let registry = Registry.load(directory: directory, catalog: [:])
        #expect(registry.declarations.map(\.handlerName) == ["swift:\(fixture)"])
        #expect(registry.declarations.first?.json["swift"] == ["executable": .string(fixture), "env": ["A": "b"], "gracePeriod": "5000ms"])
        #expect(registry.declarations.first?.json["options"] == ["greeting": "hi"])
        let problems = registry.problems.map(\.description).joined(separator: "\n")
        #expect(problems.contains("'swift.executable' is one program; its options go in 'options'"), "\(problems)")
        #expect(problems.contains("program"), "\(problems)")
    }
}
