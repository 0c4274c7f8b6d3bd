import Cumulocity
import HTTPTypes
import Hummingbird
import JSONSupport
import NIOCore

/// The HTTP routes of the sandbox tenant. Shapes follow the platform's OpenAPI description.
struct Routes: Sendable {
    let tenant: Tenant

    static func json(_ value: JSONValue, status: Int = 200, type: String = "application/json") -> Response {
        Response(status: .init(code: status), headers: [.contentType: type],
                 body: .init(byteBuffer: ByteBuffer(bytes: withLoneSurrogates(value.encoded()))))
    }

    static func withLoneSurrogates(_ bytes: [UInt8]) -> [UInt8] {
        let marker = Array(Tenant.loneSurrogateMarker.utf8)
        guard bytes.count >= marker.count else { return bytes }
        var out: [UInt8] = []
        var index = 0
        var found = false
        while index < bytes.count {
            if bytes[index] == marker[0], index + marker.count <= bytes.count, bytes[index..<(index + marker.count)].elementsEqual(marker) {
                out += Array("\\ud800".utf8)
                index += marker.count
                found = true
            } else {
                out.append(bytes[index])
                index += 1
            }
        }
        return found ? out : bytes
    }

    static func error(_ status: Int, _ kind: String, _ message: String) -> Response {
        json(["error": .string(kind), "message": .string(message), "info": "https://cumulocity.com/api/core/"], status: status,
             type: "application/vnd.com.nsn.cumulocity.error+json")
    }

    static func body(_ request: Request) async throws -> JSONValue? {
        var request = request
        let buffer = try await request.collectBody(upTo: 16 << 20)
        return try? JSONValue.parse(Array(buffer.readableBytesView))
    }

    static func object(_ request: Request) async throws -> JSONValue? {
        guard let body = try await body(request), case .object = body else { return nil }
        return body
    }

    /// A created resource: 201 with the body only when the client asked for it with `Accept` (as the platform does).
    static func created(_ value: JSONValue, _ request: Request, type: String) -> Response {
        guard request.headers[.accept] != nil else { return Response(status: .created) }
        return json(value, status: 201, type: type + ";charset=UTF-8;ver=0.9")
    }

    static let badBody = error(422, "general/invalidBody", "the body is not a JSON object")

    /// The alarms a query selects: `source`, `type`, `dateFrom`/`dateTo`, `status`, `severity`; newest first unless `revert`.
    static func alarms(_ tenant: Tenant, _ query: Parameters) async -> [JSONValue] {
        let severity = query.get("severity")
        return filtered(await tenant.alarmList(status: query.get("status")), query)
            .filter { severity == nil || $0["severity"]?.stringValue == severity }
    }

    /// 403 when a device user would change or delete a managed object another user owns.
    static func refusedChange(of id: String, by principal: Principal, tenant: Tenant) async -> Response? {
        guard let object = await tenant.managedObject(id) else { return nil }  // the route answers 404
        return refusedChange(of: object, named: "managed object \(id)", by: principal)
    }

    /// 403 when a device user would change or delete a document (managed object, file) another user owns.
    static func refusedChange(of document: JSONValue, named name: String, by principal: Principal) -> Response? {
        let owner = document["owner"]?.stringValue
        guard !principal.mayModify(ownedBy: owner) else { return nil }
        return error(403, "security/Forbidden", "Access is denied: \(name) is owned by \(owner ?? "another user")")
    }

    func register(on router: Router<SandboxContext>) {
        let tenant = self.tenant
        registerAuthentication(on: router)
        registerQueries(on: router)
        registerBinaries(on: router)
        registerConsole(on: router)
        // Identity
        router.get("/identity/externalIds/{type}/{value}") { _, context -> Response in
            let type = context.parameters.get("type") ?? "", value = context.parameters.get("value") ?? ""
            guard let id = await tenant.lookup(type: type, externalId: value) else {
                return Self.error(404, "identity/Not Found", "External id not found; external id = ID [type=\(type), value=\(value)]")
            }
            return Self.json(["externalId": .string(value), "type": .string(type), "managedObject": ["id": .string(id)]],
                             type: "application/vnd.com.nsn.cumulocity.externalid+json")
        }
        router.post("/identity/globalIds/{id}/externalIds") { request, context -> Response in
            let id = context.parameters.get("id") ?? ""
            guard let body = try await Self.object(request), let type = body["type"]?.stringValue,
                  let value = body["externalId"]?.stringValue else { return Self.badBody }
            guard await tenant.register(type: type, externalId: value, for: id) else {
                return Self.error(404, "inventory/Not Found", "Managed object \(id) not found")
            }
            return Self.created(["externalId": .string(value), "type": .string(type), "managedObject": ["id": .string(id)]],
                                request, type: "application/vnd.com.nsn.cumulocity.externalid+json")
        }
        // Inventory
        router.post("/inventory/managedObjects") { request, context -> Response in
            guard let body = try await Self.object(request) else { return Self.badBody }
            return Self.created(await tenant.createManagedObject(body, owner: context.principal.name), request,
                                type: "application/vnd.com.nsn.cumulocity.managedobject+json")
        }
        router.get("/inventory/managedObjects/{id}") { _, context -> Response in
            let id = context.parameters.get("id") ?? ""
            guard let object = await tenant.managedObject(id) else {
                return Self.error(404, "inventory/Not Found", "Managed object \(id) not found")
            }
            return Self.json(object, type: "application/vnd.com.nsn.cumulocity.managedobject+json")
        }
        router.delete("/inventory/managedObjects/{id}") { _, context -> Response in
            let id = context.parameters.get("id") ?? ""
            if let refused = await Self.refusedChange(of: id, by: context.principal, tenant: tenant) { return refused }
            guard await tenant.deleteManagedObject(id) else { return Self.error(404, "inventory/Not Found", "Managed object \(id) not found") }
            return Response(status: .noContent)
        }
        router.put("/inventory/managedObjects/{id}") { request, context -> Response in
            let id = context.parameters.get("id") ?? ""
            if let refused = await Self.refusedChange(of: id, by: context.principal, tenant: tenant) { return refused }
            guard let body = try await Self.object(request) else { return Self.badBody }
            guard let updated = await tenant.updateManagedObject(id, body) else {
                return Self.error(404, "inventory/Not Found", "Managed object \(id) not found")
            }
            return request.headers[.accept] == nil ? Response(status: .ok) : Self.json(updated, type: "application/vnd.com.nsn.cumulocity.managedobject+json")
        }
        router.post("/inventory/managedObjects/{id}/childDevices") { request, context -> Response in
            let parent = context.parameters.get("id") ?? ""
            guard let body = try await Self.object(request), let child = body["managedObject"]?["id"]?.idValue else { return Self.badBody }
            guard await tenant.addChild(child, to: parent) else {
                return Self.error(404, "inventory/Not Found", "Managed object \(parent) or \(child) not found")
            }
            return Self.created(body, request, type: "application/vnd.com.nsn.cumulocity.managedobjectreference+json")
        }
        router.post("/devicecontrol/deviceCredentials") { request, _ -> Response in
            guard let body = try await Self.object(request), let id = body["id"]?.stringValue else { return Self.badBody }
            guard let credentials = await tenant.issueCredentials(for: id) else {
                return Self.error(404, "devicecontrol/Not Found", "Device request for \(id) not found or not accepted")
            }
            return Self.json(credentials, type: "application/vnd.com.nsn.cumulocity.devicecredentials+json")
        }
        router.post("/sandbox/devices/{id}/accept") { _, context -> Response in
            await tenant.accept(deviceId: context.parameters.get("id") ?? "")
            return Self.json(["ok": true])
        }
        // Device control
        router.get("/devicecontrol/operations") { request, _ -> Response in
            let query = request.uri.queryParameters
            let all = await tenant.queryOperations(agentID: query.get("agentId"), deviceID: query.get("deviceId"), status: query.get("status"))
                .filter(Self.operationFilter(query))
            // Oldest first; newest first with revert=true (the platform's order for operations).
            return Self.json(Self.collection(query.get("revert") == "true" ? all.reversed() : all, named: "operations", query,
                                             path: "/devicecontrol/operations"),
                             type: "application/vnd.com.nsn.cumulocity.operationcollection+json")
        }
        router.delete("/devicecontrol/operations") { request, _ -> Response in
            let query = request.uri.queryParameters
            let wanted = Set(await tenant.queryOperations(agentID: query.get("agentId"), deviceID: query.get("deviceId"),
                                                         status: query.get("status")).filter(Self.operationFilter(query))
                .compactMap { $0["id"]?.idValue })
            _ = await tenant.deleteOperations { $0["id"]?.idValue.map(wanted.contains) ?? false }
            return Response(status: .noContent)
        }
        router.post("/devicecontrol/operations") { request, _ -> Response in
            guard let body = try await Self.object(request) else { return Self.badBody }
            guard let created = await tenant.createOperation(body) else {
                return Self.error(422, "devicecontrol/Invalid", "deviceId is missing or names no managed object")
            }
            return Self.created(created, request, type: "application/vnd.com.nsn.cumulocity.operation+json")
        }
        router.get("/devicecontrol/operations/{id}") { _, context -> Response in
            let id = context.parameters.get("id") ?? ""
            guard let operation = await tenant.operation(id) else { return Self.error(404, "devicecontrol/Not Found", "Operation \(id) not found") }
            return Self.json(operation, type: "application/vnd.com.nsn.cumulocity.operation+json")
        }
        router.put("/devicecontrol/operations/{id}") { request, context -> Response in
            let id = context.parameters.get("id") ?? ""
            guard let body = try await Self.object(request) else { return Self.badBody }
            switch await tenant.updateOperation(id, body, byPlatformUser: context.principal.isPlatform) {
            case .notFound: return Self.error(404, "devicecontrol/Not Found", "Operation \(id) not found")
            case .rejected(let why): return Self.error(422, "devicecontrol/Invalid status transition", why)
            case .updated(let operation):
                return request.headers[.accept] == nil ? Response(status: .ok) : Self.json(operation, type: "application/vnd.com.nsn.cumulocity.operation+json")
            }
        }
        // Measurements, events, alarms
        router.post("/measurement/measurements") { request, _ -> Response in
            guard let body = try await Self.object(request) else { return Self.badBody }
            return Self.created(await tenant.addMeasurement(body), request, type: "application/vnd.com.nsn.cumulocity.measurement+json")
        }
        router.post("/event/events") { request, _ -> Response in
            guard let body = try await Self.object(request) else { return Self.badBody }
            return Self.created(await tenant.addEvent(body), request, type: "application/vnd.com.nsn.cumulocity.event+json")
        }
        router.post("/alarm/alarms") { request, _ -> Response in
            guard let body = try await Self.object(request) else { return Self.badBody }
            return Self.created(await tenant.addAlarm(body), request, type: "application/vnd.com.nsn.cumulocity.alarm+json")
        }
        router.get("/alarm/alarms") { request, _ -> Response in
            let query = request.uri.queryParameters
            return Self.json(Self.collection(await Self.alarms(tenant, query), named: "alarms", query, path: "/alarm/alarms"),
                             type: "application/vnd.com.nsn.cumulocity.alarmcollection+json")
        }
        // The number of alarms the same filters select (a bare integer, as the platform answers).
        router.get("/alarm/alarms/count") { request, _ -> Response in
            Self.json(.int(Int64(await Self.alarms(tenant, request.uri.queryParameters).count)))
        }
        router.put("/alarm/alarms/{id}") { request, context -> Response in
            let id = context.parameters.get("id") ?? ""
            guard let body = try await Self.object(request) else { return Self.badBody }
            guard let updated = await tenant.updateAlarm(id, body) else { return Self.error(404, "alarm/Not Found", "Alarm \(id) not found") }
            return Self.json(updated, type: "application/vnd.com.nsn.cumulocity.alarm+json")
        }
        // Bayeux
        router.post("/notification/operations") { request, _ -> Response in
            guard let messages = try await Self.body(request)?.arrayValue else {
                return Self.json([["successful": false, "error": "400::a Bayeux request is an array of messages"]], status: 400)
            }
            var replies: [JSONValue] = []
            for message in messages { replies += await Self.bayeux(message, tenant: tenant) }
            guard await tenant.takeAnswerDrop() else { return Self.json(.array(replies)) }
            // The answer is lost in transit: processed (its messages are gone from the queue), then cut.
            let bytes = Self.withLoneSurrogates(JSONValue.array(replies).encoded())
            return Response(status: .ok, headers: [.contentType: "application/json", .contentLength: String(bytes.count)],
                            body: ResponseBody { writer in
                                try await writer.write(ByteBuffer(bytes: bytes.prefix(bytes.count / 2)))
                                throw SandboxError(detail: "answer dropped by fault injection")
                            })
        }
        // Sandbox controls (no authentication; loopback only)
        router.post("/sandbox/faults") { request, _ -> Response in
            let body = try await Self.body(request) ?? [:]
            await tenant.refuse(next: Int(body["refuse"]?.intValue ?? 0), status: Int(body["status"]?.intValue ?? 503),
                                method: body["method"]?.stringValue, pathPrefix: body["pathPrefix"]?.stringValue)
            if let drops = body["dropNotificationAnswers"]?.intValue { await tenant.dropNotificationAnswers(next: Int(drops)) }
            if let count = body["raw"]?.intValue {
                await tenant.answerRaw(next: Int(count), status: Int(body["status"]?.intValue ?? 200),
                                       contentType: body["contentType"]?.stringValue ?? "application/json",
                                       body: Array((body["body"]?.stringValue ?? "").utf8), truncate: body["truncate"]?.intValue.map { Int($0) },
                                       method: body["method"]?.stringValue, pathPrefix: body["pathPrefix"]?.stringValue)
            }
            if let count = body["delay"]?.intValue, let milliseconds = body["delayMilliseconds"]?.intValue {
                await tenant.delay(next: Int(count), by: .milliseconds(milliseconds), method: body["method"]?.stringValue,
                                   pathPrefix: body["pathPrefix"]?.stringValue)
            }
            return Self.json(["ok": true])
        }
        router.post("/sandbox/bayeux/drop") { _, _ -> Response in
            await tenant.dropBayeuxClients()
            return Self.json(["ok": true])
        }
        router.post("/sandbox/operations/{id}/redeliver") { _, context -> Response in
            await tenant.redeliver(context.parameters.get("id") ?? "")
            return Self.json(["ok": true])
        }
        router.get("/sandbox/operations/{id}/history") { _, context -> Response in
            Self.json(.array(await tenant.history(of: context.parameters.get("id") ?? "")))
        }
        // For the benchmark: status times, an operation's end without polling, subscription times, latency.
        router.get("/sandbox/operations/{id}/timeline") { _, context -> Response in
            guard let timeline = await tenant.timeline(of: context.parameters.get("id") ?? "") else {
                return Self.error(404, "devicecontrol/Not Found", "no such operation")
            }
            return Self.json(timeline)
        }
        router.get("/sandbox/operations/{id}/end") { request, context -> Response in
            let seconds = request.uri.queryParameters.get("timeout").flatMap { Int($0) } ?? 60
            let ended = await tenant.waitForEnd(of: context.parameters.get("id") ?? "", timeout: .seconds(max(1, min(seconds, 3600))))
            return Self.json(["ended": .bool(ended)])
        }
        router.get("/sandbox/subscriptions") { _, _ -> Response in
            Self.json(.array(await tenant.subscriptionTimes.map { .int($0) }))
        }
        router.post("/sandbox/latency") { request, _ -> Response in
            let milliseconds = try await Self.body(request)?["milliseconds"]?.intValue ?? 0
            await tenant.setAnswerLatency(milliseconds > 0 ? .milliseconds(milliseconds) : nil)
            return Self.json(["ok": true])
        }
        router.get("/sandbox/inventory/{id}/updates") { _, context -> Response in
            Self.json(.array(await tenant.updates(of: context.parameters.get("id") ?? "")))
        }
    }

    static func bayeux(_ message: JSONValue, tenant: Tenant) async -> [JSONValue] {
        let channel = message["channel"]?.stringValue ?? ""
        let clientID = message["clientId"]?.stringValue ?? ""
        let id = message["id"] ?? .null
        let unknown: JSONValue = ["channel": .string(channel), "successful": false, "error": "402::Unknown client",
                                  "advice": ["reconnect": "handshake", "interval": 0], "id": id]
        switch channel {
        case "/meta/handshake":
            let clientID = await tenant.handshake()
            return [["channel": "/meta/handshake", "successful": true, "clientId": .string(clientID), "version": "1.0",
                     "minimumVersion": "1.0", "supportedConnectionTypes": ["long-polling"], "id": id,
                     "advice": ["timeout": .int(tenant.settings.holdTime.milliseconds), "interval": 0, "reconnect": "retry"]]]
        case "/meta/subscribe":
            let subscription = message["subscription"]?.stringValue ?? ""
            guard await tenant.subscribe(clientID, to: subscription) else { return [unknown] }
            return [["channel": "/meta/subscribe", "subscription": .string(subscription), "successful": true, "id": id]]
        case "/meta/connect":
            switch await tenant.connect(clientID) {
            case .unknownClient:
                return [unknown]
            case .messages(let messages):
                return messages + [["channel": "/meta/connect", "successful": true, "id": id,
                                    "advice": ["timeout": .int(tenant.settings.holdTime.milliseconds), "interval": 0, "reconnect": "retry"]]]
            }
        case "/meta/disconnect":
            await tenant.disconnect(clientID)
            return [["channel": "/meta/disconnect", "successful": true, "id": id]]
        default:
            return [["channel": .string(channel), "successful": false, "error": "400::unknown channel", "id": id]]
        }
    }
}

