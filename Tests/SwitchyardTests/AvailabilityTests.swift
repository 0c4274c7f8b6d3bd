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

    /// What the outbox delivers counts as the device's activity (so no heartbeat is due after it):
    /// events, measurements, alarms and updates of the device's own managed object, over real HTTP;
    /// an operation status update does not, as for the platform.
    @Test func whatTheAgentSendsAnywayCountsAndStatusUpdatesDoNot() async throws {
        let harness = try await Harness()
        let settings = harness.tenant.settings
        let transport = try CurlTransport()
        defer { transport.shutdown() }
        let client = PlatformClient(baseURL: harness.server.url, transport: transport,
                                    credentials: BasicCredentials(tenant: settings.tenantID, username: settings.username, password: settings.password))
        let device = try #require(try await client.createManagedObject(["name": "d", "c8y_IsDevice": [:]])["id"]?.idValue)
        let operation = try #require(await harness.tenant.createOperation(["deviceId": .string(device), "acme_X": [:]])?["id"]?.idValue)
        try await client.send(.updateOperation(id: operation, update: ["status": "EXECUTING"]))
        #expect(client.activity.lastMessage(of: device) == nil)
        var previous = ContinuousClock.now
        let source: JSONValue = ["id": .string(device)]
        for request in [
            PlatformRequest.createMeasurement(["source": source, "type": "t", "time": "2026-12-01T00:00:00Z", "c8y_T": ["T": ["value": 1]]]),
            .createEvent(["source": source, "type": "t", "text": "e", "time": "2026-12-01T00:00:00Z"]),
            .createAlarm(["source": source, "type": "t", "text": "a", "severity": "MINOR", "time": "2026-12-01T00:00:00Z"]),
            .updateManagedObject(id: device, fragments: [:]),
        ] {
            try await client.send(request)
            let last = try #require(client.activity.lastMessage(of: device), "\(request) not counted")
            #expect(last >= previous, "\(request) not counted")
            previous = last
        }
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
