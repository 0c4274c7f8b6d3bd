import Foundation
import JSONSupport
import Sandbox
import Testing
@testable import Switchyard

/// Seed step 0: a device obtains its credentials with the bootstrap user once an operator accepts it.
@Suite(.closesHarnesses, .timeLimit(.minutes(2)))
struct BootstrapTests {
    func bootstrapConfiguration(_ harness: Harness, password: String? = nil) -> AgentConfiguration {
        var configuration = harness.configuration
        let settings = harness.tenant.settings
        configuration.auth.mode = .bootstrap(
            BasicCredentials(tenant: settings.bootstrapTenantID, username: settings.bootstrapUsername,
                             password: password ?? settings.bootstrapPassword),
            interval: .milliseconds(100))
        return configuration
    }

    @Test func waitsUntilAcceptedThenStoresPrivateCredentialsAndReusesThem() async throws {
        let harness = try await Harness()
        harness.declare("message.yaml", "operation: c8y_Message\nswift: Message\n")
        let configuration = bootstrapConfiguration(harness)
        try await harness.startAgent(configuration)
        try await eventually("asked several times") { await harness.tenant.credentialRequests >= 3 }
        #expect(await harness.deviceID() == nil)
        await harness.tenant.accept(deviceId: harness.externalId)
        try await eventually("registered with its own credentials") { await harness.deviceID() != nil }
        let file = harness.state + "/credentials.json"
        let mode = try FileManager.default.attributesOfItem(atPath: file)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        let stored = try JSONValue.parse(String(contentsOfFile: file, encoding: .utf8))
        #expect(stored["username"]?.stringValue == "device_\(harness.externalId)")
        let id = try await harness.createOperation(["c8y_Message": ["text": "hello"]])
        #expect(try await harness.waitForEnd(id)["status"] == "SUCCESSFUL")

        await harness.stopAgent()
        let requests = await harness.tenant.credentialRequests
        try await harness.startAgent(configuration, waitForRegistration: true)  // subscribed again: past the bootstrap step
        #expect(await harness.tenant.credentialRequests == requests)
        await harness.close()
    }

    @Test func wrongBootstrapPasswordIsRefusedAndNothingIsStored() async throws {
        let harness = try await Harness()
        let configuration = bootstrapConfiguration(harness, password: "wrong")
        let logs = LogCapture()
        let agent = Task { [configuration] in
            try await Agent(configuration: configuration, catalog: [:], tuning: Harness.tuning,
                            logger: logs.logger()).run()
        }
        await harness.tenant.accept(deviceId: harness.externalId)
        try await eventually("the refusal seen") { logs.contains("the bootstrap credentials were refused (401)") }
        #expect(await harness.tenant.credentialRequests == 0)  // refused at the gate with 401
        #expect(!FileManager.default.fileExists(atPath: harness.state + "/credentials.json"))
        #expect(await harness.deviceID() == nil)
        agent.cancel()
        _ = try? await agent.value
        await harness.close()
    }

    @Test func storedCredentialsReadableByOthersAreRefused() async throws {
        let harness = try await Harness()
        write("{\"tenantId\":\"t100\",\"username\":\"device_x\",\"password\":\"p\"}", to: harness.state + "/credentials.json", mode: 0o644)
        let settings = harness.tenant.settings
        let bootstrap = Bootstrap(baseURL: harness.server.url, transport: try CurlTransport(), bootstrap: BasicCredentials(
            tenant: settings.bootstrapTenantID, username: settings.bootstrapUsername, password: settings.bootstrapPassword),
            externalId: harness.externalId, interval: .milliseconds(100), stateDirectory: harness.state,
            logger: LogCapture().logger("test"))
        #expect { _ = try bootstrap.stored() } throws: { "\($0)".contains("chmod 600") }
        bootstrap.transport.shutdown()
        await harness.close()
    }

    @Test func bootstrapKeysInTheConfiguration() throws {
        let configuration = try AgentConfiguration.load(file: nil, environment: [
            "SWITCHYARD_C8Y_URL": "https://x", "SWITCHYARD_DEVICE_EXTERNAL_ID": "gw", "SWITCHYARD_AUTH_MODE": "bootstrap",
            "SWITCHYARD_AUTH_BOOTSTRAP_TENANT": "management", "SWITCHYARD_AUTH_BOOTSTRAP_USERNAME": "devicebootstrap",
            "SWITCHYARD_AUTH_BOOTSTRAP_PASSWORD": "secret", "SWITCHYARD_AUTH_BOOTSTRAP_INTERVAL": "2s",
        ])
        guard case .bootstrap(let credentials, let interval) = configuration.auth.mode else { Issue.record("not bootstrap"); return }
        #expect(credentials.user == "management/devicebootstrap")
        #expect(interval == .seconds(2))
        #expect {
            _ = try AgentConfiguration.load(file: nil, environment: [
                "SWITCHYARD_C8Y_URL": "https://x", "SWITCHYARD_DEVICE_EXTERNAL_ID": "gw", "SWITCHYARD_AUTH_MODE": "bootstrap"])
        } throws: { "\($0)".contains("missing auth.bootstrap.username") && "\($0)".contains("auth.bootstrap.password") }
    }
}

import Cumulocity
import Logging
