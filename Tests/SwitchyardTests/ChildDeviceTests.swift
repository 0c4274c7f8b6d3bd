import Foundation
import JSONSupport
import Sandbox
import Testing
@testable import Switchyard

/// Seed step 5: children declared in the configuration or discovered by a command, each with its own handlers.
@Suite(.closesHarnesses, .timeLimit(.minutes(2)))
struct ChildDeviceTests {
    @Test func childGetsItsOwnSupportedOperationsAndItsOperationsReachItsHandler() async throws {
        let harness = try await Harness()
        let child = harness.externalId + "-child"
        harness.children = [.init(externalId: child, name: "Child sensor", type: "acme_Sensor")]
        harness.script("ok.sh", "exit 0")
        harness.declare("ok.yaml", "operation: acme_Ok\nexec: {command: [../bin/ok.sh]}\n")
        let seen = harness.root + "/target"
        harness.script("target.sh", "echo \"$SWITCHYARD_DEVICE_ID $SWITCHYARD_EXTERNAL_ID\" > '\(seen)'")
        harness.declare("\(child)/target.yaml", "operation: acme_Target\nexec: {command: [../../bin/target.sh]}\n")
        harness.declare("\(child)/message.yaml", "operation: c8y_Message\nswift: Message\n")
        try await harness.startAgent()

        let agentID = try #require(await harness.deviceID())
        var childID: String?
        try await eventually("child registered and linked") {
            childID = await harness.tenant.device(externalId: child)?["id"]?.idValue
            guard let childID else { return false }
            let references = await harness.tenant.managedObject(agentID)?["childDevices"]?["references"]?.arrayValue ?? []
            return references.contains { $0["managedObject"]?["id"]?.idValue == childID }
        }
        let childKey = try #require(childID)
        let childDevice = try #require(await harness.tenant.managedObject(childKey))
        #expect(childDevice["c8y_SupportedOperations"] == ["acme_Target", "c8y_Message"])
        #expect(childDevice["name"] == "Child sensor")
        #expect(childDevice["com_cumulocity_model_Agent"] == nil)
        #expect(await harness.advertised() == ["acme_Ok"])

        let created = try #require(await harness.tenant.createOperation(["deviceId": .string(childID ?? ""), "acme_Target": [:]]))
        let id = try #require(created["id"]?.idValue)
        #expect(try await harness.waitForEnd(id)["status"] == "SUCCESSFUL")
        #expect(try String(contentsOfFile: seen, encoding: .utf8) == "\(childID ?? "") \(child)\n")

        // The agent's own handler is not the child's.
        let other = try #require(await harness.tenant.createOperation(["deviceId": .string(childID ?? ""), "acme_Ok": [:]]))
        let otherID = try #require(other["id"]?.idValue)
        let refused = try await harness.waitForEnd(otherID)
        #expect(refused["status"] == "FAILED")
        #expect(refused["failureReason"] == "no handler for acme_Ok")
        await harness.close()
    }

    @Test func discoveredChildrenAreRegisteredAndARestartDoesNotDuplicateThem() async throws {
        let harness = try await Harness()
        let found = harness.externalId + "-found"
        let discover = harness.script("discover.sh", "echo '[{\"externalId\": \"\(found)\", \"name\": \"Found\"}, {\"bad\": 1}]'")
        harness.childDiscovery = [discover]
        try await harness.startAgent()
        try await eventually("discovered child registered") { await harness.tenant.device(externalId: found) != nil }
        let id = await harness.tenant.device(externalId: found)?["id"]
        await harness.stopAgent()
        let reconciled = harness.logs.count("reconciled with the platform")
        try await harness.startAgent()
        // Children are registered before the subscription, so a reconciliation after it means they were.
        try await eventually("past child registration") { harness.logs.count("reconciled with the platform") > reconciled }
        #expect(await harness.tenant.device(externalId: found)?["id"] == id)
        let agentID = try #require(await harness.deviceID())
        let references = await harness.tenant.managedObject(agentID)?["childDevices"]?["references"]?.arrayValue ?? []
        #expect(references.count == 1)
        await harness.close()
    }

    @Test func childrenInTheConfigurationFile() throws {
        let dir = temporaryDirectory()
        defer { FileSystem.removeTree(dir) }
        write("""
            c8y: {url: https://x}
            device: {externalId: gw}
            auth: {username: u, password: p}
            children:
              - {externalId: s1, name: Sensor 1}
              - externalId: s2
            childDiscovery: [bin/discover, --all]
            """, to: dir + "/c.yaml")
        let configuration = try AgentConfiguration.load(file: dir + "/c.yaml", environment: [:])
        #expect(configuration.children == [.init(externalId: "s1", name: "Sensor 1"), .init(externalId: "s2")])
        #expect(configuration.childDiscovery == [dir + "/bin/discover", "--all"])

        write("c8y: {url: https://x}\ndevice: {externalId: gw}\nauth: {username: u, password: p}\nchildren: [{name: nameless}]\n", to: dir + "/bad.yaml")
        #expect { _ = try AgentConfiguration.load(file: dir + "/bad.yaml", environment: [:]) } throws: { "\($0)".contains("needs an externalId") }
    }
}
