import FoundationEssentials
import JSONSupport
public import Logging

/// X.509 device authentication (seeds 000/001): the device proves its identity with its certificate
/// over mutual TLS at `POST /devicecontrol/deviceAccessToken` and uses the JWT it gets as a Bearer
/// token for every other request.
///
/// A new token is fetched once half of the current one's lifetime has passed (``keepFresh()`` does it
/// on time even when the agent is idle); if that fails, the current token is used until it expires.
/// A 401 drops the token that was refused, so the request is retried once with a new one.
/// Concurrent callers share one fetch. The token is never logged.
public actor DeviceTokenProvider: CredentialProvider {
    public struct Settings: Sendable {
        /// Base URL of the mTLS endpoint (`c8y.mtlsUrl`, often the tenant URL on port 8443).
        public var mtlsURL: String
        /// Base URL of the tenant, for `POST /user/logout`.
        public var tenantURL: String
        public var certificate: ClientCertificate
        /// PEM file of intermediate certificates sent in `X-Ssl-Cert-Chain` after the device's own.
        public var chainFile: String?
        public var timeout: Duration = .seconds(30)

        public init(mtlsURL: String, tenantURL: String, certificate: ClientCertificate, chainFile: String? = nil) {
            self.mtlsURL = withoutTrailingSlashes(mtlsURL)
            self.tenantURL = withoutTrailingSlashes(tenantURL)
            self.certificate = certificate
            self.chainFile = chainFile
        }
    }

    typealias Token = TokenCache.Token

    public let settings: Settings
    private let transport: CurlTransport
    private let logger: Logger
    private let cache = TokenCache()

    public init(settings: Settings, transport: CurlTransport, logger: Logger) {
        self.settings = settings
        self.transport = transport
        self.logger = logger
    }

    public func authorization() async throws(PlatformError) -> String {
        let now = ContinuousClock.now
        switch await cache.current(orFetch: obtain, fetched: announce) {
        case .success(let fresh):
            return "Bearer " + fresh.value
        case .failure(let error):
            if let token = await cache.token, now < token.expiresAt {
                logger.warning("cannot renew the device access token; using the current one until it expires",
                               metadata: ["error": "\(error)"])
                return "Bearer " + token.value
            }
            throw error
        }
    }

    public func invalidate(_ authorization: String) async {
        guard authorization.hasPrefix("Bearer "), await cache.invalidate(String(authorization.dropFirst(7))) else { return }
        logger.notice("the tenant refused the device access token (401); fetching a new one")
    }

    /// Forgets the token, e.g. after the certificate was replaced on disk: the next request fetches
    /// a token with the new certificate.
    public func forget() async {
        await cache.forget()
    }

    /// Fetches tokens on time: whenever half of the current token's lifetime has passed. Runs until cancelled.
    public func keepFresh(retry: Duration = .seconds(5)) async {
        while !Task.isCancelled {
            let wait = await cache.token.map { $0.refreshAt - .now } ?? .zero
            if wait > .zero {
                do { try await Task.sleep(for: min(wait, .seconds(60))) } catch { return }
                continue
            }
            if case .failure(let error) = await cache.fetch(obtain, fetched: announce) {
                if Task.isCancelled { return }
                logger.warning("cannot renew the device access token; retrying", metadata: ["error": "\(error)", "retryIn": "\(retry.readable)"])
                do { try await Task.sleep(for: retry) } catch { return }
            }
        }
    }

    /// Ends the session: `POST /user/logout` with the current token, so it cannot be misused (seed 000).
    public func logout() async {
        guard let token = await cache.forget() else { return }
        let request = HTTPRequest(method: "POST", url: settings.tenantURL + "/user/logout", headers: [
            ("Accept", "application/json"), ("Content-Type", "application/json"), ("Authorization", "Bearer " + token.value),
        ], body: [], timeout: .seconds(5))
        do {
            let response = try await transport.send(request)
            if (200..<300).contains(response.status) {
                logger.info("logged out; the device access token is revoked")
            } else {
                logger.warning("logout was refused", metadata: ["status": "\(response.status)"])
            }
        } catch {
            logger.warning("cannot log out", metadata: ["error": "\(error)"])
        }
    }

    /// Obtains a token over mTLS (for the cache).
    private nonisolated func obtain() async -> Result<Token, PlatformError> {
        logger.debug("fetching a device access token", metadata: ["url": "\(settings.mtlsURL)"])
        return await Self.obtain(settings, transport)
    }

    private nonisolated func announce(_ fresh: Token) {
        logger.info("device access token obtained", metadata: [
            "validFor": "\(fresh.expiresAt - .now)", "renewIn": "\(fresh.refreshAt - .now)",
        ])
    }

    static let path = "/devicecontrol/deviceAccessToken"

    private static func obtain(_ settings: Settings, _ transport: CurlTransport) async -> Result<Token, PlatformError> {
        let chain: String
        do throws(CertificateError) {
            chain = try certificateChainHeader(settings)
        } catch {
            return .failure(.credentials("device certificate: \(error)"))
        }
        let request = HTTPRequest(method: "POST", url: settings.mtlsURL + path,
                                  headers: [("Accept", "application/json"), ("X-Ssl-Cert-Chain", chain)],
                                  body: [], timeout: settings.timeout, clientCertificate: settings.certificate)
        let started = ContinuousClock.now
        let response: HTTPResponse
        do {
            response = try await transport.send(request)
        } catch {
            if error.code == .cancelled || error.code == .shutdown { return .failure(.transport("POST", path, error)) }
            return .failure(.credentials("cannot get a device access token from \(settings.mtlsURL): \(explainTLS(error.detail))"))
        }
        guard (200..<300).contains(response.status) else {
            if response.status == 401 || response.status == 403 {
                return .failure(.credentials(
                    "the tenant refused the device certificate at \(settings.mtlsURL + path) (HTTP \(response.status)): "
                        + "is the device registered for certificate authentication and its CA among the tenant's trusted certificates? — "
                        + JSONValue.excerpt(response.body)))
            }
            return .failure(.status("POST", path, response))
        }
        guard let json = try? JSONValue.parse(response.body), let value = json["accessToken"]?.stringValue, !value.isEmpty else {
            return .failure(.malformed("POST", path, status: response.status, body: [], "no accessToken in the answer"))
        }
        let lifetime = JWTClaims(token: value)?.lifetime() ?? .seconds(300)
        return .success(Token(value: value, refreshAt: started + lifetime / 2, expiresAt: started + lifetime))
    }

    /// The device certificate followed by the configured chain, each PEM block on one line
    /// (header values cannot hold line breaks), separated by spaces.
    static func certificateChainHeader(_ settings: Settings) throws(CertificateError) -> String {
        let own = try X509Certificate.read(file: settings.certificate.certificateFile)
        let now = Date()
        guard let leaf = own.first else { throw CertificateError(path: settings.certificate.certificateFile, "no certificate") }
        if leaf.notAfter < now {
            throw CertificateError(path: settings.certificate.certificateFile,
                                   "the device certificate expired on \(leaf.notAfter.formatted(.iso8601)); install a renewed one")
        }
        if leaf.notBefore > now {
            throw CertificateError(path: settings.certificate.certificateFile,
                                   "the device certificate is not valid before \(leaf.notBefore.formatted(.iso8601)); is the device's clock right?")
        }
        var certificates = own
        if let chainFile = settings.chainFile {
            for certificate in try X509Certificate.read(file: chainFile) where !certificates.contains(certificate) {
                certificates.append(certificate)
            }
        }
        return certificates.map { certificate in
            "-----BEGIN CERTIFICATE----- " + Data(certificate.der).base64EncodedString() + " -----END CERTIFICATE-----"
        }.joined(separator: " ")
    }
}

/// libcurl's TLS error text, with what it most likely means for a device.
func explainTLS(_ detail: String) -> String {
    let text = detail.lowercased()
    let hint: String? =
        if text.contains("unknown ca") { "the server does not trust the CA that signed the device certificate" }
        else if text.contains("certificate expired") { "the server says the device certificate has expired" }
        else if text.contains("certificate required") || text.contains("handshake failure") { "the server wants a client certificate it accepts" }
        else if text.contains("bad certificate") || text.contains("certificate unknown") { "the server refused the device certificate" }
        else if text.contains("private key") || text.contains("key values mismatch") { "the private key cannot be used with the device certificate" }
        else if text.contains("client certificate") { "the device certificate file cannot be used" }
        else if text.contains("ssl certificate problem") || text.contains("certificate verify failed") { "the server's certificate is not trusted (auth.ca)" }
        else { nil }
    return hint.map { "\($0) (\(detail))" } ?? detail
}
