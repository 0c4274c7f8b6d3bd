/// One HTTP request as the transport sends it.
public struct HTTPRequest: Sendable {
    public var method: String
    public var url: String
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]?
    /// The whole exchange must finish within this time (long-polls set it above the server's hold time).
    public var timeout: Duration
    /// A client certificate for mutual TLS. Such a request always opens a fresh connection, so a
    /// rotated certificate is used at once and no connection without it is reused by mistake.
    public var clientCertificate: ClientCertificate?

    public init(method: String, url: String, headers: [(name: String, value: String)] = [],
                body: [UInt8]? = nil, timeout: Duration = .seconds(30), clientCertificate: ClientCertificate? = nil) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.timeout = timeout
        self.clientCertificate = clientCertificate
    }
}

/// A response: status, headers (names lower-cased) and body.
public struct HTTPResponse: Sendable {
    public let status: Int
    public let headers: [String: String]
    public let body: [UInt8]

    public init(status: Int, headers: [String: String], body: [UInt8]) {
        self.status = status
        self.headers = headers
        self.body = body
    }
}

/// A request that produced no HTTP response: DNS, connect, TLS, timeout, cancellation, oversize body.
public struct TransportError: Error, CustomStringConvertible, Sendable {
    /// What kind of failure it is; a struct over a private enum, so codes can be added without
    /// breaking a caller's `switch`.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        private enum Base: String, Sendable { case network, timeout, cancelled, tooLarge, shutdown }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// DNS, connect, TLS, a connection that broke.
        public static let network = Code(.network)
        /// The request's time limit passed, or the transfer stalled.
        public static let timeout = Code(.timeout)
        /// The task that waited for the answer was cancelled.
        public static let cancelled = Code(.cancelled)
        /// The answer is larger than the transport accepts.
        public static let tooLarge = Code(.tooLarge)
        /// The transport was shut down.
        public static let shutdown = Code(.shutdown)

        public var description: String { base.rawValue }
    }

    public let code: Code
    public let method: String
    public let url: String
    public let detail: String
    /// Where the error was made (`file:line` of the throw site).
    public let origin: String

    public init(_ code: Code, method: String, url: String, detail: String, file: String = #fileID, line: Int = #line) {
        self.code = code
        self.method = method
        self.url = url
        self.detail = detail
        self.origin = "\(file):\(line)"
    }

    public var description: String { "\(method) \(url): \(detail)" }
}

/// TLS settings of the transport. Verification is on unless `insecure` is set explicitly (the agent
/// then logs a warning at every start).
public struct TLSConfiguration: Sendable, Equatable {
    /// PEM file of trusted CAs; `nil` uses the system store.
    public var caFile: String?
    /// Skips verifying the server's certificate and host name. Never the default.
    public var insecure: Bool
    /// A client certificate presented on every connection that asks for one (certificate mode): a
    /// tenant endpoint may require it on all requests, not only when a token is fetched.
    public var clientCertificate: ClientCertificate?

    public init(caFile: String? = nil, insecure: Bool = false, clientCertificate: ClientCertificate? = nil) {
        self.caFile = caFile
        self.insecure = insecure
        self.clientCertificate = clientCertificate
    }
}

/// A client certificate and its private key, as PEM files (read at every TLS handshake).
public struct ClientCertificate: Sendable, Equatable {
    public var certificateFile: String
    public var keyFile: String

    public init(certificateFile: String, keyFile: String) {
        self.certificateFile = certificateFile
        self.keyFile = keyFile
    }
}
