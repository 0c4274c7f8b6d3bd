import JSONSupport

/// A platform request that failed, with what is needed to understand it from a log line.
public struct PlatformError: Error, CustomStringConvertible, Sendable {
    /// What kind of failure it is; a struct over a private enum, so codes can be added without
    /// breaking a caller's `switch`.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        private enum Base: String, Sendable { case transport, status, malformedResponse, credentials, localFile }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// No HTTP response (network, timeout, TLS); see ``PlatformError/transport``.
        public static let transport = Code(.transport)
        /// The platform answered with a status outside 2xx.
        public static let status = Code(.status)
        /// The platform answered 2xx with a body that is not what the API promises (no id in a
        /// created object, not JSON: a captive portal or a proxy).
        public static let malformedResponse = Code(.malformedResponse)
        /// Credentials could not be obtained (e.g. an unreadable password file).
        public static let credentials = Code(.credentials)
        /// A file the request sends could not be read; nothing was sent.
        public static let localFile = Code(.localFile)

        public var description: String { base.rawValue }
    }

    public let code: Code
    public let method: String
    public let path: String
    /// The HTTP status, for `.status` and `.malformedResponse`.
    public let status: Int?
    /// The start of the response body (never the request body, which may hold secrets).
    public let bodyExcerpt: String
    public let detail: String
    public let transport: TransportError?
    /// Where the error was made (`file:line` of the throw site).
    public let origin: String

    private init(_ code: Code, _ method: String, _ path: String, status: Int? = nil, bodyExcerpt: String = "", detail: String,
                 transport: TransportError? = nil, file: String, line: Int) {
        self.code = code
        self.method = method
        self.path = path
        self.status = status
        self.bodyExcerpt = bodyExcerpt
        self.detail = detail
        self.transport = transport
        self.origin = "\(file):\(line)"
    }

    public static func transport(_ method: String, _ path: String, _ error: TransportError,
                                 file: String = #fileID, line: Int = #line) -> Self {
        Self(.transport, method, path, detail: error.detail, transport: error, file: file, line: line)
    }

    public static func status(_ method: String, _ path: String, _ response: HTTPResponse,
                              file: String = #fileID, line: Int = #line) -> Self {
        Self(.status, method, path, status: response.status, bodyExcerpt: JSONValue.excerpt(response.body),
             detail: "HTTP \(response.status)", file: file, line: line)
    }

    public static func malformed(_ method: String, _ path: String, status: Int, body: [UInt8], _ detail: String,
                                 file: String = #fileID, line: Int = #line) -> Self {
        Self(.malformedResponse, method, path, status: status, bodyExcerpt: JSONValue.excerpt(body), detail: detail,
             file: file, line: line)
    }

    public static func credentials(_ detail: String, file: String = #fileID, line: Int = #line) -> Self {
        Self(.credentials, "-", "-", detail: detail, file: file, line: line)
    }

    public static func localFile(_ method: String, _ path: String, _ detail: String, file: String = #fileID, line: Int = #line) -> Self {
        Self(.localFile, method, path, detail: detail, file: file, line: line)
    }

    /// Whether sending the same request later may succeed: network trouble, 5xx, 408, 429 and 401
    /// (credentials can be renewed). Other 4xx answers will not change by retrying.
    public var isRetryable: Bool {
        switch code {
        case .transport: return transport?.code != .cancelled && transport?.code != .shutdown
        case .credentials: return true
        // A success status with a body that is not the platform's JSON: a captive portal, a proxy
        // or a load balancer answered, not the platform. Nothing was decided; ask again later.
        case .malformedResponse: return true
        case .status:
            guard let status else { return false }
            return status >= 500 || status == 408 || status == 429 || status == 401
        default: return false
        }
    }

    public var isCancellation: Bool { transport?.code == .cancelled || transport?.code == .shutdown }

    public var description: String {
        var text = "\(method) \(path): \(detail)"
        if !bodyExcerpt.isEmpty { text += " — \(bodyExcerpt)" }
        return text
    }
}
