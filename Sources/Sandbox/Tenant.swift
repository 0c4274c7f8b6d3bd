import FoundationEssentials
public import JSONSupport

/// The emulated tenant's state: inventory, identity, operations, measurements, events, alarms and
/// Bayeux clients. Every platform rule the agent depends on is enforced here (operation status
/// transitions, the notification buffer, unknown clients), so tests exercise real behaviour.
public actor Tenant {
    public struct Settings: Sendable {
        public var tenantID = "t100"
        public var username = "device"
        public var password = "device-secret"
        /// How long a Bayeux connect is held open when nothing arrives.
        public var holdTime: Duration = .seconds(30)
        /// How long undelivered notifications are kept for a client that is not connected (the platform: 10 s).
        public var bufferTime: Duration = .seconds(10)
        /// The bootstrap user devices use to ask for their credentials (seed step 0).
        public var bootstrapTenantID = "management"
        public var bootstrapUsername = "devicebootstrap"
        public var bootstrapPassword = "bootstrap-secret"
        /// Lifetime of device access tokens (the platform's `device-token.lifespan.seconds`; its default is an hour).
        public var tokenLifetime: Duration = .seconds(3600)
        /// The OAuth2 client that may get artifact tokens with its certificate (`/oauth/token` over mTLS).
        public var oauthClientID = "switchyard-device"
        public var oauthTokenLifetime: Duration = .seconds(3600)
        /// A file to which every secret the tenant issues (passwords, tokens) is appended, one a line,
        /// so a test run's logs can be checked for leaks.
        public var secretsFile: String?
        public init() {}
    }

    public nonisolated let settings: Settings
    private var nextID = 10_000
    private(set) var managedObjects: [String: JSONValue] = [:]
    private(set) var putHistory: [String: [JSONValue]] = [:]
    private var externalIDs: [String: String] = [:]  // "type/value" → managed object id
    private(set) var operations: [String: JSONValue] = [:]
    private var operationOrder: [String] = []
    private(set) var statusHistory: [String: [JSONValue]] = [:]
    private(set) var measurements: [JSONValue] = []
    private(set) var events: [JSONValue] = []
    private var alarms: [String: JSONValue] = [:]
    private var alarmOrder: [String] = []
    private var refusals = Fault(answer: 503)
    private var answerDrops = 0
    private var rawAnswers: Fault<RawAnswer>?
    private var closing = false
    private var delays = Fault(answer: Duration.zero)
    private var originals: [String: JSONValue] = [:]
    /// For the benchmark (Tenant+Timing.swift): each operation's statuses with wall-clock times,
    /// the subscriptions' times, and who waits for an operation's end.
    var timelines: [String: [(status: String, at: Int64)]] = [:]
    var subscriptions: [Int64] = []
    var endWaiters: [Int: (id: String, continuation: CheckedContinuation<Bool, Never>)] = [:]
    var nextEndWaiter = 0
    /// Added to every platform answer (a remote tenant), as `--latency` or `POST /sandbox/latency` set it.
    public var answerLatency: Duration?

    public func setAnswerLatency(_ latency: Duration?) { answerLatency = latency }
    /// How many Bayeux handshakes the tenant has answered.
    public private(set) var handshakeCount = 0
    private var bayeux: [String: BayeuxClient] = [:]
    /// Device access tokens (JWT) and OAuth2 access tokens issued: token → holder and expiry.
    var tokens: [String: IssuedToken] = [:]
    /// When each device access token was issued, in order.
    public internal(set) var tokenIssues: [(user: String, at: ContinuousClock.Instant)] = []
    /// Tokens ended by `POST /user/logout`.
    public internal(set) var logouts: [String] = []
    /// Requests refused because their token was unknown, revoked or expired.
    public internal(set) var tokenRejections = 0
    var artifacts: [String: [UInt8]] = [:]
    /// The mTLS listener's base URL, for the OpenID discovery document.
    public internal(set) var mtlsBaseURL: String?
    /// Artifact downloads served, by artifact name.
    public internal(set) var artifactDownloads: [String] = []

    struct IssuedToken {
        enum Kind { case device, oauth }
        let kind: Kind
        let user: String
        let expires: ContinuousClock.Instant
        var revoked = false
    }

    struct BayeuxClient {
        var subscriptions: Set<String> = []
        var queue: [JSONValue] = []
        var waiter: (token: Int, continuation: CheckedContinuation<ConnectResult, Never>)?
        var idleSince = ContinuousClock.now
    }

    enum ConnectResult { case messages([JSONValue]), unknownClient }

    public init(settings: Settings = .init()) {
        self.settings = settings
        recordSecret(settings.password)
        recordSecret(settings.bootstrapPassword)
    }

    func newID() -> String {
        nextID += 1
        return String(nextID)
    }

    static func now() -> String { Date().formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true)) }

    // MARK: Faults

    /// The text a test puts in an operation to have it served as the lone surrogate `\ud800`: valid
    /// JSON syntax that JSON decoders refuse (a poison operation, as a broken integration may create).
    public static let loneSurrogateMarker = "@@lone-surrogate@@"

    /// Makes the next `count` platform requests fail with `status` (the sandbox's own routes are exempt),
    /// optionally only those with a method and a path prefix. Status 200 answers with an HTML body
    /// instead of JSON (a broken answer, as from a misbehaving proxy).
    public func refuse(next count: Int, status: Int = 503, method: String? = nil, pathPrefix: String? = nil) {
        refusals = Fault(count: count, answer: status, method: method, pathPrefix: pathPrefix)
    }

    /// Makes the next `count` answers to Bayeux requests get lost in transit: each is processed (the
    /// messages it carries leave the client's queue) and then cut off halfway, connection closed.
    public func dropNotificationAnswers(next count: Int) { answerDrops = count }

    func takeAnswerDrop() -> Bool {
        guard answerDrops > 0 else { return false }
        answerDrops -= 1
        return true
    }

    /// Makes the next `count` platform requests (matching method and path prefix) get this answer
    /// instead of the platform's: any status, content type and body, optionally cut after `truncate`
    /// bytes with the connection closed (a proxy, a portal or a broken link in between).
    public func answerRaw(next count: Int, status: Int, contentType: String, body: [UInt8], truncate: Int? = nil,
                          method: String? = nil, pathPrefix: String? = nil) {
        rawAnswers = Fault(count: count, answer: RawAnswer(status: status, contentType: contentType, body: body, truncate: truncate),
                           method: method, pathPrefix: pathPrefix)
    }

    struct RawAnswer: Sendable {
        let status: Int
        let contentType: String
        let body: [UInt8]
        let truncate: Int?
    }

    /// A fault for the next `count` requests with a method and a path prefix (either optional).
    struct Fault<Answer: Sendable>: Sendable {
        var count = 0
        var answer: Answer
        var method: String?
        var pathPrefix: String?

        /// The answer for this request, using one up, or `nil` when the fault does not apply.
        mutating func take(method: String, path: String) -> Answer? {
            guard count > 0 else { return nil }
            if let wanted = self.method, wanted != method { return nil }
            if let prefix = pathPrefix, !path.hasPrefix(prefix) { return nil }
            count -= 1
            return answer
        }
    }

    func takeRawAnswer(method: String, path: String) -> RawAnswer? {
        rawAnswers?.take(method: method, path: path)
    }

    /// Raw answers not yet used up.
    public var rawAnswersLeft: Int { rawAnswers?.count ?? 0 }

    /// Refusals not yet used up.
    public var refusalsLeft: Int { refusals.count }

    func takeRefusal(method: String, path: String) -> Int? {
        refusals.take(method: method, path: path)
    }

    /// Forgets every Bayeux client, as the platform does after a restart: their next request gets `402::Unknown client`.
    public func dropBayeuxClients() {
        for (_, client) in bayeux { client.waiter?.continuation.resume(returning: .unknownClient) }
        bayeux.removeAll()
    }

    public var bayeuxClientCount: Int { bayeux.count }

    /// Answers every held long-poll now (with nothing), as a server going down does, and holds no
    /// new one until ``reopen()``.
    public func releaseWaitingClients() {
        closing = true
        for (id, client) in bayeux {
            guard let waiter = client.waiter else { continue }
            bayeux[id]?.waiter = nil
            waiter.continuation.resume(returning: .messages([]))
        }
    }

    /// Holds long-polls again (after a restart of the server on this tenant).
    public func reopen() { closing = false }

    /// Holds the next `count` platform requests (matching method and path prefix) for `delay`
    /// before they are processed: a slow tenant, or a request in flight when the agent dies.
    public func delay(next count: Int, by delay: Duration, method: String? = nil, pathPrefix: String? = nil) {
        delays = Fault(count: count, answer: delay, method: method, pathPrefix: pathPrefix)
    }

    func takeDelay(method: String, path: String) -> Duration? {
        delays.take(method: method, path: path)
    }

    // MARK: Identity and inventory

    func lookup(type: String, externalId: String) -> String? { externalIDs["\(type)/\(externalId)"] }

    func register(type: String, externalId: String, for id: String) -> Bool {
        guard managedObjects[id] != nil else { return false }
        externalIDs["\(type)/\(externalId)"] = id
        return true
    }

    public func managedObject(_ id: String) -> JSONValue? { managedObjects[id] }

    /// The bodies of every PUT to a managed object, in order.
    public func updates(of id: String) -> [JSONValue] { putHistory[id] ?? [] }

    /// The managed object registered for an external id.
    public func device(externalIdType: String = "c8y_Serial", externalId: String) -> JSONValue? {
        lookup(type: externalIdType, externalId: externalId).flatMap { managedObjects[$0] }
    }

    func createManagedObject(_ body: JSONValue) -> JSONValue {
        let id = newID()
        var object = body.objectValue ?? [:]
        object["id"] = .string(id)
        object["creationTime"] = .string(Self.now())
        object["lastUpdated"] = .string(Self.now())
        for collection in ["childDevices", "childAssets", "deviceParents", "assetParents"] {
            object[collection] = ["references": []]
        }
        managedObjects[id] = .object(object)
        return .object(object)
    }

    func updateManagedObject(_ id: String, _ body: JSONValue) -> JSONValue? {
        guard let current = managedObjects[id] else { return nil }
        putHistory[id, default: []].append(body)
        var updated = current.merging(body)
        if case .object(var members) = updated {
            members["id"] = .string(id)
            members["lastUpdated"] = .string(Self.now())
            updated = .object(members)
        }
        managedObjects[id] = updated
        return updated
    }

    /// Adds a child device reference to a parent; `false` when either does not exist.
    func addChild(_ childID: String, to parentID: String) -> Bool {
        guard var parent = managedObjects[parentID]?.objectValue, let child = managedObjects[childID] else { return false }
        var references = parent["childDevices"]?["references"]?.arrayValue ?? []
        if !references.contains(where: { $0["managedObject"]?["id"]?.idValue == childID }) {
            references.append(["managedObject": ["id": .string(childID), "name": child["name"] ?? .null]])
        }
        parent["childDevices"] = ["references": .array(references)]
        managedObjects[parentID] = .object(parent)
        return true
    }

    // MARK: Device credentials (seed step 0)

    private var accepted: Set<String> = []
    private var deviceUsers: [String: String] = [:]  // "<tenant>/<user>" → password
    /// How many times devices asked for credentials.
    public private(set) var credentialRequests = 0

    /// Accepts a device in the device registration: its next credentials request is answered.
    public func accept(deviceId: String) {
        accepted.insert(deviceId)
    }

    /// Issues credentials to an accepted device (once), or `nil` (404) while it is not accepted.
    func issueCredentials(for deviceId: String) -> JSONValue? {
        credentialRequests += 1
        guard accepted.remove(deviceId) != nil else { return nil }
        let username = "device_" + deviceId
        var generator = SystemRandomNumberGenerator()
        let password = String((0..<20).map { _ in "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789".randomElement(using: &generator) ?? "x" })
        deviceUsers[settings.tenantID + "/" + username] = password
        recordSecret(password)
        return ["id": .string(deviceId), "tenantId": .string(settings.tenantID), "username": .string(username), "password": .string(password)]
    }

    /// Whether `user:password` may use the platform routes (the device user or an issued device user;
    /// the bootstrap user only for the credentials request).
    func authorized(user: String, password: String, credentialsRequest: Bool) -> Bool {
        if credentialsRequest {
            return password == settings.bootstrapPassword
                && [settings.bootstrapTenantID + "/" + settings.bootstrapUsername, settings.bootstrapUsername].contains(user)
        }
        if password == settings.password && [settings.tenantID + "/" + settings.username, settings.username].contains(user) { return true }
        return deviceUsers[user] == password
    }

    // MARK: Binaries

    private var binaries: [String: [UInt8]] = [:]
    private var cutNextDownloadAfter: Int?
    /// Each binary request as `id` and the `Range` header (or `-`), in order.
    public private(set) var binaryRequests: [String] = []

    /// Stores a file and returns its id (download it from `/inventory/binaries/<id>`).
    public func addBinary(_ bytes: [UInt8]) -> String {
        let id = newID()
        binaries[id] = bytes
        return id
    }

    /// The next binary download sends only `bytes` bytes of its body and then drops the connection.
    public func cutNextDownload(after bytes: Int) {
        cutNextDownloadAfter = bytes
    }

    func binary(_ id: String, range: String?) -> (bytes: [UInt8], cutAfter: Int?)? {
        binaryRequests.append("\(id) \(range ?? "-")")
        guard let bytes = binaries[id] else { return nil }
        defer { cutNextDownloadAfter = nil }
        return (bytes, cutNextDownloadAfter)
    }

    /// A pause between the 64 KiB pieces of every binary download (a slow link); `nil`: none.
    public private(set) var binaryPace: Duration?
    /// Binary downloads whose body is being sent now.
    public private(set) var binaryDownloadsSending = 0
    /// Bytes received so far by each `PUT /inventory/binaries/<id>` (while it arrives, and after).
    public private(set) var uploadProgress: [String: Int] = [:]

    public func setBinaryPace(_ pace: Duration?) { binaryPace = pace }

    func binaryDownload(started: Bool) { binaryDownloadsSending += started ? 1 : -1 }

    func uploadReceived(_ id: String, bytes: Int) { uploadProgress[id, default: 0] += bytes }

    /// Replaces a binary's content; `false` when there is no such binary.
    func replaceBinary(_ id: String, with bytes: [UInt8]) -> Bool {
        guard binaries[id] != nil else { return false }
        binaries[id] = bytes
        return true
    }

    /// The content of a binary.
    public func binaryContent(_ id: String) -> [UInt8]? { binaries[id] }

    // MARK: Operations

    /// Creates a PENDING operation (the platform side) and notifies subscribed agents.
    public func createOperation(_ body: JSONValue) -> JSONValue? {
        guard let deviceID = body["deviceId"]?.idValue, managedObjects[deviceID] != nil else { return nil }
        let id = newID()
        var operation = body.objectValue ?? [:]
        operation["id"] = .string(id)
        operation["deviceId"] = .string(deviceID)
        operation["status"] = "PENDING"
        operation["creationTime"] = .string(Self.now())
        operations[id] = .object(operation)
        operationOrder.append(id)
        statusHistory[id] = [["status": "PENDING", "time": .string(Self.now())]]
        recordStatus(id, "PENDING")
        originals[id] = .object(operation)
        deliver(.object(operation))
        return .object(operation)
    }

    /// Sends an operation's notification to subscribers again, as first sent (a duplicate delivery).
    public func redeliver(_ id: String) {
        if let operation = originals[id] { deliver(operation) }
    }

    public func operation(_ id: String) -> JSONValue? { operations[id] }

    /// Every status the operation went through with its time (`status`, `time`, optional `failureReason`).
    public func history(of id: String) -> [JSONValue] { statusHistory[id] ?? [] }

    func agentID(of deviceID: String) -> String {
        if managedObjects[deviceID]?["com_cumulocity_model_Agent"] != nil { return deviceID }
        for (id, object) in managedObjects {
            let children = object["childDevices"]?["references"]?.arrayValue ?? []
            if children.contains(where: { $0["managedObject"]?["id"]?.idValue == deviceID }) { return id }
        }
        return deviceID
    }

    func queryOperations(agentID: String?, deviceID: String?, status: String?) -> [JSONValue] {
        operationOrder.compactMap { operations[$0] }.filter { operation in
            let device = operation["deviceId"]?.idValue ?? ""
            if let status, operation["status"]?.stringValue != status { return false }
            if let deviceID, device != deviceID { return false }
            if let agentID, self.agentID(of: device) != agentID { return false }
            return true
        }
    }

    enum UpdateResult { case updated(JSONValue), notFound, rejected(String) }

    static let transitions: [String: Set<String>] = ["PENDING": ["EXECUTING"], "EXECUTING": ["SUCCESSFUL", "FAILED"]]

    func updateOperation(_ id: String, _ body: JSONValue) -> UpdateResult {
        guard let current = operations[id] else { return .notFound }
        var changes = body.objectValue ?? [:]
        changes["id"] = nil
        changes["deviceId"] = nil
        if let next = changes["status"]?.stringValue {
            let from = current["status"]?.stringValue ?? "PENDING"
            guard Self.transitions[from]?.contains(next) == true else {
                return .rejected("status cannot change from \(from) to \(next)")
            }
            var entry: [String: JSONValue] = ["status": .string(next), "time": .string(Self.now())]
            if let reason = changes["failureReason"] { entry["failureReason"] = reason }
            statusHistory[id, default: []].append(.object(entry))
        }
        let updated = current.merging(.object(changes))
        operations[id] = updated
        if let next = changes["status"]?.stringValue { recordStatus(id, next) }
        return .updated(updated)
    }

    // MARK: Measurements, events, alarms

    public func eventList(type: String? = nil) -> [JSONValue] {
        events.filter { type == nil || $0["type"]?.stringValue == type }
    }

    public func measurementList(type: String? = nil) -> [JSONValue] {
        measurements.filter { type == nil || $0["type"]?.stringValue == type }
    }

    func addMeasurement(_ body: JSONValue) -> JSONValue {
        let stored = body.merging(["id": .string(newID())])
        measurements.append(stored)
        return stored
    }

    func addEvent(_ body: JSONValue) -> JSONValue {
        let stored = body.merging(["id": .string(newID()), "creationTime": .string(Self.now())])
        events.append(stored)
        return stored
    }

    /// Raises an alarm; an ACTIVE alarm of the same source and type is counted instead of duplicated.
    func addAlarm(_ body: JSONValue) -> JSONValue {
        let source = body["source"]?["id"]?.idValue
        let type = body["type"]?.stringValue
        if let existingID = alarmOrder.first(where: { id in
            let alarm = alarms[id]
            return alarm?["source"]?["id"]?.idValue == source && alarm?["type"]?.stringValue == type
                && alarm?["status"]?.stringValue != "CLEARED"
        }), let existing = alarms[existingID] {
            let updated = existing.merging(["count": .int((existing["count"]?.intValue ?? 1) + 1)])
            alarms[existingID] = updated
            return updated
        }
        let id = newID()
        let stored = body.merging(["id": .string(id), "count": 1, "status": body["status"] ?? "ACTIVE"])
        alarms[id] = stored
        alarmOrder.append(id)
        return stored
    }

    public func alarmList(source: String? = nil, status: String? = nil, type: String? = nil) -> [JSONValue] {
        alarmOrder.compactMap { alarms[$0] }.filter { alarm in
            (source == nil || alarm["source"]?["id"]?.idValue == source)
                && (status == nil || alarm["status"]?.stringValue == status)
                && (type == nil || alarm["type"]?.stringValue == type)
        }
    }

    func updateAlarm(_ id: String, _ body: JSONValue) -> JSONValue? {
        guard let current = alarms[id] else { return nil }
        let updated = current.merging(body).merging(["id": .string(id)])
        alarms[id] = updated
        return updated
    }

    // MARK: Bayeux

    func handshake() -> String {
        let id = "sandbox-" + newID()
        handshakeCount += 1
        bayeux[id] = BayeuxClient()
        return id
    }

    func subscribe(_ clientID: String, to channel: String) -> Bool {
        guard bayeux[clientID] != nil else { return false }
        bayeux[clientID]?.subscriptions.insert(channel)
        recordSubscription()
        return true
    }

    func disconnect(_ clientID: String) {
        bayeux[clientID]?.waiter?.continuation.resume(returning: .messages([]))
        bayeux[clientID] = nil
    }

    /// Holds a connect until a notification arrives or the hold time passes.
    func connect(_ clientID: String) async -> ConnectResult {
        expireIdleClients()
        guard var client = bayeux[clientID] else { return .unknownClient }
        if !client.queue.isEmpty {
            let messages = client.queue
            client.queue.removeAll()
            client.idleSince = .now
            bayeux[clientID] = client
            return .messages(messages)
        }
        if closing { return .messages([]) }
        if let previous = client.waiter {  // a second connect replaces the first
            previous.continuation.resume(returning: .messages([]))
        }
        nextID += 1
        let token = nextID
        let hold = settings.holdTime
        Task { [weak self] in
            try? await Task.sleep(for: hold)
            await self?.release(clientID, token: token)
        }
        return await withCheckedContinuation { continuation in
            bayeux[clientID]?.waiter = (token, continuation)
        }
    }

    private func release(_ clientID: String, token: Int) {
        guard let waiter = bayeux[clientID]?.waiter, waiter.token == token else { return }
        bayeux[clientID]?.waiter = nil
        bayeux[clientID]?.idleSince = .now
        waiter.continuation.resume(returning: .messages([]))
    }

    /// Clients that have not polled within the buffer time lose their session (and their queued messages).
    private func expireIdleClients() {
        let now = ContinuousClock.now
        for (id, client) in bayeux where client.waiter == nil && now - client.idleSince > settings.bufferTime {
            bayeux[id] = nil
        }
    }

    private func deliver(_ operation: JSONValue) {
        expireIdleClients()
        let channel = "/" + agentID(of: operation["deviceId"]?.idValue ?? "")
        for (id, var client) in bayeux where client.subscriptions.contains(channel) {
            let message: JSONValue = ["channel": .string(channel), "data": operation, "id": .string(newID())]
            if let waiter = client.waiter {
                client.waiter = nil
                client.idleSince = .now
                bayeux[id] = client
                waiter.continuation.resume(returning: .messages(client.queue + [message]))
                bayeux[id]?.queue.removeAll()
            } else {
                client.queue.append(message)
                bayeux[id] = client
            }
        }
    }
}
