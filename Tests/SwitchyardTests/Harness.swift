import BuiltinHandlers
import Cumulocity
import Foundation
import Logging
import Sandbox
import ServiceLifecycle
import JSONSupport
import Sandbox
import Synchronization
import Testing
@testable import Switchyard

/// A sandbox tenant on an ephemeral loopback port, a temporary handlers.d and state directory,
/// and an agent that can be started and stopped against them.
final class Harness: @unchecked Sendable {
    private(set) var server: SandboxServer
    let root: String
    let externalId: String
    var agentTask: Task<Void, any Error>?
    var children: [AgentConfiguration.ChildDevice] = []
    var childDiscovery: [String]?

    var tenant: Tenant { server.tenant }
    /// The handlers directory the agent uses (a fresh one unless a test points it elsewhere).
    var handlers: String
    var state: String { root + "/state" }

    /// Every line the agents of this harness logged.
    let logs = LogCapture()
    var pki: TestPKI { TestPKI.shared }

    /// A sandbox over plain HTTP, or with `tls` over HTTPS plus an mTLS listener trusting the test CA.
    init(settings: Tenant.Settings = .init(), tls: Bool = false) async throws {
        var settings = settings
        settings.secretsFile = ProcessInfo.processInfo.environment["SWITCHYARD_TEST_SECRETS"]
        let sandboxTLS = tls ? SandboxTLS(certificateFile: TestPKI.shared.serverCertificate, keyFile: TestPKI.shared.serverKey,
                                          clientCAFile: TestPKI.shared.caFile) : nil
        server = try await SandboxServer.start(settings: settings, tls: sandboxTLS,
                                               logger: Logger(label: "sandbox", factory: { _ in SwiftLogNoOpLogHandler() }))
        root = temporaryDirectory()
        externalId = "test-\(UUID().uuidString.prefix(8))"
        handlers = root + "/handlers.d"
        try FileManager.default.createDirectory(atPath: root + "/handlers.d", withIntermediateDirectories: true)
        OpenHarnesses.current?.add(self)
    }

    /// An outage of the platform: the sandbox stops listening for `duration`, then comes back on the
    /// same port with its state kept. `during` runs while it is down.
    func outage(for duration: Duration, during: () async throws -> Void = {}) async throws {
        let (tenant, port) = (server.tenant, server.port)
        await server.stop()
        try await during()
        try await Task.sleep(for: duration)
        server = try await SandboxServer.start(port: port, settings: tenant.settings, tenant: tenant,
                                               logger: Logger(label: "sandbox", factory: { _ in SwiftLogNoOpLogHandler() }))
    }

    private let closed = Mutex(false)

    /// Stops the agent and the sandbox and removes the files (once; later calls do nothing).
    func close() async {
        guard closed.withLock({ was in defer { was = true }; return !was }) else { return }
        await stopAgent()
        await server.stop()
        FileSystem.removeTree(root)
    }

    /// A handler declaration file.
    func declare(_ name: String, _ yaml: String) {
        write(yaml, to: handlers + "/" + name)
    }

    /// A shell script under `root/bin`, executable, returning its path.
    @discardableResult
    func script(_ name: String, _ body: String) -> String {
        let path = root + "/bin/" + name
        write("#!/bin/sh\n" + body + "\n", to: path, mode: 0o755)
        return path
    }

    var configuration: AgentConfiguration {
        let settings = server.tenant.settings
        var device = AgentConfiguration.Device(externalId: externalId)
        device.name = "Test device"
        var configuration = AgentConfiguration(
            url: server.url, device: device,
            authentication: .basic(BasicCredentials(tenant: settings.tenantID, username: settings.username, password: settings.password)))
        configuration.handlers = handlers
        configuration.stateDir = state
        configuration.children = children
        configuration.childDiscovery = childDiscovery
        configuration.proxy.port = 0
        if server.mtlsURL != nil { configuration.auth.ca = pki.caFile }
        return configuration
    }

    /// The configuration in `auth.mode: certificate` with a device certificate for this device.
    func certificateConfiguration(_ files: (certificate: String, key: String)) -> AgentConfiguration {
        var configuration = configuration
        configuration.auth.mode = .certificate(.init(
            certificate: ClientCertificate(certificateFile: files.certificate, keyFile: files.key), mtlsURL: server.mtlsURL))
        return configuration
    }

    static var tuning: Agent.Tuning {
        var tuning = Agent.Tuning()
        tuning.outboxBackoff = Backoff(initial: .milliseconds(50), maximum: .milliseconds(400))
        tuning.startupBackoff = Backoff(initial: .milliseconds(50), maximum: .milliseconds(400))
        tuning.bayeux.backoff = Backoff(initial: .milliseconds(50), maximum: .milliseconds(400))
        tuning.reloadInterval = .milliseconds(250)
        tuning.certificateCheckInterval = .milliseconds(200)
        tuning.diskProbeInterval = .milliseconds(200)
        return tuning
    }

    /// Starts the agent and waits until it is registered and subscribed.
    func startAgent() async throws {
        try await startAgent(configuration, waitForRegistration: true)
    }

    /// Starts an agent with a given configuration; waits for registration unless told not to.
    func startAgent(_ configuration: AgentConfiguration, tuning: Agent.Tuning = Harness.tuning,
                    waitForRegistration: Bool = false) async throws {
        let agent = Agent(configuration: configuration, catalog: builtinHandlers, tuning: tuning,
                          logger: logs.logger())
        let handshakes = await tenant.handshakeCount
        agentTask = Task { try await agent.run() }
        guard waitForRegistration else { return }
        do {
            try await eventually("agent registered and subscribed") {
                let count = await tenant.handshakeCount
                let clients = await tenant.bayeuxClientCount
                let device = await deviceID()
                return count > handshakes && clients > 0 && device != nil
            }
        } catch {
            Issue.record(Comment(rawValue: "the agent log:\n\(String(logs.text.suffix(4000)))"))
            throw error
        }
    }

    /// An agent in a service group, as `switchyard run` starts it (graceful shutdown on demand).
    func serviceGroup(_ configuration: AgentConfiguration) -> ServiceGroup {
        let quiet = logs.logger()
        let agent = Agent(configuration: configuration, catalog: builtinHandlers, tuning: Self.tuning, logger: quiet)
        return ServiceGroup(configuration: .init(services: [.init(service: agent)], logger: quiet))
    }

    /// Stops the agent as a shutdown would (the task is cancelled) and waits until it has ended.
    func stopAgent() async {
        agentTask?.cancel()
        _ = try? await agentTask?.value
        agentTask = nil
    }

    /// The running agent's plugin proxy: its URL and secret, from its record in the state directory.
    func proxyRecord() throws -> (url: String, secret: String) {
        let json = try JSONValue.parse(String(contentsOfFile: state + "/" + PluginProxy.file, encoding: .utf8))
        return (try #require(json["url"]?.stringValue), try #require(json["secret"]?.stringValue))
    }

    func deviceID() async -> String? {
        await tenant.device(externalId: externalId)?["id"]?.idValue
    }

    /// Creates an operation for the agent's device and returns its id.
    func createOperation(_ fragments: JSONValue) async throws -> String {
        let deviceID = try #require(await deviceID())
        let created = try #require(await tenant.createOperation(fragments.merging(["deviceId": .string(deviceID)])))
        return try #require(created["id"]?.idValue)
    }

    /// Waits for an operation's final status and returns the operation.
    @discardableResult
    func waitForEnd(_ id: String, within seconds: Double = 20) async throws -> JSONValue {
        try await eventually("operation \(id) to end", within: seconds) {
            let status = await tenant.operation(id)?["status"]?.stringValue
            return status == "SUCCESSFUL" || status == "FAILED"
        }
        return try #require(await tenant.operation(id))
    }

    func log(_ id: String, phase: String = "execute") -> String {
        (try? String(contentsOfFile: state + "/operations/\(id)/\(phase).log", encoding: .utf8)) ?? ""
    }

    func advertised() async -> JSONValue? {
        guard let id = await deviceID() else { return nil }
        return await tenant.managedObject(id)?["c8y_SupportedOperations"]
    }

    func statuses(_ id: String) async -> [String] {
        await tenant.history(of: id).compactMap { $0["status"]?.stringValue }
    }
}

/// The harnesses a test opened, closed however the test ends: a failing `#require` throws past the
/// test's own `await harness.close()`, which would leave an agent and a sandbox running into the
/// tests after it.
final class OpenHarnesses: Sendable {
    @TaskLocal static var current: OpenHarnesses?
    private let harnesses = Mutex<[Harness]>([])

    func add(_ harness: Harness) { harnesses.withLock { $0.append(harness) } }

    func closeAll() async {
        for harness in harnesses.withLock({ $0 }) { await harness.close() }
    }
}

/// A suite trait: every test of the suite closes the harnesses it opened when it ends, passed or not.
struct ClosesHarnesses: SuiteTrait, TestTrait, TestScoping {
    var isRecursive: Bool { true }

    func provideScope(for test: Test, testCase: Test.Case?,
                      performing function: @Sendable () async throws -> Void) async throws {
        guard testCase != nil else { return try await function() }
        let opened = OpenHarnesses()
        do {
            try await OpenHarnesses.$current.withValue(opened) { try await function() }
        } catch {
            await opened.closeAll()
            throw error
        }
        await opened.closeAll()
    }
}

extension Trait where Self == ClosesHarnesses {
    static var closesHarnesses: Self { Self() }
}

/// The trait itself: a test that fails after opening a harness still has it closed.
struct ClosesHarnessesTests {
    @Test func aHarnessOfAFailingTestIsClosed() async throws {
        let opened = Mutex<Harness?>(nil)
        let test = try #require(Test.current)
        await #expect(throws: TestFailure.self) {
            try await ClosesHarnesses().provideScope(for: test, testCase: Test.Case.current) {
                let harness = try await Harness()
                opened.withLock { $0 = harness }
                throw TestFailure("a #require that failed")
            }
        }
        let harness = try #require(opened.withLock { $0 })
        #expect(!FileManager.default.fileExists(atPath: harness.root))
    }
}
