import Cumulocity
import FoundationEssentials
import HTTPTypes
import Hummingbird
import JSONSupport

/// Reading the tenant back as a platform user does: collections with the platform's filters and
/// paging, single resources by id, the current tenant and user. Shapes follow the OpenAPI
/// description (`../shared/reference/c8y-oas.yml`); unknown query parameters are ignored, as the
/// platform ignores them.
extension Routes {
    /// A collection's page as the platform answers it: `pageSize` (default 5, at most 2000),
    /// `currentPage` (from 1), and in `statistics` the page's numbers, plus `totalPages` with
    /// `withTotalPages=true` and `totalElements` with `withTotalElements=true`.
    static func collection(_ all: [JSONValue], named name: String, _ query: Parameters, path: String) -> JSONValue {
        let pageSize = max(1, min(2000, query.get("pageSize").flatMap { Int($0) } ?? 5))
        let page = max(1, query.get("currentPage").flatMap { Int($0) } ?? 1)
        let slice = Array(all.dropFirst((page - 1) * pageSize).prefix(pageSize))
        var statistics: [String: JSONValue] = ["currentPage": .int(Int64(page)), "pageSize": .int(Int64(pageSize))]
        if query.get("withTotalPages") == "true" { statistics["totalPages"] = .int(Int64((all.count + pageSize - 1) / pageSize)) }
        if query.get("withTotalElements") == "true" { statistics["totalElements"] = .int(Int64(all.count)) }
        var answer: [String: JSONValue] = [name: .array(slice), "statistics": .object(statistics), "self": .string(path)]
        if slice.count == pageSize { answer["next"] = .string(path + "?pageSize=\(pageSize)&currentPage=\(page + 1)") }
        if page > 1 { answer["prev"] = .string(path + "?pageSize=\(pageSize)&currentPage=\(page - 1)") }
        return .object(answer)
    }

    /// The documents of a measurement, event or alarm collection that match `source`, `type`,
    /// `dateFrom` and `dateTo` (on `time`, ISO 8601; a date alone is its midnight), newest first
    /// unless `revert=true`.
    static func filtered(_ all: [JSONValue], _ query: Parameters) -> [JSONValue] {
        let source = query.get("source"), type = query.get("type")
        let from = query.get("dateFrom").map(sortableTime), to = query.get("dateTo").map(sortableTime)
        let matching = all.map { (document: $0, time: sortableTime($0["time"]?.stringValue ?? "")) }.filter { entry in
            (source == nil || entry.document["source"]?["id"]?.idValue == source)
                && (type == nil || entry.document["type"]?.stringValue == type)
                && (from.map { entry.time >= $0 } ?? true)
                && (to.map { entry.time < $0 } ?? true)
        }
        // By time (ties in the order they arrived), as the platform orders them.
        let oldestFirst = matching.enumerated().sorted { ($0.element.time, $0.offset) < ($1.element.time, $1.offset) }.map(\.element.document)
        return query.get("revert") == "true" ? oldestFirst : oldestFirst.reversed()
    }

    /// An ISO 8601 time as a string that sorts by time: the zone suffix (`Z`, `+00:00`) dropped, so
    /// times are compared as UTC (what devices and clients send); a date alone sorts as its midnight.
    static func sortableTime(_ time: String) -> String {
        var text = Substring(time)
        if text.hasSuffix("Z") { text = text.dropLast() }
        if text.count > 19, let sign = text.dropFirst(19).lastIndex(where: { $0 == "+" || $0 == "-" }) { text = text[..<sign] }
        return String(text)
    }

    func registerQueries(on router: Router<SandboxContext>) {
        let tenant = self.tenant
        router.get("/inventory/managedObjects") { request, _ -> Response in
            let query = request.uri.queryParameters
            let ids = query.get("ids").map { Set($0.split(separator: ",").map(String.init)) }
            // Clients form-encode these (requests sends a space as +), and the platform reads them so.
            let fragment = query.get("fragmentType"), type = query.get("type")
            let text = query.get("text").map { $0.replacing("+", with: " ").lowercased() }
            let owner = query.get("owner")
            var matchesQuery: InventoryQuery?
            if let expression = (query.get("query") ?? query.get("q")).map({ $0.replacing("+", with: " ") }) {
                switch InventoryQuery.parse(expression) {
                case .success(let parsed): matchesQuery = parsed
                case .failure(let problem): return Self.error(400, "inventory/Invalid query", problem.detail)
                }
            }
            let objects = await tenant.managedObjectList().filter { object in
                (ids.map { object["id"]?.idValue.map($0.contains) ?? false } ?? true)
                    && (fragment.map { object[$0] != nil } ?? true)
                    && (type.map { object["type"]?.stringValue == $0 } ?? true)
                    && (owner.map { object["owner"]?.stringValue == $0 } ?? true)
                    && (text.map { object.encodedString().lowercased().contains($0) } ?? true)
                    && (matchesQuery?.matches(object) ?? true)
            }
            return Self.json(Self.collection(objects, named: "managedObjects", query, path: "/inventory/managedObjects"),
                             type: "application/vnd.com.nsn.cumulocity.managedobjectcollection+json")
        }
        router.get("/identity/globalIds/{id}/externalIds") { _, context -> Response in
            let id = context.parameters.get("id") ?? ""
            guard await tenant.managedObject(id) != nil else { return Self.error(404, "inventory/Not Found", "Managed object \(id) not found") }
            let externalIds = await tenant.externalIDs(of: id).map { entry -> JSONValue in
                ["externalId": .string(entry.value), "type": .string(entry.type), "managedObject": ["id": .string(id)]]
            }
            return Self.json(["externalIds": .array(externalIds), "self": .string("/identity/globalIds/\(id)/externalIds")],
                             type: "application/vnd.com.nsn.cumulocity.externalidcollection+json")
        }
        router.get("/measurement/measurements") { request, _ -> Response in
            let query = request.uri.queryParameters
            return Self.json(Self.collection(Self.filtered(await tenant.measurementList(), query), named: "measurements", query,
                                             path: "/measurement/measurements"),
                             type: "application/vnd.com.nsn.cumulocity.measurementcollection+json")
        }
        router.get("/event/events") { request, _ -> Response in
            let query = request.uri.queryParameters
            return Self.json(Self.collection(Self.filtered(await tenant.eventList(), query), named: "events", query, path: "/event/events"),
                             type: "application/vnd.com.nsn.cumulocity.eventcollection+json")
        }
        for (path, kind, type) in [("/measurement/measurements/{id}", "measurement", "measurement"),
                                   ("/event/events/{id}", "event", "event"), ("/alarm/alarms/{id}", "alarm", "alarm")] {
            router.get(RouterPath(path)) { _, context -> Response in
                let id = context.parameters.get("id") ?? ""
                guard let document = await tenant.document(kind: kind, id: id) else {
                    return Self.error(404, "\(kind)/Not Found", "Finding \(kind) from database failed : No \(kind) for gid '\(id)'!")
                }
                return Self.json(document, type: "application/vnd.com.nsn.cumulocity.\(type)+json")
            }
        }
        for kind in ["childDevices", "childAssets", "childAdditions"] {
            router.get(RouterPath("/inventory/managedObjects/{id}/" + kind)) { request, context -> Response in
                let id = context.parameters.get("id") ?? ""
                guard let references = await tenant.children(of: id, kind: kind) else {
                    return Self.error(404, "inventory/Not Found", "Managed object \(id) not found")
                }
                return Self.json(Self.collection(references, named: "references", request.uri.queryParameters,
                                                 path: "/inventory/managedObjects/\(id)/\(kind)"),
                                 type: "application/vnd.com.nsn.cumulocity.managedobjectreferencecollection+json")
            }
            router.delete(RouterPath("/inventory/managedObjects/{id}/\(kind)/{child}")) { _, context -> Response in
                let id = context.parameters.get("id") ?? "", child = context.parameters.get("child") ?? ""
                guard await tenant.removeChild(child, from: id, kind: kind) else {
                    return Self.error(404, "inventory/Not Found", "Managed object \(id) has no reference to \(child)")
                }
                return Response(status: .noContent)
            }
        }
        // childAssets and childAdditions are added like childDevices (POST of a reference).
        for kind in ["childAssets", "childAdditions"] {
            router.post(RouterPath("/inventory/managedObjects/{id}/" + kind)) { request, context -> Response in
                let parent = context.parameters.get("id") ?? ""
                guard let body = try await Self.object(request), let child = body["managedObject"]?["id"]?.idValue else { return Self.badBody }
                guard await tenant.addChild(child, to: parent, kind: kind) else {
                    return Self.error(404, "inventory/Not Found", "Managed object \(parent) or \(child) not found")
                }
                return Self.created(body, request, type: "application/vnd.com.nsn.cumulocity.managedobjectreference+json")
            }
        }
        router.delete("/identity/externalIds/{type}/{value}") { _, context -> Response in
            let type = context.parameters.get("type") ?? "", value = context.parameters.get("value") ?? ""
            guard await tenant.deleteExternalID(type: type, value: value) else {
                return Self.error(404, "identity/Not Found", "External id not found; external id = ID [type=\(type), value=\(value)]")
            }
            return Response(status: .noContent)
        }
        router.put("/event/events/{id}") { request, context -> Response in
            let id = context.parameters.get("id") ?? ""
            guard let body = try await Self.object(request) else { return Self.badBody }
            guard let updated = await tenant.updateEvent(id, body) else {
                return Self.error(404, "event/Not Found", "Finding event from database failed : No event for gid '\(id)'!")
            }
            return Self.json(updated, type: "application/vnd.com.nsn.cumulocity.event+json")
        }
        for (path, kind) in [("/measurement/measurements/{id}", "measurement"), ("/event/events/{id}", "event")] {
            router.delete(RouterPath(path)) { _, context -> Response in
                let id = context.parameters.get("id") ?? ""
                guard await tenant.deleteDocument(kind: kind, id: id) else {
                    return Self.error(404, "\(kind)/Not Found", "Finding \(kind) from database failed : No \(kind) for gid '\(id)'!")
                }
                return Response(status: .noContent)
            }
        }
        // Bulk status change; at least one query parameter (the platform refuses to update every alarm).
        router.put("/alarm/alarms") { request, _ -> Response in
            let query = request.uri.queryParameters
            guard let status = try await Self.object(request)?["status"]?.stringValue else { return Self.badBody }
            let source = query.get("source"), current = query.get("status"), severity = query.get("severity")
            guard source != nil || current != nil || severity != nil else {
                return Self.error(422, "alarm/Invalid", "at least one query parameter is required")
            }
            _ = await tenant.updateAlarms(status: status) { alarm in
                (source.map { alarm["source"]?["id"]?.idValue == $0 } ?? true)
                    && (current.map { alarm["status"]?.stringValue == $0 } ?? true)
                    && (severity.map { alarm["severity"]?.stringValue == $0 } ?? true)
            }
            return Response(status: .ok)
        }
        router.get("/tenant/currentTenant") { _, _ -> Response in
            Self.json(["name": .string(tenant.settings.tenantID), "domainName": "localhost", "allowCreateTenants": false,
                       "self": "/tenant/currentTenant"],
                      type: "application/vnd.com.nsn.cumulocity.currenttenant+json")
        }
        router.get("/user/currentUser") { _, context -> Response in
            let name = context.principal.name ?? tenant.settings.username
            let roles = (context.principal.isPlatform ? Self.platformRoles : Self.deviceRoles).map { role -> JSONValue in
                ["id": .string(role), "name": .string(role)]
            }
            return Self.json(["id": .string(name), "userName": .string(name), "self": "/user/currentUser",
                              "effectiveRoles": .array(roles), "shouldResetPassword": false],
                             type: "application/vnd.com.nsn.cumulocity.currentuser+json")
        }
    }

    /// The roles `/user/currentUser` lists: what the sandbox lets each kind of user do.
    static let deviceRoles = ["ROLE_INVENTORY_CREATE", "ROLE_INVENTORY_READ", "ROLE_IDENTITY_ADMIN", "ROLE_MEASUREMENT_ADMIN",
                              "ROLE_EVENT_ADMIN", "ROLE_ALARM_ADMIN", "ROLE_DEVICE_CONTROL_ADMIN", "ROLE_BINARY_READ"]
    static let platformRoles = ["ROLE_INVENTORY_ADMIN", "ROLE_IDENTITY_ADMIN", "ROLE_MEASUREMENT_ADMIN", "ROLE_EVENT_ADMIN",
                                "ROLE_ALARM_ADMIN", "ROLE_DEVICE_CONTROL_ADMIN", "ROLE_BINARY_ADMIN", "ROLE_USER_MANAGEMENT_READ"]

    /// The user (with its tenant prefix, if any) and password of a Basic `Authorization` header.
    static func basicCredentials(_ request: Request) -> (user: String, password: String)? {
        guard let header = request.headers[.authorization], header.hasPrefix("Basic "),
              let decoded = Data(base64Encoded: String(header.dropFirst(6))),
              let separator = decoded.firstIndex(of: UInt8(ascii: ":")) else { return nil }
        return (String(decoding: decoded[..<separator], as: UTF8.self), String(decoding: decoded[(separator + 1)...], as: UTF8.self))
    }

    /// The operations a query selects beyond device, agent and status: `fragmentType`, and
    /// `dateFrom`/`dateTo` on `creationTime`.
    static func operationFilter(_ query: Parameters) -> @Sendable (JSONValue) -> Bool {
        let fragment = query.get("fragmentType"), from = query.get("dateFrom"), to = query.get("dateTo")
        return { operation in
            let created = operation["creationTime"]?.stringValue ?? ""
            return (fragment.map { operation[$0] != nil } ?? true) && (from.map { created >= $0 } ?? true) && (to.map { created < $0 } ?? true)
        }
    }
}

/// The forms of the inventory query language (`query`, and `q` for devices) that `c8y-api` builds:
/// `$filter=(TERM and TERM …)` with an optional `$orderby=…` (ignored), where a term is `has(FRAGMENT)`
/// or `PATH eq VALUE` (a dotted path such as `c8y_Hardware.model`; the value quoted with `'…'`, `''`
/// for a quote, or bare; `*` matches any run of characters). Anything else (`or`, `not`, `bygroupid`,
/// other operators) is refused with 400 rather than answered wrongly.
struct InventoryQuery: Sendable {
    enum Term: Sendable, Equatable {
        case has(String)
        case equals(path: [String], pattern: String)
    }

    struct Problem: Error { let detail: String }

    let terms: [Term]

    static func parse(_ expression: String) -> Result<InventoryQuery, Problem> {
        var text = Substring(expression.trimmingCharacters(in: " \t\r\n"))
        if text.hasPrefix("$filter=") { text = text.dropFirst(8) }
        if let order = text.firstRange(of: "$orderby=") {
            text = text[..<order.lowerBound]
            if text.hasSuffix("+") || text.hasSuffix(" ") { text = text.dropLast() }  // c8y-api joins them with +
        }
        var terms: [Term] = []
        for raw in unparenthesized(String(text)).components(separatedBy: " and ") {
            let term = unparenthesized(raw)
            if term.hasPrefix("has("), term.hasSuffix(")") {
                terms.append(.has(String(term.dropFirst(4).dropLast())))
                continue
            }
            let parts = term.components(separatedBy: " eq ")
            guard parts.count == 2, !parts[0].isEmpty, !parts[0].contains(" ") else {
                return .failure(Problem(detail: "the sandbox understands has(FRAGMENT) and PATH eq VALUE joined by and; not \"\(term)\""))
            }
            var value = parts[1].trimmingCharacters(in: " \t\r\n")
            if value.count >= 2, value.hasPrefix("'"), value.hasSuffix("'") {
                value = String(value.dropFirst().dropLast()).replacing("''", with: "'")
            }
            terms.append(.equals(path: parts[0].split(separator: ".").map(String.init), pattern: value))
        }
        return .success(InventoryQuery(terms: terms.filter { $0 != .has("") }))
    }

    /// The text without whitespace around it and without parentheses that enclose all of it.
    static func unparenthesized(_ text: String) -> String {
        var current = text.trimmingCharacters(in: " \t\r\n")
        while current.hasPrefix("("), current.hasSuffix(")"), enclosesAll(current) {
            current = String(current.dropFirst().dropLast()).trimmingCharacters(in: " \t\r\n")
        }
        return current
    }

    static func enclosesAll(_ text: String) -> Bool {
        var depth = 0
        for (offset, character) in text.enumerated() {
            if character == "(" { depth += 1 }
            if character == ")" { depth -= 1 }
            if depth == 0, offset < text.count - 1 { return false }
        }
        return true
    }

    func matches(_ object: JSONValue) -> Bool {
        terms.allSatisfy { term in
            switch term {
            case .has(let fragment): object[fragment] != nil
            case .equals(let path, let pattern):
                path.reduce(Optional(object)) { $0?[$1] }.map { value in
                    Self.glob(pattern, value.stringValue ?? value.encodedString())
                } ?? false
            }
        }
    }

    /// `*` matches any run of characters; everything else itself.
    static func glob(_ pattern: String, _ text: String) -> Bool {
        let pieces = pattern.components(separatedBy: "*")
        guard pieces.count > 1 else { return pattern == text }
        var rest = Substring(text)
        guard let first = pieces.first, rest.hasPrefix(first) else { return false }
        rest = rest.dropFirst(first.count)
        for piece in pieces.dropFirst().dropLast() where !piece.isEmpty {
            guard let found = rest.firstRange(of: piece) else { return false }
            rest = rest[found.upperBound...]
        }
        let last = pieces.last ?? ""
        return rest.count >= last.count && rest.hasSuffix(last)
    }
}
