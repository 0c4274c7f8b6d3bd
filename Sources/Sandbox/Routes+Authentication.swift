import Cumulocity
import Hummingbird
import JSONSupport
import NIOCore

extension Routes {
    /// Certificate authentication, logout, OAuth2 over mTLS and the artifact host that needs it.
    func registerAuthentication(on router: Router<SandboxContext>) {
        let tenant = self.tenant
        // Seeds 000/001: a verified client certificate (mTLS listener) whose leaf matches the first
        // certificate of X-Ssl-Cert-Chain gets a device access token for device_<common name>.
        router.post("/devicecontrol/deviceAccessToken") { request, context -> Response in
            guard let peer = await context.peerCertificate() else {
                return Self.error(401, "security/Unauthorized", "deviceAccessToken needs a client certificate (use the mTLS port)")
            }
            guard let chain = request.headers.first(where: { $0.name.canonicalName == "x-ssl-cert-chain" })?.value else {
                return Self.error(401, "security/Unauthorized", "missing X-Ssl-Cert-Chain header")
            }
            let certificates: [X509Certificate]
            do {
                certificates = try X509Certificate.parsePEM(chain, source: "X-Ssl-Cert-Chain")
            } catch {
                return Self.error(401, "security/Unauthorized", "X-Ssl-Cert-Chain: \(error)")
            }
            guard certificates.first?.der == peer else {
                return Self.error(401, "security/Unauthorized", "the first certificate of X-Ssl-Cert-Chain is not the TLS client certificate")
            }
            guard let name = certificates.first?.commonName, !name.isEmpty else {
                return Self.error(401, "security/Unauthorized", "the device certificate has no common name")
            }
            let token = await tenant.issueDeviceToken(commonName: name)
            return Self.json(["accessToken": .string(token)])
        }
        router.post("/user/logout") { request, _ -> Response in
            let header = request.headers[.authorization] ?? ""
            if header.hasPrefix("Bearer ") { await tenant.logout(String(header.dropFirst(7))) }
            return Self.json([:])
        }
        router.post("/sandbox/tokens/revoke") { _, _ -> Response in
            await tenant.revokeDeviceTokens()
            return Self.json(["ok": true])
        }
        router.get("/sandbox/tokens") { _, _ -> Response in
            Self.json(["issued": .int(Int64(await tenant.deviceTokenCount)), "logouts": .int(Int64(await tenant.logouts.count)),
                       "rejected": .int(Int64(await tenant.tokenRejections))])
        }

        // Seed 004: OpenID discovery, and client credentials over mTLS without a secret.
        router.get("/.well-known/openid-configuration") { request, context -> Response in
            let base = "https://" + (request.head.authority ?? "127.0.0.1")
            var document: [String: JSONValue] = [
                "issuer": .string(base), "token_endpoint": .string(base + "/oauth/token"),
                "grant_types_supported": ["client_credentials"],
                "token_endpoint_auth_methods_supported": ["tls_client_auth", "self_signed_tls_client_auth"],
            ]
            if let mtls = await tenant.mtlsBaseURL {
                document["mtls_endpoint_aliases"] = ["token_endpoint": .string(mtls + "/oauth/token")]
            }
            return Self.json(.object(document))
        }
        router.post("/oauth/token") { request, context -> Response in
            guard await context.peerCertificate() != nil else {
                return Self.json(["error": "invalid_client", "error_description": "a client certificate is required (mTLS endpoint)"], status: 401)
            }
            var request = request
            let body = String(decoding: Array((try await request.collectBody(upTo: 64 << 10)).readableBytesView), as: UTF8.self)
            let form = Self.formFields(body)
            guard form["grant_type"] == "client_credentials" else {
                return Self.json(["error": "unsupported_grant_type"], status: 400)
            }
            guard let client = form["client_id"], client == tenant.settings.oauthClientID else {
                return Self.json(["error": "invalid_client", "error_description": "unknown client_id"], status: 401)
            }
            let token = await tenant.issueOAuthToken(clientID: client)
            return Self.json(["access_token": .string(token), "token_type": "bearer",
                              "expires_in": .int(tenant.settings.oauthTokenLifetime.components.seconds)])
        }
        router.put("/sandbox/artifacts/{name}") { request, context -> Response in
            var request = request
            let buffer = try await request.collectBody(upTo: 1 << 30)
            await tenant.putArtifact(context.parameters.get("name") ?? "", Array(buffer.readableBytesView))
            return Self.json(["ok": true])
        }
        router.get("/artifacts/{name}") { request, context -> Response in
            let header = request.headers[.authorization] ?? ""
            guard header.hasPrefix("Bearer "), await tenant.validToken(String(header.dropFirst(7)), kind: .oauth) else {
                return Self.json(["error": "invalid_token"], status: 401)
            }
            guard let bytes = await tenant.artifact(context.parameters.get("name") ?? "") else {
                return Self.error(404, "artifacts/Not Found", "no such artifact")
            }
            return Response(status: .ok, headers: [.contentType: "application/octet-stream"],
                            body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
        }
    }

    /// `a=1&b=2` with `+` and `%XX` decoded.
    static func formFields(_ body: String) -> [String: String] {
        var fields: [String: String] = [:]
        for pair in body.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1).map { part -> String in
                let text = part.replacing("+", with: " ")
                var bytes: [UInt8] = []
                var iterator = Array(text.utf8).makeIterator()
                while let byte = iterator.next() {
                    if byte == UInt8(ascii: "%"), let high = iterator.next(), let low = iterator.next(),
                       let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16) {
                        bytes.append(value)
                    } else {
                        bytes.append(byte)
                    }
                }
                return String(decoding: bytes, as: UTF8.self)
            }
            if parts.count == 2 { fields[parts[0]] = parts[1] }
        }
        return fields
    }
}
