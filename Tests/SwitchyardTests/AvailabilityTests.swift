import Foundation
import JSONSupport
import Sandbox
import Testing
@testable import Switchyard

/// c8y_RequiredAvailability and the heartbeat that keeps a quiet device AVAILABLE (issue 16 §4).
@Suite(.closesHarnesses, .timeLimit(.minutes(2)))
struct AvailabilityTests {
    @Test func theIntervalIsWrittenAndAQuietDeviceAndChildStayAvailable() async throws {
        let harness = try await Harness()
        harness.children = [.init(externalId: harness.externalId + "-child", name: "Child", requiredInterval: 2)]
        var configuration = harness.configuration
        configuration.device.requiredInterval = 1
        var tuning = Harness.tuning
        tuning.heartbeatAfter = .milliseconds(300)
        try await harness.startAgent(configuration, tuning: tuning, waitForRegistration: true)
        let deviceID = try #require(await harness.deviceID())
        #expect(await harness.tenant.managedObject(deviceID)?["c8y_RequiredAvailability"] == ["responseInterval": 1])
        let childID = try #require(await harness.tenant.device(externalId: harness.externalId + "-child")?["id"]?.idValue)
        #expect(await harness.tenant.managedObject(childID)?["c8y_RequiredAvailability"] == ["responseInterval": 2])
        // Nothing else to send: a heartbeat (an empty update) for each, and the platform counts it.
        try await eventually("heartbeats sent") {
            let agent = await harness.tenant.updates(of: deviceID).contains([:])
            let child = await harness.tenant.updates(of: childID).contains([:])
            return agent && child
        }
        #expect(await harness.tenant.managedObject(deviceID)?["c8y_Availability"]?["status"] == "AVAILABLE")
        #expect(await harness.tenant.managedObject(childID)?["c8y_Availability"]?["status"] == "AVAILABLE")
        await harness.stopAgent()

        // A changed interval is written at the next start.
        configuration.device.requiredInterval = 0
        try await harness.startAgent(configuration, tuning: tuning, waitForRegistration: true)
        try await eventually("interval updated") {
            await harness.tenant.managedObject(deviceID)?["c8y_RequiredAvailability"] == ["responseInterval": 0]
        }
        #expect(await harness.tenant.managedObject(deviceID)?["c8y_Availability"]?["status"] == "MAINTENANCE")
        await harness.close()
    }

    @Test func whatTheAgentSendsAnywayCountsAndNoHeartbeatIsAdded() async throws {
        let harness = try await Harness()
        // A plugin that sends a measurement: activity the platform counts, so no heartbeat is due.
        harness.declare("measure.yaml", """
            operation: acme_Measure
            exec: {command: [\(harness.script("measure.sh", "echo '{\"switchyard\": \"measurement\", \"type\": \"t\", \"fragments\": {\"c8y_T\": {\"T\": {\"value\": 1}}}}'"))]}
            """)
        var configuration = harness.configuration
        configuration.device.requiredInterval = 1
        var tuning = Harness.tuning
        tuning.heartbeatAfter = .seconds(1)
        try await harness.startAgent(configuration, tuning: tuning, waitForRegistration: true)
        let deviceID = try #require(await harness.deviceID())
        // Measurements for three times the quiet time, one at least every 250 ms.
        let started = ContinuousClock.now
        var count = 0
        while ContinuousClock.now - started < .seconds(3) {
            let id = try await harness.createOperation(["acme_Measure": [:]])
            #expect(try await harness.waitForEnd(id)["status"] == "SUCCESSFUL")
            count += 1
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(await harness.tenant.measurementList(type: "t").count == count)
        #expect(await harness.tenant.managedObject(deviceID)?["c8y_Availability"]?["status"] == "AVAILABLE")
        #expect(!(await harness.tenant.updates(of: deviceID).contains([:])), "no heartbeat while measurements keep the device available")
        await harness.close()
    }
}
