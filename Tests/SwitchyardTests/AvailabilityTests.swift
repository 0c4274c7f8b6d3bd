import Foundation
import JSONSupport
import Sandbox
import Logging
import Testing
import Cumulocity
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
        // A plugin that sends a measurement every 200 ms for 6 s: activity the platform counts, so
        // no heartbeat is due while it runs (the quiet time is 5 s, so that a loaded machine's delays
        // stay below it); once it stops, one is.
        let script = harness.script("measure.sh", """
            i=0
            while [ $i -lt 30 ]; do
              echo '{"switchyard": "measurement", "type": "t", "fragments": {"c8y_T": {"T": {"value": 1}}}}'
              i=$((i + 1)); sleep 0.2
            done
            """)
        harness.declare("measure.yaml", "operation: acme_Measure\nexec: {command: [\(script)]}\n")
        var configuration = harness.configuration
        configuration.device.requiredInterval = 1
        var tuning = Harness.tuning
        tuning.heartbeatAfter = .seconds(5)
        try await harness.startAgent(configuration, tuning: tuning, waitForRegistration: true)
        let deviceID = try #require(await harness.deviceID())
        func heartbeats() async -> Int { await harness.tenant.updates(of: deviceID).count { $0 == [:] } }
        let id = try await harness.createOperation(["acme_Measure": [:]])
        // Counted from the first measurement: before it, start-up on a loaded machine may be quiet long enough.
        try await eventually("the first measurement") { await harness.tenant.measurementList(type: "t").count > 0 }
        let before = await heartbeats()
        #expect(try await harness.waitForEnd(id)["status"] == "SUCCESSFUL")
        #expect(await harness.tenant.measurementList(type: "t").count == 30)
        #expect(await heartbeats() == before, "no heartbeat while measurements keep the device available")
        try await eventually("a heartbeat once the device is quiet") { await heartbeats() > before }
        #expect(await harness.tenant.managedObject(deviceID)?["c8y_Availability"]?["status"] == "AVAILABLE")
        await harness.close()
    }

    @Test func aHeartbeatIsDueOnlyAfterTheQuietTime() async throws {
        let transport = try CurlTransport()
        let client = PlatformClient(baseURL: "https://unused.invalid", transport: transport,
                                    credentials: BasicCredentials(tenant: nil, username: "u", password: "p"))
        let heartbeat = Heartbeat(client: client, devices: [("a", 2), ("b", 10), ("maintenance", 0), ("unmonitored", nil)],
                                  quietOverride: nil, logger: Logger(label: "test"))
        #expect(heartbeat.devices.map(\.id) == ["a", "b"])
        let start = ContinuousClock.now
        #expect(heartbeat.due(at: start + .seconds(59), startedAt: start).isEmpty)
        #expect(heartbeat.due(at: start + .seconds(60), startedAt: start).map(\.id) == ["a"])  // half of 2 minutes
        client.activity.record("a", at: start + .seconds(50))
        #expect(heartbeat.due(at: start + .seconds(100), startedAt: start).isEmpty)
        #expect(heartbeat.due(at: start + .seconds(300), startedAt: start).map(\.id) == ["a", "b"])
    }
}
