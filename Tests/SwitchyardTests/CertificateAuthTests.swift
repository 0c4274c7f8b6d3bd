import Cumulocity
import Foundation
import JSONSupport
import Sandbox
import ServiceLifecycle
import Testing
@testable import Switchyard

/// `auth.mode: certificate` against the sandbox over real TLS: the device certificate gets a JWT over
/// mTLS (seeds 000/001), which authenticates every other request.
// Time limit with room for waiting on the turns the timed and heavy tests take.
@Suite(.closesHarnesses, .timeLimit(.minutes(3)))
struct CertificateAuthTests {
    @Test func tokenObtainedOverMTLSAuthenticatesEverythingAndIsNeverLogged() async throws {
        let harness = try await Harness(tls: true)
        harness.declare("message.yaml", "operation: c8y_Message\nswift: Message\n")
        let files = try harness.pki.device(harness.externalId)
        try await harness.startAgent(harness.certificateConfiguration(files), waitForRegistration: true)
        #expect(await harness.tenant.deviceTokenCount == 1)
        let id = try await harness.createOperation(["c8y_Message": ["text": "hello over mTLS"]])
        #expect(try await harness.waitForEnd(id)["status"] == "SUCCESSFUL")
        #expect(await harness.tenant.tokenRejections == 0)

        await harness.stopAgent()
        #expect(harness.logs.contains("device access token obtained"))
        for token in await harness.tenant.issuedTokens {
            #expect(!harness.logs.contains(token), "a token appears in the log")
            #expect(!harness.logs.contains(String(token.split(separator: ".")[2])), "a token's signature appears in the log")
        }
        await harness.close()
    }

    @Test func refreshesAtHalfLifeWhileAnOperationKeepsRunning() async throws {
        try await takingTurns {
            var settings = Tenant.Settings()
            settings.tokenLifetime = .seconds(6)
            let harness = try await Harness(settings: settings, tls: true)
            let script = harness.script("slow.sh", "sleep 5\necho '{\"switchyard\":\"progress\",\"message\":\"still here\"}'")
            harness.declare("slow.yaml", "operation: sy_Slow\nexec: {command: [\(script)], timeout: 30s}\n")
            try await harness.startAgent(harness.certificateConfiguration(try harness.pki.device(harness.externalId)), waitForRegistration: true)
            let id = try await harness.createOperation(["sy_Slow": [:]])
            let operation = try await harness.waitForEnd(id, within: 30)
            #expect(operation["status"] == "SUCCESSFUL", "\(operation)")
            let issues = await harness.tenant.tokenIssues.map(\.at)
            #expect(issues.count >= 2)
            if issues.count >= 2 {
                let gap = issues[1] - issues[0]
                // About 3 s (half the lifetime), never early. How late it may come on a loaded machine is
                // not a timing bound here: a token used after its expiry is refused, which the
                // tokenRejections check below catches.
                #expect(gap > .milliseconds(2500), "second token after \(gap), expected about 3 s")
            }
            #expect(await harness.tenant.tokenRejections == 0, "a request was refused: the refresh came too late")
            await harness.close()
        }
    }

    /// A tenant endpoint that requires a client certificate on every connection (the sandbox's mTLS
    /// listener as the tenant URL): REST, Bayeux and the logout all present the device certificate.
    @Test func anEndpointRequiringClientCertificatesEverywhereWorks() async throws {
        let harness = try await Harness(tls: true)
        harness.declare("message.yaml", "operation: c8y_Message\nswift: Message\n")
        let mtls = try #require(harness.server.mtlsURL)
        var configuration = harness.certificateConfiguration(try harness.pki.device(harness.externalId))
        configuration.c8y.url = mtls
        try await harness.startAgent(configuration, waitForRegistration: true)
        let id = try await harness.createOperation(["c8y_Message": ["text": "client certificate on every connection"]])
        #expect(try await harness.waitForEnd(id)["status"] == "SUCCESSFUL")
        await harness.stopAgent()
        #expect(await harness.tenant.logouts.count == 1, "the logout went through over mTLS")
        await harness.close()
    }

    @Test func revokedTokenIsReplacedOnceAndTheRequestRetried() async throws {
        let harness = try await Harness(tls: true)
        harness.declare("message.yaml", "operation: c8y_Message\nswift: Message\n")
        try await harness.startAgent(harness.certificateConfiguration(try harness.pki.device(harness.externalId)), waitForRegistration: true)
        let before = await harness.tenant.deviceTokenCount
        await harness.tenant.revokeDeviceTokens()
        let id = try await harness.createOperation(["c8y_Message": ["text": "after revocation"]])
        #expect(try await harness.waitForEnd(id)["status"] == "SUCCESSFUL")
        // A later operation through: had the agent fetched more tokens, they would be counted by then.
        let later = try await harness.createOperation(["c8y_Message": ["text": "later"]])
        #expect(try await harness.waitForEnd(later)["status"] == "SUCCESSFUL")
        #expect(await harness.tenant.deviceTokenCount == before + 1)
        #expect(await harness.tenant.tokenRejections >= 1)
        #expect(harness.logs.contains("refused the device access token (401)"))
        await harness.close()
    }

    @Test func certificateFromAnotherCAIsRefusedWithAClearMessage() async throws {
        let harness = try await Harness(tls: true)
        let files = try harness.pki.device(harness.externalId, otherCA: true)
        try await harness.startAgent(harness.certificateConfiguration(files))
        try await eventually("the refusal is logged") { harness.logs.contains("cannot get a device access token") }
        #expect(harness.logs.contains("the server does not trust the CA that signed the device certificate")
            || harness.logs.contains("the server refused the device certificate"), "\(harness.logs.text)")
        #expect(await harness.deviceID() == nil)
        #expect(await harness.tenant.deviceTokenCount == 0)
        await harness.close()
    }

    @Test func expiredCertificateIsRefusedWithAClearMessage() async throws {
        let harness = try await Harness(tls: true)
        let files = try harness.pki.device(harness.externalId, days: -1)
        try await harness.startAgent(harness.certificateConfiguration(files))
        try await eventually("the expiry is logged") { harness.logs.contains("the device certificate expired on") }
        #expect(await harness.deviceID() == nil)
        await harness.close()
    }

    @Test func gracefulShutdownLogsOutAndRevokesTheToken() async throws {
        let harness = try await Harness(tls: true)
        let group = harness.serviceGroup(harness.certificateConfiguration(try harness.pki.device(harness.externalId)))
        let running = Task { try await group.run() }
        try await eventually("registered") {
            let clients = await harness.tenant.bayeuxClientCount
            return await harness.deviceID() != nil && clients > 0
        }
        let token = try #require(await harness.tenant.issuedTokens.first)
        await group.triggerGracefulShutdown()
        try await running.value
        #expect(await harness.tenant.logouts == [token])
        #expect(await harness.tenant.isLoggedOut(token))
        #expect(harness.logs.contains("logged out"))
        await harness.close()
    }

    @Test func expiringCertificateRaisesAnAlarmAndARotatedOneIsUsedWithoutRestart() async throws {
        let harness = try await Harness(tls: true)
        let short = try harness.pki.device(harness.externalId, days: 5, tag: "-short")
        // The agent reads fixed paths; rotation replaces the files' content.
        let certificate = harness.root + "/device.pem", key = harness.root + "/device.key"
        try FileManager.default.copyItem(atPath: short.certificate, toPath: certificate)
        try FileManager.default.copyItem(atPath: short.key, toPath: key)
        try await harness.startAgent(harness.certificateConfiguration((certificate, key)), waitForRegistration: true)
        let deviceID = try #require(await harness.deviceID())
        try await eventually("expiry alarm raised") {
            await harness.tenant.alarmList(source: deviceID).contains {
                $0["type"] == "switchyard_CertificateExpiry" && $0["status"] == "ACTIVE" && $0["severity"] == "MAJOR"
            }
        }
        let tokens = await harness.tenant.deviceTokenCount

        let renewed = try harness.pki.device(harness.externalId, days: 400, tag: "-renewed")
        for (from, to) in [(renewed.certificate, certificate), (renewed.key, key)] {
            let temporary = to + ".new"
            try FileManager.default.copyItem(atPath: from, toPath: temporary)
            _ = rename(temporary, to)
        }
        try await eventually("expiry alarm cleared") {
            await harness.tenant.alarmList(source: deviceID).contains {
                $0["type"] == "switchyard_CertificateExpiry" && $0["status"] == "CLEARED"
            }
        }
        try await eventually("a token obtained with the new certificate") { await harness.tenant.deviceTokenCount > tokens }
        #expect(harness.logs.contains("the device certificate changed on disk"))
        let id = try await harness.createOperation(["c8y_Unknown": [:]])
        #expect(try await harness.waitForEnd(id)["status"] == "FAILED")  // still talking to the tenant
        await harness.close()
    }
}
