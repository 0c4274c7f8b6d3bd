import FoundationEssentials

/// Supplies the `Authorization` header for platform requests.
///
/// `basic` is the device user's credentials; the bootstrap and certificate modes add providers
/// that obtain credentials or tokens at run time behind the same interface.
public protocol CredentialProvider: Sendable {
    /// The value of the `Authorization` header.
    /// - Throws: ``PlatformError`` of kind `.credentials` when none can be had now.
    func authorization() async throws(PlatformError) -> String
    /// Called after a 401 for a request sent with `authorization`: forget that token (if it is still
    /// the current one) so the next call fetches a fresh one.
    func invalidate(_ authorization: String) async
}

/// Basic authentication as `<tenant>/<username>:<password>` (seed step 0: the tenant id prefixes
/// the user name, so the host name need not match the tenant).
public struct BasicCredentials: CredentialProvider, CustomStringConvertible {
    public let tenant: String?
    public let username: String
    private let password: String

    public init(tenant: String?, username: String, password: String) {
        self.tenant = tenant
        self.username = username
        self.password = password
    }

    public var user: String {
        if let tenant, !tenant.isEmpty { return "\(tenant)/\(username)" }
        return username
    }

    public func authorization() async throws(PlatformError) -> String {
        "Basic " + Data("\(user):\(password)".utf8).base64EncodedString()
    }

    public func invalidate(_ authorization: String) async {}

    /// Never shows the password.
    public var description: String { "basic(\(user))" }
}
