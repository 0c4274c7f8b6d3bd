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
        /// The platform user (full access, as an operator or an application): creates and cancels
        /// operations, reads everything back.
        public var platformUsername = "admin"
        public var platformPassword = "admin-secret"
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
    var nextID = 10_000
    var managedObjects: [String: JSONValue] = [:]
    var putHistory: [String: [JSONValue]] = [:]
    /// When each device last sent what counts for availability (seconds since 1970, and as text).
    var lastMessage: [String: (seconds: Int64, text: String)] = [:]
    var externalIDs: [String: String] = [:]  // "type/value" → managed object id
    var operations: [String: JSONValue] = [:]
    var operationOrder: [String] = []
    var statusHistory: [String: [JSONValue]] = [:]
    var measurements: [JSONValue] = []
    var events: [JSONValue] = []
    var alarms: [String: JSONValue] = [:]
    var alarmOrder: [String] = []
    var refusals = Fault(answer: 503)
    var answerDrops = 0
    var rawAnswers: Fault<RawAnswer>?
    var closing = false
    var delays = Fault(answer: Duration.zero)
    var originals: [String: JSONValue] = [:]
    /// For the benchmark (Tenant+Timing.swift): each operation's statuses with wall-clock times,
    /// the subscriptions' times, and who waits for an operation's end.
    var timelines: [String: [(status: String, at: Int64)]] = [:]
    var subscriptions: [Int64] = []
    var endWaiters: [Int: (id: String, continuation: CheckedContinuation<Bool, Never>)] = [:]
    var nextEndWaiter = 0
    /// Added to every platform answer (a remote tenant), as `--latency` or `POST /sandbox/latency` set it.
    public var answerLatency: Duration?

    public func setAnswerLatency(_ latency: Duration?) { answerLatency = latency }
    /// The console prefills a new operation from these: fragment → operation body (the declarations' `example`).
    public internal(set) var operationExamples: [String: JSONValue] = [:]
    public func setOperationExamples(_ examples: [String: JSONValue]) { operationExamples = examples }
    var accepted: Set<String> = []
    var deviceUsers: [String: String] = [:]  // "<tenant>/<user>" → password
    /// How many times devices asked for credentials.
    public internal(set) var credentialRequests = 0
    var binaries: [String: [UInt8]] = [:]
    /// Each stored file's metadata (`name`, `type`, `contentType`, `length`, `c8y_IsBinary`, `owner`).
    var binaryInfo: [String: JSONValue] = [:]
    /// Files attached to events, by event id.
    var eventBinaries: [String: StoredFile] = [:]
    var cutNextDownloadAfter: Int?
    /// Each binary request as `id` and the `Range` header (or `-`), in order.
    public internal(set) var binaryRequests: [String] = []
    /// A pause between the 64 KiB pieces of every binary download (a slow link); `nil`: none.
    public internal(set) var binaryPace: Duration?
    /// Binary downloads whose body is being sent now.
    public internal(set) var binaryDownloadsSending = 0
    /// Bytes received so far by each `PUT /inventory/binaries/<id>` (while it arrives, and after).
    public internal(set) var uploadProgress: [String: Int] = [:]
    /// How many Bayeux handshakes the tenant has answered.
    public internal(set) var handshakeCount = 0
    var bayeux: [String: BayeuxClient] = [:]
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
}
