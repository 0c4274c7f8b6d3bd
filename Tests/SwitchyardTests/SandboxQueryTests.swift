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

    func platform(_ server: SandboxServer, _ device: PlatformClient) -> PlatformClient {
        let settings = server.tenant.settings
        return PlatformClient(baseURL: server.url, transport: device.transport,
                              credentials: BasicCredentials(tenant: settings.tenantID, username: settings.platformUsername,
                                                            password: settings.platformPassword))
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
        try await withSandbox { client, server in
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
            let platform = platform(server, client)
            await #expect { _ = try await platform.send("PUT", "/alarm/alarms", body: ["status": "CLEARED"], accept: MediaType.alarm) }
                throws: { ($0 as? PlatformError)?.status == 422 }
            _ = try await platform.send("PUT", "/alarm/alarms", query: [("source", parent), ("status", "ACTIVE")], body: ["status": "CLEARED"],
                                        accept: MediaType.alarm)
            #expect(try await client.alarms(source: parent, status: "ACTIVE").isEmpty)
            #expect(try await client.alarms(source: parent, status: "CLEARED").count == 2)
        }
    }

    /// A multipart body as `c8y-api` (requests) builds it: an optional `object` part and a `file` part.
    static func multipart(object: String?, file: [UInt8], type: String, boundary: String = "sy-boundary-42") -> (String, [UInt8]) {
        var body: [UInt8] = []
        if let object { body += Array("--\(boundary)\r\nContent-Disposition: form-data; name=\"object\"\r\n\r\n\(object)\r\n".utf8) }
        body += Array("--\(boundary)\r\nContent-Disposition: form-data; name=\"file\"; filename=\"file\"\r\nContent-Type: \(type)\r\n\r\n".utf8)
        body += file + Array("\r\n--\(boundary)--\r\n".utf8)
        return ("multipart/form-data; boundary=\(boundary)", body)
    }

    /// Files as the platform stores them: multipart upload with metadata, listing, whole and ranged
    /// downloads, replacement, deletion; one file per event (409 for a second), read back and removed;
    /// broken uploads refused with the platform's error shape.
    @Test func binariesAndEventFiles() async throws {
        try await withSandbox { client, server in
            let content = Array("line one\nline two\n".utf8)
            let (type, body) = Self.multipart(object: #"{"name":"notes.txt","type":"text/plain"}"#, file: content, type: "text/plain")
            let created = try await client.forward("POST", "/inventory/binaries", headers: [("Content-Type", type), ("Accept", "application/json")], body: body)
            #expect(created.status == 201)
            let info = try JSONValue.parse(created.body)
            let id = try #require(info["id"]?.idValue)
            #expect(info["name"] == "notes.txt" && info["contentType"] == "text/plain" && info["length"] == .int(Int64(content.count)))
            #expect(info["c8y_IsBinary"] != nil && info["owner"] == .string(server.tenant.settings.username))
            #expect(try await get(client, "/inventory/binaries", [("type", "text/plain")])["managedObjects"]?.arrayValue?.map { $0["id"]?.idValue } == [id])
            let whole = try await client.forward("GET", "/inventory/binaries/\(id)", headers: [], body: nil)
            #expect(whole.body == content && whole.headers["content-type"] == "text/plain")
            let part = try await client.forward("GET", "/inventory/binaries/\(id)", headers: [("Range", "bytes=5-7")], body: nil)
            #expect(part.status == 206 && part.body == Array("one".utf8) && part.headers["content-range"] == "bytes 5-7/\(content.count)")
            let replaced = try await client.forward("PUT", "/inventory/binaries/\(id)", headers: [("Content-Type", "text/plain")], body: Array("new".utf8))
            #expect(try replaced.status == 201 && JSONValue.parse(replaced.body)["length"] == 3)
            #expect(try await client.forward("DELETE", "/inventory/binaries/\(id)", headers: [], body: nil).status == 204)
            #expect(try await client.forward("GET", "/inventory/binaries/\(id)", headers: [], body: nil).status == 404)

            // Refused uploads: no boundary, no file part, an object part that is not JSON.
            for (contentType, payload) in [("multipart/form-data", body),
                                           (type, Array("--sy-boundary-42--\r\n".utf8)),
                                           (Self.multipart(object: "{not json", file: content, type: "text/plain"))] {
                let refused = try await client.forward("POST", "/inventory/binaries", headers: [("Content-Type", contentType)], body: payload)
                #expect(refused.status == 400, "\(String(decoding: refused.body, as: UTF8.self))")
                let error = try JSONValue.parse(refused.body)
                #expect(error["error"] == "general/invalidBody")
            }

            let device = try await client.createManagedObject(["name": "d", "c8y_IsDevice": [:]])["id"]?.idValue ?? ""
            let event = try await client.send("POST", "/event/events", body: ["source": ["id": .string(device)], "type": "c8y_Logfile", "text": "log",
                                                                              "time": "2026-11-01T00:00:00.000Z"], accept: MediaType.event).json
            let eventID = try #require(event?["id"]?.idValue)
            let (fileType, fileBody) = Self.multipart(object: nil, file: content, type: "text/plain")
            let attached = try await client.forward("POST", "/event/events/\(eventID)/binaries", headers: [("Content-Type", fileType), ("Accept", "application/json")],
                                                    body: fileBody)
            #expect(try attached.status == 201 && JSONValue.parse(attached.body)["source"] == .string(eventID))
            #expect(try await client.forward("POST", "/event/events/\(eventID)/binaries", headers: [("Content-Type", "text/plain")], body: content).status == 409)
            #expect(try await get(client, "/event/events/\(eventID)")["c8y_IsBinary"]?["length"] == .int(Int64(content.count)))
            #expect(try await client.forward("GET", "/event/events/\(eventID)/binaries", headers: [], body: nil).body == content)
            #expect(try await client.forward("PUT", "/event/events/\(eventID)/binaries", headers: [("Content-Type", "text/plain")], body: Array("x".utf8)).status == 201)
            #expect(await server.tenant.eventBinary(eventID)?.bytes == Array("x".utf8))
            #expect(try await client.forward("DELETE", "/event/events/\(eventID)/binaries", headers: [], body: nil).status == 204)
            #expect(try await get(client, "/event/events/\(eventID)")["c8y_IsBinary"] == nil)
            #expect(try await client.forward("GET", "/event/events/\(eventID)/binaries", headers: [], body: nil).status == 404)
            #expect(try await client.forward("POST", "/event/events/nope/binaries", headers: [("Content-Type", "text/plain")], body: content).status == 404)
        }
    }

    /// Device users reach what a device may: they change only what they own, and may not delete
    /// operations, change alarms in bulk or manage users; the platform user may.
    @Test func devicesReachOnlyWhatTheyMay() async throws {
        try await withSandbox { device, server in
            let platform = platform(server, device)
            let owned = try await platform.createManagedObject(["name": "operator's group"])["id"]?.idValue ?? ""
            let mine = try await device.createManagedObject(["name": "mine", "c8y_IsDevice": [:]])["id"]?.idValue ?? ""
            #expect(try await platform.managedObject(id: mine)["owner"] == .string(server.tenant.settings.username))
            let requests: [(String, String, JSONValue?)] = [("PUT", "/inventory/managedObjects/\(owned)", JSONValue.object(["x": 1])),
                                         ("DELETE", "/inventory/managedObjects/\(owned)", nil),
                                         ("DELETE", "/devicecontrol/operations", nil),
                                         ("PUT", "/alarm/alarms", ["status": "CLEARED"]),
                                         ("GET", "/user/\(server.tenant.settings.tenantID)/users", nil)]
            for (method, path, body) in requests {
                let answer = try await device.forward(method, path + (path == "/alarm/alarms" ? "?source=\(mine)" : ""),
                                                      headers: [("Content-Type", "application/json")], body: body?.encoded())
                #expect(answer.status == 403, "\(method) \(path)")
                let error = try JSONValue.parse(answer.body)
                #expect(error["error"] == "security/Forbidden")
            }
            try await device.updateManagedObject(id: mine, fragments: ["c8y_Hardware": ["model": "x"]])
            #expect(try await platform.forward("PUT", "/inventory/managedObjects/\(mine)", headers: [("Content-Type", "application/json")],
                                               body: JSONValue.object(["y": 1]).encoded()).status == 200)
            #expect(try await get(device, "/user/currentUser")["effectiveRoles"]?.arrayValue?.contains { $0["id"] == "ROLE_INVENTORY_ADMIN" } == false)
            #expect(try await get(platform, "/user/currentUser")["userName"] == .string(server.tenant.settings.platformUsername))
            #expect(try await platform.forward("DELETE", "/inventory/managedObjects/\(owned)", headers: [], body: nil).status == 204)

            // A wrong password: 401 in the platform's error shape, and no browser prompt (no WWW-Authenticate).
            let stranger = PlatformClient(baseURL: server.url, transport: device.transport,
                                          credentials: BasicCredentials(tenant: server.tenant.settings.tenantID, username: "admin", password: "wrong"))
            let refused = try await stranger.forward("GET", "/inventory/managedObjects", headers: [], body: nil)
            let error = try JSONValue.parse(refused.body)
            #expect(refused.status == 401 && error["error"] == "security/Unauthorized" && error["info"] != nil)
            #expect(refused.headers["www-authenticate"] == nil)
        }
    }

    /// The inventory query forms c8y-api builds select what they say; other forms are refused, not guessed.
    @Test func inventoryQueriesAsTheClientBuildsThem() async throws {
        try await withSandbox { client, _ in
            let gateway = try await client.createManagedObject(["name": "Gateway 7", "type": "acme_Gateway", "c8y_IsDevice": [:],
                                                                "c8y_Hardware": ["model": "GW-7"]])["id"]?.idValue ?? ""
            _ = try await client.createManagedObject(["name": "Gateway 8", "type": "acme_Gateway"])
            _ = try await client.createManagedObject(["name": "O'Brien's sensor", "c8y_IsDevice": [:]])
            func names(_ parameter: String, _ expression: String) async throws -> [String?] {
                try await get(client, "/inventory/managedObjects", [(parameter, expression), ("pageSize", "100")])["managedObjects"]?
                    .arrayValue?.map { $0["name"]?.stringValue } ?? []
            }
            #expect(try await names("q", "$filter=(has(c8y_IsDevice) and name eq 'Gateway*')") == ["Gateway 7"])
            #expect(try await names("query", "$filter=(type eq acme_Gateway)+$orderby=name") == ["Gateway 7", "Gateway 8"])
            #expect(try await names("query", "$filter=(c8y_Hardware.model eq 'GW-7')") == ["Gateway 7"])
            #expect(try await names("query", "$filter=(name eq 'O''Brien*')") == ["O'Brien's sensor"])
            #expect(try await names("q", "$filter=((has(c8y_IsDevice)) and (name eq '*sensor'))") == ["O'Brien's sensor"])
            let formEncoded = try await client.forward("GET", "/inventory/managedObjects?q=%24filter%3D(has(c8y_IsDevice)+and+name+eq+'Gateway*')",
                                                       headers: [], body: nil)
            #expect(try JSONValue.parse(formEncoded.body)["managedObjects"]?.arrayValue?.map { $0["name"] } == ["Gateway 7"])
            let refused = try await client.forward("GET", "/inventory/managedObjects?query=%24filter%3D(name%20eq%20'a'%20or%20name%20eq%20'b')",
                                                   headers: [], body: nil)
            #expect(refused.status == 400)
            #expect(try JSONValue.parse(refused.body)["error"] == "inventory/Invalid query")
            _ = try await client.createAlarm(["source": ["id": .string(gateway)], "type": "acme_A", "severity": "MAJOR", "text": "t",
                                              "time": "2026-11-01T00:00:00.000Z"])
            #expect(try await client.forward("GET", "/alarm/alarms/count?source=\(gateway)&status=ACTIVE", headers: [], body: nil).body == Array("1".utf8))
        }
    }
}
