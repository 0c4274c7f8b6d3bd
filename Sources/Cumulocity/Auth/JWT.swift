import FoundationEssentials
import JSONSupport

/// The claims of a JSON Web Token, read without checking its signature: the device only needs to
/// know when its own token expires (the platform checks signatures).
public struct JWTClaims: Sendable, Equatable {
    /// `exp`, seconds since 1970.
    public let expiresAt: Double
    /// `iat`, seconds since 1970, when present.
    public let issuedAt: Double?

    /// - Returns: `nil` when the token is not three base64url parts with a JSON payload holding a numeric `exp`.
    public init?(token: String) {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let payload = Self.base64URLDecode(parts[1]),
              let json = try? JSONValue.parse(payload), let exp = json["exp"]?.doubleValue else { return nil }
        self.expiresAt = exp
        self.issuedAt = json["iat"]?.doubleValue
    }

    /// How long the token was valid when issued: `exp − iat`, or `exp − now` without `iat`.
    public func lifetime(now: Date = Date()) -> Duration {
        let seconds = expiresAt - (issuedAt ?? now.timeIntervalSince1970)
        return .milliseconds(Int64(max(0, seconds) * 1000))
    }

    static func base64URLDecode(_ text: Substring) -> [UInt8]? {
        var base64 = String(text.replacing("-", with: "+").replacing("_", with: "/"))
        while base64.count % 4 != 0 { base64 += "=" }
        return Data(base64Encoded: base64).map { [UInt8]($0) }
    }
}
