public import JSONSupport
public import Logging

/// Receives real-time operations over Bayeux long-polling (`/notification/operations`, seed step 6–7).
///
/// Handshake, subscribe to the channel (`/<agent id>`), then connect in a loop. The server's advice
/// is honoured (`interval`, `timeout`, `reconnect: retry|handshake|none`); `402::Unknown client` or a
/// lost session leads to a new handshake and subscription, after which ``run(onSubscribed:onMessage:)``
/// calls `onSubscribed` again so the caller can query PENDING operations and miss nothing.
/// Network errors are retried with capped exponential backoff and jitter. On cancellation the
/// session is disconnected cleanly.
public struct BayeuxListener: Sendable {
    public struct Configuration: Sendable {
        /// The notification endpoint.
        public var path = "/notification/operations"
        /// The connect hold time to use when the server gives no `advice.timeout`.
        public var defaultHoldTime: Duration = .seconds(60)
        /// The longest pause between a poll returning and the next (the platform buffers 10 s).
        public var maximumInterval: Duration = .seconds(9)
        /// Retry delays after failed requests.
        public var backoff = Backoff(initial: .milliseconds(250), maximum: .seconds(9))

        public init() {}
    }

    let client: PlatformClient
    let channel: String
    let configuration: Configuration
    let logger: Logger
    /// Told before every request and every pause how long it may take at most (its timeout or its
    /// length, plus a margin), so a listener stuck beyond that shows as stalled.
    let liveness: Liveness?

    /// The name the listener reports under in ``Liveness``.
    public static let livenessName = "notification listener"

    public init(client: PlatformClient, channel: String, configuration: Configuration = .init(), liveness: Liveness? = nil,
                logger: Logger) {
        self.client = client
        self.channel = channel
        self.configuration = configuration
        self.liveness = liveness
        self.logger = logger
    }

    /// The margin past a request's timeout or a pause's length before the listener counts as stalled.
    static let stallMargin: Duration = .seconds(30)

    private func promise(_ within: Duration) {
        liveness?.beat(Self.livenessName, within: within + Self.stallMargin)
    }

    /// Listens until the task is cancelled.
    /// - Parameters:
    ///   - onSubscribed: called (in a child task) after every successful subscription.
    ///   - onInterrupted: called (in a child task) when a long-poll ends in an error or a timeout: its
    ///     answer may have been lost in transit with operations in it, which the server will not send
    ///     again, so the caller should ask the platform what is pending.
    ///   - onMessage: called with the `data` of every message on the channel, in order, each decoded
    ///     on its own (one the decoder refuses comes as ``OperationItem/undecodable(id:problem:excerpt:)``).
    ///   - onRetry: called (in the listener's task; keep it quick) after every failed request, with the
    ///     error and the pause before the next attempt, with or without a session.
    public func run(onSubscribed: @escaping @Sendable () async -> Void,
                    onInterrupted: @escaping @Sendable () async -> Void = {},
                    onRetry: @escaping @Sendable (_ error: any Error, _ delay: Duration) -> Void = { _, _ in },
                    onMessage: @escaping @Sendable (OperationItem) async -> Void) async {
        await withDiscardingTaskGroup { group in
            var session: String?
            var holdTime = configuration.defaultHoldTime
            var failures = 0
            defer { liveness?.retire(Self.livenessName) }
            while !Task.isCancelled {
                do {
                    if session == nil {
                        promise(client.requestTimeout * 2)
                        let (clientID, advice) = try await handshake()
                        if let timeout = advice.timeout { holdTime = timeout }
                        try await subscribe(clientID)
                        session = clientID
                        logger.info("subscribed to operations", metadata: ["channel": "\(channel)"])
                        group.addTask { await onSubscribed() }
                    }
                    guard let clientID = session else { continue }
                    promise(holdTime + Self.connectMargin)
                    let reply = try await connect(clientID, holdTime: holdTime)
                    failures = 0
                    for data in reply.data { await onMessage(data) }
                    if let timeout = reply.advice.timeout { holdTime = timeout }
                    switch reply.advice.reconnect {
                    case .handshake:
                        logger.notice("server asks for a new handshake", metadata: ["reason": "\(reply.error ?? "advice")"])
                        session = nil
                    case .none:
                        logger.error("server advises not to reconnect; handshaking again after a pause",
                                     metadata: ["reason": "\(reply.error ?? "advice")"])
                        session = nil
                        promise(configuration.backoff.maximum)
                        try await Task.sleep(for: configuration.backoff.maximum)
                    case .retry:
                        if let interval = reply.advice.interval, interval > .zero {
                            promise(min(interval, configuration.maximumInterval))
                            try await Task.sleep(for: min(interval, configuration.maximumInterval))
                        }
                    }
                } catch is CancellationError {
                    break
                } catch let error as PlatformError where error.isCancellation {
                    break
                } catch {
                    failures += 1
                    let delay = configuration.backoff.delay(attempt: failures)
                    logger.warning("notification request failed; retrying",
                                   metadata: ["error": "\(error)", "retryIn": "\(delay.readable)"])
                    if error is BayeuxError { session = nil }
                    // Every interrupted poll may have lost an answer (the caller coalesces the requests).
                    if session != nil { group.addTask { await onInterrupted() } }
                    onRetry(error, delay)
                    promise(delay)
                    do { try await Task.sleep(for: delay) } catch { break }
                }
            }
            if let clientID = session {
                // A new task: the listener's own is cancelled, yet the disconnect should still go out.
                await Task { try? await disconnect(clientID) }.value
            }
        }
    }

    // MARK: Messages

    struct Advice {
        enum Reconnect { case retry, handshake, none }
        var reconnect: Reconnect = .retry
        var interval: Duration?
        var timeout: Duration?

        init(_ json: JSONValue?) {
            switch json?["reconnect"]?.stringValue {
            case "handshake": reconnect = .handshake
            case "none": reconnect = .none
            default: reconnect = .retry
            }
            interval = json?["interval"]?.intValue.map { .milliseconds($0) }
            timeout = json?["timeout"]?.intValue.map { .milliseconds($0) }
        }
    }

    struct ConnectReply {
        var data: [OperationItem] = []
        var advice = Advice(nil)
        var error: String?
    }

    /// Posts one message; the reply's messages are split before they are decoded, so one message
    /// the decoder refuses (say, an operation with a lone surrogate) does not lose the others.
    private func post(_ message: JSONValue, timeout: Duration? = nil) async throws(PlatformError) -> [BayeuxReplyMessage] {
        let path = configuration.path
        let response = try await client.forward("POST", path, headers: [("Accept", MediaType.json), ("Content-Type", MediaType.json)],
                                                body: JSONValue.array([message]).encoded(), timeout: timeout)
        guard (200..<300).contains(response.status) else { throw PlatformError.status("POST", path, response) }
        guard let messages = BayeuxReplyMessage.split(response.body) else {
            throw PlatformError.malformed("POST", path, status: response.status, body: response.body, "Bayeux reply is not an array")
        }
        return messages
    }

    private func messages(_ replies: [BayeuxReplyMessage]) -> [JSONValue] {
        replies.compactMap { if case .message(let message) = $0 { message } else { nil } }
    }

    private func meta(_ replies: [BayeuxReplyMessage], _ channel: String) throws(BayeuxError) -> JSONValue {
        guard let reply = messages(replies).first(where: { $0["channel"]?.stringValue == channel }) else {
            throw BayeuxError(channel: channel, error: "no \(channel) reply")
        }
        guard reply["successful"]?.boolValue == true else {
            throw BayeuxError(channel: channel, error: reply["error"]?.stringValue ?? "unsuccessful")
        }
        return reply
    }

    func handshake() async throws -> (String, Advice) {
        let replies = try await post([
            "channel": "/meta/handshake", "version": "1.0", "minimumVersion": "1.0",
            "supportedConnectionTypes": ["long-polling"],
        ])
        let reply = try meta(replies, "/meta/handshake")
        guard let clientID = reply["clientId"]?.stringValue else {
            throw BayeuxError(channel: "/meta/handshake", error: "no clientId")
        }
        return (clientID, Advice(reply["advice"]))
    }

    func subscribe(_ clientID: String) async throws {
        let replies = try await post(["channel": "/meta/subscribe", "subscription": .string(channel), "clientId": .string(clientID)])
        _ = try meta(replies, "/meta/subscribe")
    }

    func connect(_ clientID: String, holdTime: Duration) async throws -> ConnectReply {
        let replies = try await post(["channel": "/meta/connect", "clientId": .string(clientID), "connectionType": "long-polling"],
                                     timeout: holdTime + Self.connectMargin)
        var reply = ConnectReply()
        for element in replies {
            let message: JSONValue
            switch element {
            case .message(let decoded):
                message = decoded
            case .undecodable(let name, let data):
                if name == channel || name == nil, let data {
                    reply.data.append(data)
                } else {
                    logger.error("Bayeux reply holds a message that cannot be decoded; skipped", metadata: ["channel": "\(name ?? "-")"])
                }
                continue
            }
            let name = message["channel"]?.stringValue
            if name == channel, let data = message["data"] {
                reply.data.append(.operation(data))
            } else if name == "/meta/connect" {
                reply.advice = Advice(message["advice"])
                if message["successful"]?.boolValue != true {
                    let error = message["error"]?.stringValue ?? "unsuccessful connect"
                    reply.error = error
                    // An unknown or expired client cannot continue its session whatever the advice says.
                    if error.hasPrefix("402") || reply.advice.reconnect == .retry && message["advice"] == nil {
                        reply.advice.reconnect = .handshake
                    }
                }
            }
        }
        return reply
    }

    /// How much longer than the hold time a connect may take before it counts as lost.
    static let connectMargin: Duration = .seconds(20)

    func disconnect(_ clientID: String) async throws {
        _ = try await post(["channel": "/meta/disconnect", "clientId": .string(clientID)], timeout: .seconds(5))
    }
}

/// A Bayeux meta request the server answered as unsuccessful.
public struct BayeuxError: Error, CustomStringConvertible {
    public let channel: String
    public let error: String
    public var description: String { "\(channel) failed: \(error)" }
}
