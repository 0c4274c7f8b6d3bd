import Cumulocity
import Foundation
import JSONSupport
import Logging
import Sandbox
import Testing

/// The sandbox read back as a platform user reads a tenant: collections with filters, paging and
/// totals, resources by id, the current tenant and user (issue 12, §1 in part).
struct SandboxQueryTests {
    func withSandbox(_ body: (PlatformClient, SandboxServer) async throws -> Void) async throws {
        let server = try await SandboxServer.start(logger: Logger(label: "sandbox", factory: { _ in SwiftLogNoOpLogHandler() }))
        let transport = try CurlTransport()
        let settings = server.tenant.settings
        let client = PlatformClient(baseURL: server.url, transport: transport,
                                    credentials: BasicCredentials(tenant: settings.tenantID, username: settings.username,
                                                                  password: settings.password))
        do {
            try await body(client, server)
        } catch {
            transport.shutdown()
            await server.stop()
            throw error
        }
        transport.shutdown()
        await server.stop()
    }

    func get(_ client: PlatformClient, _ path: String, _ query: [(String, String)] = []) async throws -> JSONValue {
        try await client.send("GET", path, query: query, accept: MediaType.json).json ?? .null
    }

    @Test func collectionsFilterPageAndCount() async throws {
        try await withSandbox { client, _ in
            let device = try await client.createManagedObject(["name": "d", "c8y_IsDevice": [:], "type": "acme_Gateway"])["id"]?.idValue ?? ""
            _ = try await client.createManagedObject(["name": "other"])
            for day in 1...7 {
                _ = try await client.send("POST", "/event/events", body: ["source": ["id": .string(device)], "type": day % 2 == 0 ? "even" : "odd",
                                                                          "text": .string("day \(day)"), "time": .string("2026-11-0\(day)T12:00:00.000Z")],
                                          accept: MediaType.event)
            }
            let devices = try await get(client, "/inventory/managedObjects", [("fragmentType", "c8y_IsDevice"), ("withTotalElements", "true")])
            #expect(devices["managedObjects"]?.arrayValue?.map { $0["id"]?.idValue } == [device])
            #expect(devices["statistics"]?["totalElements"] == 1)
            #expect(try await get(client, "/inventory/managedObjects", [("type", "acme_Gateway")])["managedObjects"]?.arrayValue?.count == 1)
            #expect(try await get(client, "/inventory/managedObjects", [("text", "OTHER")])["managedObjects"]?.arrayValue?.count == 1)

            // Newest first by default; pages of two; totals on request; a date range; revert.
            let first = try await get(client, "/event/events", [("source", device), ("pageSize", "2"), ("withTotalPages", "true")])
            #expect(first["events"]?.arrayValue?.map { $0["text"]?.stringValue } == ["day 7", "day 6"])
            #expect(first["statistics"]?["totalPages"] == 4)
            let last = try await get(client, "/event/events", [("source", device), ("pageSize", "2"), ("currentPage", "4")])
            #expect(last["events"]?.arrayValue?.map { $0["text"]?.stringValue } == ["day 1"])
            #expect(try await get(client, "/event/events", [("source", device), ("currentPage", "5"), ("pageSize", "2")])["events"]?.arrayValue?.isEmpty == true)
            let range = try await get(client, "/event/events", [("dateFrom", "2026-11-03"), ("dateTo", "2026-11-05"), ("revert", "true"),
                                                                ("type", "odd"), ("unknownParameter", "ignored")])
            #expect(range["events"]?.arrayValue?.map { $0["text"]?.stringValue } == ["day 3"])
        }
    }

    @Test func resourcesByIdAndWhoIsAsking() async throws {
        try await withSandbox { client, server in
            let device = try await client.createManagedObject(["name": "d", "c8y_IsDevice": [:]])["id"]?.idValue ?? ""
            try await client.registerExternalID(type: "c8y_Serial", externalId: "gw-1", managedObjectID: device)
            let ids = try await get(client, "/identity/globalIds/\(device)/externalIds")
            #expect(ids["externalIds"]?.arrayValue?.first?["externalId"] == "gw-1")
            let alarm = try await client.createAlarm(["source": ["id": .string(device)], "type": "acme_A", "severity": "MAJOR", "text": "t",
                                                      "time": "2026-11-01T00:00:00.000Z"])
            let id = try #require(alarm["id"]?.idValue)
            #expect(try await get(client, "/alarm/alarms/\(id)")["type"] == "acme_A")
            #expect(try await get(client, "/alarm/alarms", [("severity", "MAJOR")])["alarms"]?.arrayValue?.count == 1)
            #expect(try await get(client, "/alarm/alarms", [("severity", "MINOR")])["alarms"]?.arrayValue?.isEmpty == true)
            await #expect { _ = try await get(client, "/event/events/nope") } throws: { error in
                (error as? PlatformError)?.status == 404 && (error as? PlatformError)?.bodyExcerpt.contains("\"error\":\"event/Not Found\"") == true
            }
            #expect(try await get(client, "/tenant/currentTenant")["name"] == .string(server.tenant.settings.tenantID))
            #expect(try await get(client, "/user/currentUser")["userName"] == .string(server.tenant.settings.username))
        }
    }

    /// The platform user may cancel a PENDING operation (PENDING → FAILED); a device may not.
    /// Operations are selected by fragment and dates, oldest first unless revert, and deleted by filter.
    @Test func operatorsCancelSelectAndDeleteOperations() async throws {
        try await withSandbox { device, server in
            let settings = server.tenant.settings
            let platform = PlatformClient(baseURL: server.url, transport: device.transport,
                                          credentials: BasicCredentials(tenant: settings.tenantID, username: settings.platformUsername,
                                                                        password: settings.platformPassword))
            let target = try await platform.createManagedObject(["name": "d", "c8y_IsDevice": [:]])["id"]?.idValue ?? ""
            var ids: [String] = []
            for fragment in ["c8y_Restart", "c8y_Message", "acme_Custom"] {
                ids.append(try await platform.createOperation(["deviceId": .string(target), fragment: [:]])["id"]?.idValue ?? "")
            }
            await #expect { _ = try await device.send("PUT", "/devicecontrol/operations/\(ids[0])", body: ["status": "FAILED"], accept: MediaType.operation) }
                throws: { ($0 as? PlatformError)?.status == 422 }
            let cancelled = try await platform.send("PUT", "/devicecontrol/operations/\(ids[0])",
                                                    body: ["status": "FAILED", "failureReason": "cancelled by the operator"], accept: MediaType.operation).json
            #expect(cancelled?["status"] == "FAILED")
            let messages = try await get(platform, "/devicecontrol/operations", [("deviceId", target), ("fragmentType", "c8y_Message")])
            #expect(messages["operations"]?.arrayValue?.map { $0["id"]?.idValue } == [ids[1]])
            let newestFirst = try await get(platform, "/devicecontrol/operations", [("deviceId", target), ("revert", "true"), ("withTotalElements", "true")])
            #expect(newestFirst["operations"]?.arrayValue?.map { $0["id"]?.idValue } == ids.reversed())
            #expect(newestFirst["statistics"]?["totalElements"] == 3)
            _ = try await platform.send("DELETE", "/devicecontrol/operations", query: [("deviceId", target), ("status", "PENDING")], accept: MediaType.json)
            #expect(try await get(platform, "/devicecontrol/operations", [("deviceId", target)])["operations"]?.arrayValue?.map { $0["id"]?.idValue } == [ids[0]])
            _ = try await platform.send("DELETE", "/inventory/managedObjects/\(target)", accept: MediaType.json)
            await #expect { _ = try await platform.managedObject(id: target) } throws: { ($0 as? PlatformError)?.status == 404 }
        }
    }


    /// References, external ids, events and alarms change and go as the platform's API says.
    @Test func referencesIdsEventsAndAlarmsChangeAndGo() async throws {
        try await withSandbox { client, _ in
            let parent = try await client.createManagedObject(["name": "gw", "c8y_IsDevice": [:]])["id"]?.idValue ?? ""
            let child = try await client.createManagedObject(["name": "sensor", "c8y_IsDevice": [:]])["id"]?.idValue ?? ""
            let asset = try await client.createManagedObject(["name": "room"])["id"]?.idValue ?? ""
            try await client.addChildDevice(parentID: parent, childID: child)
            _ = try await client.send("POST", "/inventory/managedObjects/\(asset)/childAssets", body: ["managedObject": ["id": .string(parent)]],
                                      accept: MediaType.managedObjectReference)
            #expect(try await get(client, "/inventory/managedObjects/\(parent)/childDevices")["references"]?.arrayValue?.first?["managedObject"]?["id"]?.idValue == child)
            #expect(try await get(client, "/inventory/managedObjects/\(asset)/childAssets")["references"]?.arrayValue?.count == 1)
            _ = try await client.send("DELETE", "/inventory/managedObjects/\(parent)/childDevices/\(child)", accept: MediaType.json)
            #expect(try await get(client, "/inventory/managedObjects/\(parent)/childDevices")["references"]?.arrayValue?.isEmpty == true)

            try await client.registerExternalID(type: "c8y_Serial", externalId: "gw-9", managedObjectID: parent)
            _ = try await client.send("DELETE", "/identity/externalIds/c8y_Serial/gw-9", accept: MediaType.json)
            #expect(try await client.managedObjectID(externalIdType: "c8y_Serial", externalId: "gw-9") == nil)

            let event = try await client.send("POST", "/event/events", body: ["source": ["id": .string(parent)], "type": "acme_E", "text": "before",
                                                                              "time": "2026-11-01T00:00:00.000Z"], accept: MediaType.event).json
            let eventID = try #require(event?["id"]?.idValue)
            _ = try await client.send("PUT", "/event/events/\(eventID)", body: ["text": "after", "type": "not changed"], accept: MediaType.event)
            let changed = try await get(client, "/event/events/\(eventID)")
            #expect(changed["text"] == "after" && changed["type"] == "acme_E")
            _ = try await client.send("DELETE", "/event/events/\(eventID)", accept: MediaType.json)
            await #expect { _ = try await get(client, "/event/events/\(eventID)") } throws: { ($0 as? PlatformError)?.status == 404 }

            for type in ["acme_A", "acme_B"] {
                _ = try await client.createAlarm(["source": ["id": .string(parent)], "type": .string(type), "severity": "MAJOR", "text": "t",
                                                  "time": "2026-11-01T00:00:00.000Z"])
            }
            await #expect { _ = try await client.send("PUT", "/alarm/alarms", body: ["status": "CLEARED"], accept: MediaType.alarm) }
                throws: { ($0 as? PlatformError)?.status == 422 }
            _ = try await client.send("PUT", "/alarm/alarms", query: [("source", parent), ("status", "ACTIVE")], body: ["status": "CLEARED"],
                                      accept: MediaType.alarm)
            #expect(try await client.alarms(source: parent, status: "ACTIVE").isEmpty)
            #expect(try await client.alarms(source: parent, status: "CLEARED").count == 2)
        }
    }

}
