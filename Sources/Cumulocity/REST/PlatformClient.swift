public import JSONSupport
import FoundationEssentials
import Synchronization

/// Keeps the first and last 64 KiB of an answer and counts the rest, for an answer too large to
/// hold; stops the transfer past 256 MiB.
final class AnswerEnds: ResponseBodySink, @unchecked Sendable {
    static let keep = 64 << 10
    static let maximum = 256 << 20
    private let lock = Mutex<(head: [UInt8], tail: [UInt8], total: Int)>(([], [], 0))

    var head: [UInt8] { lock.withLock { $0.head } }
    var tail: [UInt8] { lock.withLock { $0.tail } }
    var total: Int { lock.withLock { $0.total } }

    func begin(status: Int, headers: [String: String]) {}

    func offer(_ bytes: UnsafeRawBufferPointer, wake: @escaping @Sendable () -> Void) -> BodyOffer {
        lock.withLock { state in
            state.total += bytes.count
            if state.head.count < Self.keep { state.head += bytes.prefix(Self.keep - state.head.count) }
            state.tail += bytes.suffix(Self.keep)
            if state.tail.count > Self.keep { state.tail.removeFirst(state.tail.count - Self.keep) }
            return state.total > Self.maximum ? .gone : .taken
        }
    }
}

/// The Cumulocity REST API as the agent uses it.
///
/// Every request names its media types: the platform answers POST and PUT with an empty body
/// unless `Accept` is set. A 401 invalidates the credentials and the request is sent once more.
public struct PlatformClient: Sendable {
    /// The tenant's base URL without a trailing slash, e.g. `https://acme.cumulocity.com`.
    public let baseURL: String
    /// When each device last sent what counts for its availability (``DeviceActivity``).
    public let activity = DeviceActivity()
    public let transport: CurlTransport
    public let credentials: any CredentialProvider
    /// Timeout of ordinary requests (long-polls set their own).
    public var requestTimeout: Duration
    /// Credentials for hosts outside the tenant (artifact repositories), by origin (`https://host:port`).
    public var hostCredentials: [String: any CredentialProvider] = [:]
    /// The transport of bulk transfers (artifact downloads, plugins' streamed requests), when not
    /// ``transport``: a thread of its own, so that a download the kernel throttles while it writes
    /// the file (dirty-page writeback) does not hold up status updates.
    public var bulkTransport: CurlTransport?

    private var bulk: CurlTransport { bulkTransport ?? transport }

    /// The header the credentials go in: `Authorization`, or the plugin proxy's `X-Switchyard-Secret`
    /// for a handler that reaches the tenant through the agent.
    public let authorizationHeader: String

    public init(baseURL: String, transport: CurlTransport, credentials: any CredentialProvider,
                requestTimeout: Duration = .seconds(30), authorizationHeader: String = "Authorization") {
        self.authorizationHeader = authorizationHeader
        self.baseURL = withoutTrailingSlashes(baseURL)
        self.transport = transport
        self.credentials = credentials
        self.requestTimeout = requestTimeout
    }

    /// Sends one request and returns the status and the parsed body (`nil` when empty).
    /// - Throws: ``PlatformError`` for transport failures, statuses outside 2xx (except those in
    ///   `accepting`) and bodies that are not JSON.
    public func send(_ method: String, _ path: String, query: [(String, String)] = [], body: JSONValue? = nil,
                     contentType: String? = nil, accept: String, timeout: Duration? = nil,
                     accepting: Set<Int> = []) async throws(PlatformError) -> (status: Int, json: JSONValue?) {
        let target = Self.target(path, query)
        var headers: [(name: String, value: String)] = [("Accept", accept)]
        if body != nil { headers.append(("Content-Type", contentType ?? accept)) }
        let response = try await forward(method, target, headers: headers, body: body?.encoded(), timeout: timeout)
        guard (200..<300).contains(response.status) || accepting.contains(response.status) else {
            throw PlatformError.status(method, path, response)
        }
        if response.body.isEmpty || response.status == 204 { return (response.status, nil) }
        if let type = response.headers["content-type"], !Self.namesJSON(type) {
            throw PlatformError.malformed(method, path, status: response.status, body: response.body,
                                          "the answer is \(type), not JSON: not the platform's (a captive portal or proxy?)")
        }
        do {
            return (response.status, try JSONValue.parse(response.body))
        } catch {
            throw PlatformError.malformed(method, path, status: response.status, body: response.body, error.detail)
        }
    }

    /// Whether a `Content-Type` is JSON's: "json" in it, in any case (`application/json`, the
    /// platform's `application/vnd.com.nsn.cumulocity.operation+json;ver=0.9`). Read byte by byte:
    /// `String.contains` of a string goes through the regex engine's searcher, at every answer.
    static func namesJSON(_ type: String) -> Bool {
        let json = jsonBytes
        var matched = 0
        for byte in type.utf8 {
            let lower = byte >= 0x41 && byte <= 0x5A ? byte | 0x20 : byte
            matched = lower == json[matched] ? matched + 1 : (lower == json[0] ? 1 : 0)
            if matched == json.count { return true }
        }
        return false
    }

    private static let jsonBytes: [UInt8] = Array("json".utf8)

    /// Sends one of the agent's requests (see ``PlatformRequest``) and returns the answer's body.
    @discardableResult
    public func send(_ request: PlatformRequest) async throws(PlatformError) -> JSONValue? {
        if case .clearAlarms(let source, let type) = request {
            for alarm in try await alarms(source: source, status: "ACTIVE", type: type) {
                guard let id = alarm["id"]?.idValue else { continue }
                try await updateAlarm(id: id, ["status": "CLEARED"])
            }
            return nil
        }
        let answer = try await send(request.method, request.path, body: request.body, accept: request.mediaType).json
        if let device = request.showsActivityOf { activity.record(device) }
        return answer
    }

    /// A path with its query, percent-encoded.
    static func target(_ path: String, _ query: [(String, String)]) -> String {
        query.isEmpty ? path : path + "?" + query.map { "\(percentEncoded($0.0))=\(percentEncoded($0.1))" }.joined(separator: "&")
    }

    /// Sends a request on behalf of a local program (the plugin proxy): the agent's authentication
    /// is added, a 401 renews it once, and the answer comes back whatever its status.
    public func forward(_ method: String, _ pathAndQuery: String, headers: [(name: String, value: String)],
                        body: [UInt8]?, timeout: Duration? = nil) async throws(PlatformError) -> HTTPResponse {
        try await withRenewal(method, pathAndQuery) { authorization throws(TransportError) in
            try await transport.send(HTTPRequest(method: method, url: baseURL + pathAndQuery,
                                                 headers: headers + [(authorizationHeader, authorization)], body: body,
                                                 timeout: timeout ?? requestTimeout))
        }
    }

    /// As ``forward(_:_:headers:body:timeout:)``, with the request body read from `body` as it arrives
    /// and a 2xx answer's body handed to `sink` as it arrives (see ``CurlTransport/stream(_:body:into:)``).
    /// A 401 is retried once with the body read again from its start.
    public func forward(_ method: String, _ pathAndQuery: String, headers: [(name: String, value: String)],
                        streaming body: (any RequestBodySource)?, into sink: any ResponseBodySink,
                        timeout: Duration) async throws(PlatformError) -> HTTPResponse {
        try await withRenewal(method, pathAndQuery) { authorization throws(TransportError) in
            try await bulk.stream(HTTPRequest(method: method, url: baseURL + pathAndQuery,
                                                   headers: headers + [(authorizationHeader, authorization)], timeout: timeout),
                                       body: body, into: sink)
        }
    }

    /// Downloads `url` into the open file `fd`, streamed (see ``CurlTransport/download(_:into:resumeFrom:maxBytes:)``):
    /// with the tenant's credentials when the URL is the tenant's, a configured host's own credentials
    /// for that host (``hostCredentials``), none elsewhere. A 401 renews the credentials once. The
    /// answer is returned whatever its status; its body is empty for a 2xx.
    public func download(_ url: String, into fd: Int32, resumeFrom offset: Int64, maxBytes: Int64,
                         timeout: Duration) async throws(PlatformError) -> HTTPResponse {
        let origin = Self.origin(of: url)
        let credentials: (any CredentialProvider)? = origin == nil ? nil
            : origin == Self.origin(of: baseURL) ? self.credentials
            : hostCredentials.first { Self.origin(of: $0.key) == origin }?.value
        return try await withRenewal("GET", url, credentials: credentials) { authorization throws(TransportError) in
            let headers: [(name: String, value: String)] = [("Accept", "*/*")] + (authorization.map { [(authorizationHeader, $0)] } ?? [])
            return try await bulk.download(HTTPRequest(method: "GET", url: url, headers: headers, timeout: timeout),
                                                into: fd, resumeFrom: offset, maxBytes: maxBytes)
        }
    }

    /// The scheme, host and port of a URL, as RFC 6454 compares them: lower-cased, the default port
    /// left out (`https://H:443/x` → `https://h`); `nil` for anything but an http(s) URL with a host
    /// and no user information.
    public static func origin(of url: String) -> String? {
        guard let components = URLComponents(string: url), let scheme = components.scheme?.lowercased(),
              scheme == "http" || scheme == "https", let host = components.host?.lowercased(), !host.isEmpty,
              components.user == nil, components.password == nil else { return nil }
        let defaultPort = scheme == "https" ? 443 : 80
        guard let port = components.port, port != defaultPort else { return scheme + "://" + host }
        return scheme + "://" + host + ":" + String(port)
    }

    private func withRenewal(_ method: String, _ pathAndQuery: String,
                             _ exchange: (String) async throws(TransportError) -> HTTPResponse) async throws(PlatformError) -> HTTPResponse {
        try await withRenewal(method, pathAndQuery, credentials: credentials) { authorization throws(TransportError) in
            try await exchange(authorization ?? "")
        }
    }

    /// Runs `exchange` with the current authorization (`nil` without credentials); after a 401 the
    /// authorization is renewed and the exchange run once more.
    private func withRenewal(_ method: String, _ pathAndQuery: String, credentials: (any CredentialProvider)?,
                             _ exchange: (String?) async throws(TransportError) -> HTTPResponse) async throws(PlatformError) -> HTTPResponse {
        var attempt = 0
        while true {
            attempt += 1
            let authorization = try await credentials?.authorization()
            let response: HTTPResponse
            do {
                response = try await exchange(authorization)
            } catch {
                throw PlatformError.transport(method, pathAndQuery, error)
            }
            if response.status == 401 && attempt == 1, let credentials, let authorization {
                await credentials.invalidate(authorization)
                continue
            }
            return response
        }
    }

    // MARK: Identity

    /// The managed object id registered for an external id, or `nil` when the platform answers 404.
    public func managedObjectID(externalIdType: String, externalId: String) async throws(PlatformError) -> String? {
        let path = "/identity/externalIds/\(percentEncoded(externalIdType))/\(percentEncoded(externalId))"
        let (status, json) = try await send("GET", path, accept: MediaType.externalId, accepting: [404])
        if status == 404 { return nil }
        guard let id = json?["managedObject"]?["id"]?.idValue else {
            throw PlatformError.malformed("GET", path, status: status, body: json?.encoded() ?? [], "no managedObject.id")
        }
        return id
    }

    /// Binds an external id to a managed object (seed step 3).
    public func registerExternalID(type: String, externalId: String, managedObjectID: String) async throws(PlatformError) {
        _ = try await send("POST", "/identity/globalIds/\(percentEncoded(managedObjectID))/externalIds",
                           body: ["type": .string(type), "externalId": .string(externalId)],
                           accept: MediaType.externalId)
    }

    // MARK: Inventory

    /// Creates a managed object and returns it as stored, with its `id`.
    public func createManagedObject(_ object: JSONValue) async throws(PlatformError) -> JSONValue {
        let path = "/inventory/managedObjects"
        let (status, json) = try await send("POST", path, body: object, accept: MediaType.managedObject)
        guard let json, json["id"]?.idValue != nil else {
            throw PlatformError.malformed("POST", path, status: status, body: json?.encoded() ?? [], "no id in the created managed object")
        }
        return json
    }

    public func managedObject(id: String) async throws(PlatformError) -> JSONValue {
        let path = "/inventory/managedObjects/\(percentEncoded(id))"
        let (status, json) = try await send("GET", path, accept: MediaType.managedObject)
        guard let json else { throw PlatformError.malformed("GET", path, status: status, body: [], "empty body") }
        return json
    }

    /// Updates fragments of a managed object. A `name` member is never sent: the device's name
    /// belongs to its users once it exists (seed step 4).
    public func updateManagedObject(id: String, fragments: [String: JSONValue]) async throws(PlatformError) {
        try await send(.updateManagedObject(id: id, fragments: fragments))
    }

    /// Links a child device under its parent (seed step 5).
    public func addChildDevice(parentID: String, childID: String) async throws(PlatformError) {
        _ = try await send("POST", "/inventory/managedObjects/\(percentEncoded(parentID))/childDevices",
                           body: ["managedObject": ["id": .string(childID)]],
                           contentType: MediaType.managedObjectReference, accept: MediaType.managedObjectReference)
    }

    // MARK: Device control

    /// Every operation of an agent in a status, all pages, oldest first; each element decoded on its
    /// own, so one the decoder refuses comes back as ``OperationItem/undecodable(id:problem:excerpt:)``
    /// and does not hide the others.
    ///
    /// A page whose answer is larger than the transport accepts is asked for again in halves, down
    /// to one operation a page; an operation that alone is too large is returned as undecodable
    /// (its id unknown) and the query goes on past it.
    public func operations(agentID: String, status: String, pageSize: Int = 100) async throws(PlatformError) -> [OperationItem] {
        let path = "/devicecontrol/operations"
        var all: [OperationItem] = []
        var size = max(1, pageSize)
        var offset = 0  // operations read so far: pages are numbered in units of `size`
        var fullPages = 0  // pages read at `size` without shrinking, to grow back
        while true {
            let page = offset / size + 1
            let query = [("agentId", agentID), ("status", status), ("pageSize", String(size)),
                         ("currentPage", String(page)), ("revert", "false")]
            let target = Self.target(path, query)
            let response: HTTPResponse
            do {
                response = try await forward("GET", target, headers: [("Accept", MediaType.operationCollection)], body: nil)
            } catch where error.transport?.code == .tooLarge {
                if size > 1 {
                    size = max(1, size / 2)  // `offset` is a multiple of the old size, so also of the new one
                    fullPages = 0
                    continue
                }
                // One operation alone is too large: read just the ends of the answer for its id, so it
                // can be FAILED with the reason instead of blocking every query after it.
                let ends = AnswerEnds()
                _ = try? await forward("GET", target, headers: [("Accept", MediaType.operationCollection)],
                                       streaming: nil, into: ends, timeout: requestTimeout)
                let id = JSONScan.firstElementID(ofArray: "operations", inPrefix: ends.head)
                    ?? JSONScan.lonelyID(inSuffix: ends.tail)
                all.append(.undecodable(id: id, problem: "the operation is larger than the agent's answer limit "
                                        + "(\(transport.maxResponseBytes) bytes, \(ends.total) bytes read before giving up)",
                                        excerpt: JSONValue.excerpt(ends.head)))
                offset += 1
                continue
            }
            guard (200..<300).contains(response.status) else { throw PlatformError.status("GET", path, response) }
            guard let elements = OperationItem.elements(ofPage: response.body) else {
                throw PlatformError.malformed("GET", path, status: response.status, body: response.body, "no operations array")
            }
            all += elements.map { OperationItem.decode(response.body, $0) }
            if elements.count < size { return all }
            offset += elements.count
            fullPages += 1
            // Grow back after a shrink once a few pages went through, keeping `offset` a multiple of the size.
            if size < pageSize, fullPages >= 4, offset % (size * 2) == 0 {
                size *= 2
                fullPages = 0
            }
        }
    }



    /// Creates an operation (the platform side: applications and tests).
    public func createOperation(_ operation: JSONValue) async throws(PlatformError) -> JSONValue {
        let path = "/devicecontrol/operations"
        let (status, json) = try await send("POST", path, body: operation, accept: MediaType.operation)
        guard let json else { throw PlatformError.malformed("POST", path, status: status, body: [], "empty body") }
        return json
    }

    public func operation(id: String) async throws(PlatformError) -> JSONValue {
        let path = "/devicecontrol/operations/\(percentEncoded(id))"
        let (status, json) = try await send("GET", path, accept: MediaType.operation)
        guard let json else { throw PlatformError.malformed("GET", path, status: status, body: [], "empty body") }
        return json
    }

    // MARK: Alarms (seed step 11; measurements and events go through the outbox)

    /// Raises an alarm and returns it with its `id`.
    public func createAlarm(_ alarm: JSONValue) async throws(PlatformError) -> JSONValue {
        try await send(.createAlarm(alarm)) ?? .null
    }

    /// Alarms of a source, optionally filtered by status and type, all pages.
    public func alarms(source: String, status: String? = nil, type: String? = nil) async throws(PlatformError) -> [JSONValue] {
        var all: [JSONValue] = []
        let pageSize = 100
        for page in 1... {
            var query = [("source", source), ("pageSize", String(pageSize)), ("currentPage", String(page))]
            if let status { query.append(("status", status)) }
            if let type { query.append(("type", type)) }
            let (_, json) = try await send("GET", "/alarm/alarms", query: query, accept: MediaType.alarmCollection)
            let alarms = json?["alarms"]?.arrayValue ?? []
            all += alarms
            if alarms.count < pageSize || page >= 100 { break }
        }
        return all
    }

    public func updateAlarm(id: String, _ update: JSONValue) async throws(PlatformError) {
        _ = try await send("PUT", "/alarm/alarms/\(percentEncoded(id))", body: update, accept: MediaType.alarm)
    }
}

/// A base URL without trailing slashes, so paths starting with `/` can be appended.
package func withoutTrailingSlashes(_ url: String) -> String {
    var url = url
    while url.hasSuffix("/") { url.removeLast() }
    return url
}
