import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import JSONSupport

/// Certificate authentication (seeds 000/001) and OAuth2 over mTLS (seed 004), as the sandbox emulates them.
///
/// Tokens are JWT-shaped (header, claims with `iat`/`exp`, signature) so clients can read their
/// lifetime; the sandbox recognises its own tokens by keeping them, so the signature is random bytes.
extension Tenant {
    /// Issues a device access token to the holder of a verified client certificate.
    func issueDeviceToken(commonName: String) -> String {
        let user = "device_" + commonName
        let token = Self.jwt(["sub": .string(user), "ten": .string(settings.tenantID), "tci": "device-token"],
                             lifetime: settings.tokenLifetime)
        tokens[token] = IssuedToken(kind: .device, user: settings.tenantID + "/" + user, expires: .now + settings.tokenLifetime)
        tokenIssues.append((user, .now))
        recordSecret(token)
        return token
    }

    func issueOAuthToken(clientID: String) -> String {
        let token = Self.jwt(["sub": .string(clientID), "client_id": .string(clientID), "grant_type": "client_credentials"],
                             lifetime: settings.oauthTokenLifetime)
        tokens[token] = IssuedToken(kind: .oauth, user: clientID, expires: .now + settings.oauthTokenLifetime)
        recordSecret(token)
        return token
    }

    /// Whether a Bearer token is one of ours, of `kind`, neither revoked nor expired.
    func validToken(_ token: String, kind: IssuedToken.Kind = .device) -> Bool {
        guard let issued = tokens[token], issued.kind == kind, !issued.revoked, issued.expires > .now else {
            tokenRejections += 1
            return false
        }
        return true
    }

    /// The user a valid token was issued to, without the tenant prefix.
    func tokenHolder(_ token: String) -> String? {
        tokens[token].map { String($0.user.split(separator: "/").last ?? "") }
    }

    /// `POST /user/logout`: the token can no longer be used.
    func logout(_ token: String) {
        tokens[token]?.revoked = true
        logouts.append(token)
    }

    /// Revokes every device access token (as an administrator or a security incident would): the
    /// next request with one gets 401.
    public func revokeDeviceTokens() {
        for (token, issued) in tokens where issued.kind == .device { tokens[token]?.revoked = true }
    }

    /// Whether a token was revoked by a logout.
    public func isLoggedOut(_ token: String) -> Bool { logouts.contains(token) && tokens[token]?.revoked == true }

    public var deviceTokenCount: Int { tokenIssues.count }

    /// Every token issued, device and OAuth2 (tests check logs for them).
    public var issuedTokens: [String] { Array(tokens.keys) }

    func setMTLSBaseURL(_ url: String?) { mtlsBaseURL = url }

    public func putArtifact(_ name: String, _ bytes: [UInt8]) { artifacts[name] = bytes }

    func artifact(_ name: String) -> [UInt8]? {
        guard let bytes = artifacts[name] else { return nil }
        artifactDownloads.append(name)
        return bytes
    }

    /// Appends a secret to `settings.secretsFile`, if set.
    nonisolated func recordSecret(_ secret: String) {
        guard let file = settings.secretsFile else { return }
        let fd = open(file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return }
        let line = Array((secret + "\n").utf8)
        _ = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
    }

    static func jwt(_ claims: [String: JSONValue], lifetime: Duration) -> String {
        let now = Date().timeIntervalSince1970
        var payload = claims
        payload["iat"] = .int(Int64(now))
        payload["exp"] = .int(Int64(now) + lifetime.components.seconds)
        payload["jti"] = .string(randomText(16))
        let header: JSONValue = ["alg": "RS256", "typ": "JWT"]
        var generator = SystemRandomNumberGenerator()
        let signature = (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) }
        return [header.encoded(), JSONValue.object(payload).encoded(), signature].map(base64URL).joined(separator: ".")
    }

    static func base64URL(_ bytes: [UInt8]) -> String {
        String(Data(bytes).base64EncodedString().replacing("+", with: "-").replacing("/", with: "_").filter { $0 != "=" })
    }

    static func randomText(_ count: Int) -> String {
        var generator = SystemRandomNumberGenerator()
        return String((0..<count).map { _ in "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789".randomElement(using: &generator) ?? "x" })
    }
}
