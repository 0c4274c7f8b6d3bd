import JSONSupport
public import Logging

/// OAuth2 client credentials over mutual TLS (RFC 8705; seed 004), for artifact hosts outside the
/// tenant: the client certificate authenticates the device, so no client secret exists to leak.
///
/// The token endpoint comes from the issuer's `/.well-known/openid-configuration`:
/// `mtls_endpoint_aliases.token_endpoint`, else `token_endpoint`. The token is cached until shortly
/// before `expires_in` runs out; a 401 from the host drops it so the next request gets a new one.
public actor OAuth2ClientCredentials: CredentialProvider {
    public struct Settings: Sendable, Equatable {
        /// The issuer's base URL, where `/.well-known/openid-configuration` is served.
        public var issuer: String
        public var clientID: String
        public var certificate: ClientCertificate
        public var timeout: Duration = .seconds(30)

        public init(issuer: String, clientID: String, certificate: ClientCertificate) {
            self.issuer = withoutTrailingSlashes(issuer)
            self.clientID = clientID
            self.certificate = certificate
        }
    }

    public let settings: Settings
    private let transport: CurlTransport
    private let logger: Logger
    private var tokenEndpoint: String?
    private let cache = TokenCache()
    /// How many tokens were obtained.
    public private(set) var fetchCount = 0

    public init(settings: Settings, transport: CurlTransport, logger: Logger) {
        self.settings = settings
        self.transport = transport
        self.logger = logger
    }

    public func authorization() async throws(PlatformError) -> String {
        let result = await cache.current(orFetch: { await self.obtain() })
        return "Bearer " + (try result.get()).value
    }

    /// Asks the issuer's token endpoint (discovered first) for a token.
    private func obtain() async -> Result<TokenCache.Token, PlatformError> {
        let endpoint: String
        do {
            endpoint = try await discover()
        } catch {
            return .failure(error)
        }
        let body = "grant_type=client_credentials&client_id=" + percentEncoded(settings.clientID)
        let request = HTTPRequest(method: "POST", url: endpoint, headers: [
            ("Accept", "application/json"), ("Content-Type", "application/x-www-form-urlencoded"),
        ], body: Array(body.utf8), timeout: settings.timeout, clientCertificate: settings.certificate)
        let started = ContinuousClock.now
        let response: HTTPResponse
        do {
            response = try await transport.send(request)
        } catch {
            if error.code == .cancelled || error.code == .shutdown { return .failure(.transport("POST", endpoint, error)) }
            return .failure(.credentials("cannot get an OAuth2 token from \(endpoint): \(explainTLS(error.detail))"))
        }
        guard (200..<300).contains(response.status) else {
            tokenEndpoint = nil  // discover again next time: the endpoint may have moved
            return .failure(.credentials("the OAuth2 token endpoint \(endpoint) refused client \(settings.clientID) (HTTP \(response.status)): "
                + JSONValue.excerpt(response.body)))
        }
        guard let json = try? JSONValue.parse(response.body), let value = json["access_token"]?.stringValue, !value.isEmpty else {
            return .failure(.malformed("POST", endpoint, status: response.status, body: [], "no access_token in the answer"))
        }
        let lifetime = Duration.seconds(json["expires_in"]?.intValue ?? 300)
        // Renew a little early: a tenth of the lifetime, at most a minute.
        let margin = min(lifetime / 10, .seconds(60))
        logger.info("OAuth2 token obtained", metadata: ["issuer": "\(settings.issuer)", "validFor": "\(lifetime.readable)"])
        fetchCount += 1
        return .success(.init(value: value, refreshAt: started + lifetime - margin, expiresAt: started + lifetime))
    }

    public func invalidate(_ authorization: String) async {
        guard authorization.hasPrefix("Bearer ") else { return }
        await cache.invalidate(String(authorization.dropFirst(7)))
    }

    private func discover() async throws(PlatformError) -> String {
        if let tokenEndpoint { return tokenEndpoint }
        let path = "/.well-known/openid-configuration"
        let response: HTTPResponse
        do {
            response = try await transport.send(HTTPRequest(method: "GET", url: settings.issuer + path,
                                                             headers: [("Accept", "application/json")], timeout: settings.timeout))
        } catch {
            throw .transport("GET", settings.issuer + path, error)
        }
        guard (200..<300).contains(response.status) else { throw .status("GET", settings.issuer + path, response) }
        guard let json = try? JSONValue.parse(response.body),
              let endpoint = json["mtls_endpoint_aliases"]?["token_endpoint"]?.stringValue ?? json["token_endpoint"]?.stringValue else {
            throw .malformed("GET", settings.issuer + path, status: response.status, body: response.body,
                             "neither mtls_endpoint_aliases.token_endpoint nor token_endpoint in the discovery document")
        }
        tokenEndpoint = endpoint
        return endpoint
    }
}
