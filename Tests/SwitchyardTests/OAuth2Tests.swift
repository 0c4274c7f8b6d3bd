import Cumulocity
import Foundation
import JSONSupport
import Sandbox
import Testing
@testable import Switchyard

/// OAuth2 client credentials over mTLS (seed 004) for an artifact host outside the tenant.
@Suite(.closesHarnesses, .timeLimit(.minutes(1)))
struct OAuth2Tests {
    /// A client of the harness's tenant whose downloads from `https://localhost:<port>` (another
    /// origin than the tenant's `127.0.0.1`) carry an OAuth2 token.
    func client(_ harness: Harness, clientID: String) throws -> (PlatformClient, OAuth2ClientCredentials, String) {
        let files = try harness.pki.device("artifact-client", tag: harness.externalId)
        let transport = try CurlTransport(tls: TLSConfiguration(caFile: harness.pki.caFile))
        var client = PlatformClient(baseURL: harness.server.url, transport: transport,
                                    credentials: BasicCredentials(tenant: "t100", username: "device", password: "device-secret"))
        let provider = OAuth2ClientCredentials(
            settings: .init(issuer: harness.server.url, clientID: clientID,
                            certificate: ClientCertificate(certificateFile: files.certificate, keyFile: files.key)),
            transport: transport, logger: harness.logs.logger())
        let host = "https://localhost:\(harness.server.port)"
        client.hostCredentials[host] = provider
        return (client, provider, host)
    }

    @Test func discoversTheMTLSEndpointGetsATokenAndDownloadsWithIt() async throws {
        let harness = try await Harness(tls: true)
        let payload = [UInt8]((0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        await harness.tenant.putArtifact("firmware.bin", payload)
        let (client, provider, host) = try client(harness, clientID: harness.tenant.settings.oauthClientID)
        let target = harness.root + "/firmware.bin"
        let size = try await downloadArtifact(client: client, url: host + "/artifacts/firmware.bin", to: target, maxBytes: 1 << 20)
        #expect(size == Int64(payload.count))
        #expect(try [UInt8](Data(contentsOf: URL(fileURLWithPath: target))) == payload)
        #expect(await harness.tenant.artifactDownloads == ["firmware.bin"])

        // A second download reuses the cached token.
        FileSystem.remove(target)
        _ = try await downloadArtifact(client: client, url: host + "/artifacts/firmware.bin", to: target, maxBytes: 1 << 20)
        #expect(await provider.fetchCount == 1)
        for token in await harness.tenant.issuedTokens { #expect(!harness.logs.contains(token)) }
        client.transport.shutdown()
        await harness.close()
    }

    /// Many downloads starting at once share one token request (single flight).
    @Test func concurrentRequestsShareOneTokenFetch() async throws {
        let harness = try await Harness(tls: true)
        let (client, provider, _) = try client(harness, clientID: harness.tenant.settings.oauthClientID)
        let tokens = await withTaskGroup(of: String?.self) { group in
            for _ in 0..<8 { group.addTask { try? await provider.authorization() } }
            return await group.reduce(into: Set<String?>()) { $0.insert($1) }
        }
        #expect(tokens.count == 1 && tokens.first != nil)
        #expect(await provider.fetchCount == 1)
        client.transport.shutdown()
        await harness.close()
    }

    @Test func anUnknownClientIsRefusedWithAClearMessageAndNothingIsDownloaded() async throws {
        let harness = try await Harness(tls: true)
        await harness.tenant.putArtifact("firmware.bin", [1, 2, 3])
        let (client, _, host) = try client(harness, clientID: "somebody-else")
        await #expect {
            _ = try await downloadArtifact(client: client, url: host + "/artifacts/firmware.bin", to: harness.root + "/x", maxBytes: 1 << 20)
        } throws: { error in
            "\(error)".contains("refused client somebody-else (HTTP 401)")
        }
        #expect(await harness.tenant.artifactDownloads.isEmpty)
        client.transport.shutdown()
        await harness.close()
    }

    @Test func withoutATokenTheArtifactHostRefuses() async throws {
        let harness = try await Harness(tls: true)
        await harness.tenant.putArtifact("firmware.bin", [1, 2, 3])
        var (client, _, host) = try client(harness, clientID: harness.tenant.settings.oauthClientID)
        client.hostCredentials = [:]
        await #expect {
            _ = try await downloadArtifact(client: client, url: host + "/artifacts/firmware.bin", to: harness.root + "/x", maxBytes: 1 << 20)
        } throws: { error in
            "\(error)".contains("HTTP 401")
        }
        client.transport.shutdown()
        await harness.close()
    }

    @Test func configurationReadsHostsAndDefaultsToTheDeviceCertificate() throws {
        let dir = temporaryDirectory()
        defer { FileSystem.removeTree(dir) }
        let files = try TestPKI.shared.device("gw-oauth")
        write("""
            c8y: {url: "https://acme.example.com"}
            device: {externalId: gw-oauth}
            auth: {mode: certificate, certificate: {cert: \(files.certificate), key: \(files.key)}}
            oauth2:
              - {host: "https://artifacts.example.com/", issuer: "https://login.example.com", clientId: gw-oauth}
            """, to: dir + "/switchyard.yaml")
        let configuration = try AgentConfiguration.load(file: dir + "/switchyard.yaml", environment: [:])
        let host = try #require(configuration.oauth2["https://artifacts.example.com"])
        #expect(host.clientID == "gw-oauth")
        #expect(host.certificate.certificateFile == files.certificate)

        write("oauth2:\n  - {host: \"http://plain.example.com\", issuer: x, clientId: y}\n", to: dir + "/bad.yaml")
        #expect(throws: ConfigurationError.self) {
            try AgentConfiguration.load(file: dir + "/bad.yaml", environment: [:])
        }
    }
}
