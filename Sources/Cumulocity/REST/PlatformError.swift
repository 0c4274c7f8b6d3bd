import JSONSupport

/// A platform request that failed, with what is needed to understand it from a log line.
public struct PlatformError: Error, CustomStringConvertible, Sendable {
    public enum Kind: Sendable, Equatable {
        /// No HTTP response (network, timeout, TLS); see ``transport``.
        case transport
        /// The platform answered with a status outside 2xx.
        case status
        /// The platform answered 2xx with a body that is not what the API promises.
        case malformedResponse
        /// Credentials could not be obtained (e.g. an unreadable password file).
        case credentials
    }

    public let kind: Kind
    public let method: String
    public let path: String
    /// The HTTP status, for `.status` and `.malformedResponse`.
    public let status: Int?
    /// The start of the response body (never the request body, which may hold secrets).
    public let bodyExcerpt: String
    public let detail: String
    public let transport: TransportError?

    public static func transport(_ method: String, _ path: String, _ error: TransportError) -> Self {
        Self(kind: .transport, method: method, path: path, status: nil, bodyExcerpt: "", detail: error.detail, transport: error)
    }

    public static func status(_ method: String, _ path: String, _ response: HTTPResponse) -> Self {
        Self(kind: .status, method: method, path: path, status: response.status,
             bodyExcerpt: JSONValue.excerpt(response.body), detail: "HTTP \(response.status)", transport: nil)
    }

    public static func malformed(_ method: String, _ path: String, status: Int, body: [UInt8], _ detail: String) -> Self {
        Self(kind: .malformedResponse, method: method, path: path, status: status,
             bodyExcerpt: JSONValue.excerpt(body), detail: detail, transport: nil)
    }

    public static func credentials(_ detail: String) -> Self {
        Self(kind: .credentials, method: "-", path: "-", status: nil, bodyExcerpt: "", detail: detail, transport: nil)
    }

    /// Whether sending the same request later may succeed: network trouble, 5xx, 408, 429 and 401
    /// (credentials can be renewed). Other 4xx answers will not change by retrying.
    public var isRetryable: Bool {
        switch kind {
        case .transport: return transport?.kind != .cancelled && transport?.kind != .shutdown
        case .credentials: return true
        // A success status with a body that is not the platform's JSON: a captive portal, a proxy
        // or a load balancer answered, not the platform. Nothing was decided; ask again later.
        case .malformedResponse: return true
        case .status:
            guard let status else { return false }
            return status >= 500 || status == 408 || status == 429 || status == 401
        }
    }

    public var isCancellation: Bool { transport?.kind == .cancelled || transport?.kind == .shutdown }

    public var description: String {
        var text = "\(method) \(path): \(detail)"
        if !bodyExcerpt.isEmpty { text += " — \(bodyExcerpt)" }
        return text
    }
}
