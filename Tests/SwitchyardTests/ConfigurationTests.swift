import Foundation
import Cumulocity
import JSONSupport
import Sandbox
import Testing
@testable import Switchyard

@Suite(.closesHarnesses)
struct ConfigurationTests {
    let minimal = """
        c8y:
          url: https://acme.example.com
        device:
          externalId: gw-0001
          hardware: {model: RPi 4, serialNumber: "0001"}
        auth:
          tenant: t42
          username: device_gw-0001
          password: pw
        stateDir: state
        handlers: my-handlers
        """

    @Test func readsNestedKeysAndResolvesPathsAgainstTheFile() throws {
        let dir = temporaryDirectory()
        defer { FileSystem.removeTree(dir) }
        write(minimal, to: dir + "/switchyard.yaml")
        let configuration = try AgentConfiguration.load(file: dir + "/switchyard.yaml", environment: [:])
        #expect(configuration.c8y.url == "https://acme.example.com")
        #expect(configuration.device.externalId == "gw-0001")
        #expect(configuration.device.externalIdType == "c8y_Serial")
        #expect(configuration.device.hardware == ["model": "RPi 4", "serialNumber": "0001"])
        #expect(configuration.stateDir == dir + "/state")
        #expect(configuration.handlers == dir + "/my-handlers")
        guard case .basic(let credentials) = configuration.auth.mode else { Issue.record("not basic"); return }
        #expect(credentials.user == "t42/device_gw-0001")
        #expect(!"\(credentials)".contains("pw"))
    }

    @Test func environmentOverridesTheFile() throws {
        let dir = temporaryDirectory()
        defer { FileSystem.removeTree(dir) }
        write(minimal, to: dir + "/switchyard.yaml")
        let configuration = try AgentConfiguration.load(file: dir + "/switchyard.yaml", environment: [
            "SWITCHYARD_C8Y_URL": "https://other.example.com",
            "SWITCHYARD_DEVICE_EXTERNAL_ID_TYPE": "c8y_MAC",
            "SWITCHYARD_OPERATIONS_CONCURRENCY": "8",
        ])
        #expect(configuration.c8y.url == "https://other.example.com")
        #expect(configuration.device.externalIdType == "c8y_MAC")
        #expect(configuration.operations.concurrency == 8)
    }

    @Test func environmentNames() {
        #expect(AgentConfiguration.environmentName(of: "device.externalIdType") == "SWITCHYARD_DEVICE_EXTERNAL_ID_TYPE")
        #expect(AgentConfiguration.environmentName(of: "c8y.url") == "SWITCHYARD_C8Y_URL")
        #expect(AgentConfiguration.environmentName(of: "stateDir") == "SWITCHYARD_STATE_DIR")
    }

    @Test func unknownKeyIsReportedWithItsLine() throws {
        let dir = temporaryDirectory()
        defer { FileSystem.removeTree(dir) }
        write("c8y:\n  url: https://x\ndevice:\n  externalid: gw\n", to: dir + "/bad.yaml")
        #expect {
            _ = try AgentConfiguration.load(file: dir + "/bad.yaml", environment: [:])
        } throws: { error in
            let text = "\(error)"
            return text.contains("bad.yaml:4") && text.contains("device.externalid") && text.contains("device.externalId")
        }
    }

    @Test func missingKeysAreAllListedWithTheirVariables() {
        #expect {
            _ = try AgentConfiguration.load(file: nil, environment: [:])
        } throws: { error in
            let text = "\(error)"
            return text.contains("missing c8y.url") && text.contains("SWITCHYARD_C8Y_URL")
                && text.contains("missing device.externalId") && text.contains("missing auth.username")
                && text.contains("auth.password or auth.passwordFile")
        }
    }

    @Test func malformedValuesAreRejected() {
        #expect {
            _ = try AgentConfiguration.load(file: nil, environment: [
                "SWITCHYARD_C8Y_URL": "acme.example.com", "SWITCHYARD_DEVICE_EXTERNAL_ID": "gw",
                "SWITCHYARD_AUTH_USERNAME": "u", "SWITCHYARD_AUTH_PASSWORD": "p",
                "SWITCHYARD_OPERATIONS_CONCURRENCY": "lots", "SWITCHYARD_AUTH_MODE": "magic",
            ])
        } throws: { error in
            let text = "\(error)"
            return text.contains("must start with https://") && text.contains("operations.concurrency")
                && text.contains("auth.mode must be basic, bootstrap or certificate")
        }
    }

    @Test func reliabilitySettings() throws {
        let base = ["SWITCHYARD_C8Y_URL": "https://x", "SWITCHYARD_DEVICE_EXTERNAL_ID": "gw",
                    "SWITCHYARD_AUTH_USERNAME": "u", "SWITCHYARD_AUTH_PASSWORD": "p"]
        let defaults = try AgentConfiguration.load(file: nil, environment: base)
        #expect(defaults.operations.reconcileInterval == .seconds(600))
        #expect(defaults.limits.declarations.maximumFileSize == 1 << 20)
        let set = try AgentConfiguration.load(file: nil, environment: base.merging([
            "SWITCHYARD_OPERATIONS_RECONCILE_INTERVAL": "2m", "SWITCHYARD_LIMITS_HANDLER_FILE_SIZE": "64KiB",
        ]) { $1 })
        #expect(set.operations.reconcileInterval == .seconds(120))
        #expect(set.limits.declarations.maximumFileSize == 65_536)
        #expect {
            _ = try AgentConfiguration.load(file: nil, environment: base.merging([
                "SWITCHYARD_OPERATIONS_RECONCILE_INTERVAL": "0s", "SWITCHYARD_LIMITS_HANDLER_FILE_SIZE": "huge",
            ]) { $1 })
        } throws: { error in
            "\(error)".contains("operations.reconcileInterval") && "\(error)".contains("limits.handlerFileSize")
        }
    }

    @Test func passwordFileMustBePrivate() async throws {
        let dir = temporaryDirectory()
        defer { FileSystem.removeTree(dir) }
        write("s3cret\n", to: dir + "/password", mode: 0o644)
        let environment = [
            "SWITCHYARD_C8Y_URL": "https://x", "SWITCHYARD_DEVICE_EXTERNAL_ID": "gw",
            "SWITCHYARD_AUTH_USERNAME": "u", "SWITCHYARD_AUTH_PASSWORD_FILE": dir + "/password",
        ]
        #expect {
            _ = try AgentConfiguration.load(file: nil, environment: environment)
        } throws: { "\($0)".contains("chmod 600") }

        chmod(dir + "/password", 0o600)
        let configuration = try AgentConfiguration.load(file: nil, environment: environment)
        guard case .basic(let credentials) = configuration.auth.mode else { Issue.record("not basic"); return }
        let header = try await credentials.authorization()
        #expect(header == "Basic " + Data("u:s3cret".utf8).base64EncodedString())
    }

    @Test func certificateModeReadsItsFilesAndRefusesAReadablePrivateKey() throws {
        let dir = temporaryDirectory()
        defer { FileSystem.removeTree(dir) }
        let files = try TestPKI.shared.device("gw-cert")
        let yaml = """
            c8y: {url: "https://acme.example.com", mtlsUrl: "https://acme.example.com:8443"}
            device: {externalId: gw-cert}
            auth:
              mode: certificate
              certificate: {cert: \(files.certificate), key: \(files.key), chain: \(TestPKI.shared.caFile), expiryWarning: 7d}
              ca: \(TestPKI.shared.caFile)
            """
        write(yaml, to: dir + "/switchyard.yaml")
        let configuration = try AgentConfiguration.load(file: dir + "/switchyard.yaml", environment: [:])
        guard case .certificate(let settings) = configuration.auth.mode else { Issue.record("not certificate"); return }
        #expect(settings.certificate == ClientCertificate(certificateFile: files.certificate, keyFile: files.key))
        #expect(settings.mtlsURL == "https://acme.example.com:8443")
        #expect(settings.expiryWarning == .seconds(7 * 86_400))
        #expect(configuration.tls == TLSConfiguration(caFile: TestPKI.shared.caFile))

        let loose = dir + "/loose.key"
        write((try? String(contentsOfFile: files.key, encoding: .utf8)) ?? "", to: loose, mode: 0o644)
        let error = #expect(throws: ConfigurationError.self) {
            try AgentConfiguration.load(file: dir + "/switchyard.yaml",
                                        environment: ["SWITCHYARD_AUTH_CERTIFICATE_KEY": loose, "SWITCHYARD_AUTH_CERTIFICATE_CERT": dir + "/none.pem"])
        }
        #expect(error?.description.contains("SWITCHYARD_AUTH_CERTIFICATE_KEY: \(loose) has mode 0644") == true, "\(String(describing: error))")
        #expect(error?.description.contains("none.pem: the file does not exist") == true, "\(String(describing: error))")
    }

    @Test func insecureMustBeExplicitAndIsWarnedAboutAtEveryStart() async throws {
        let dir = temporaryDirectory()
        defer { FileSystem.removeTree(dir) }
        write(minimal, to: dir + "/switchyard.yaml")
        #expect(try AgentConfiguration.load(file: dir + "/switchyard.yaml", environment: [:]).tls.insecure == false)
        #expect(throws: ConfigurationError.self) {
            try AgentConfiguration.load(file: dir + "/switchyard.yaml", environment: ["SWITCHYARD_AUTH_INSECURE": "yes"])
        }
        let harness = try await Harness(tls: true)
        var configuration = harness.configuration
        let loaded = try AgentConfiguration.load(file: dir + "/switchyard.yaml", environment: ["SWITCHYARD_AUTH_INSECURE": "true"])
        (configuration.auth.ca, configuration.auth.insecure) = (loaded.auth.ca, loaded.auth.insecure)
        try await harness.startAgent(configuration, waitForRegistration: true)  // the sandbox's CA is not trusted, yet it connects
        #expect(harness.logs.contains("TLS certificate is NOT verified"))
        await harness.close()
    }

    @Test func withoutTheCAFileTheSandboxCertificateIsRefused() async throws {
        let harness = try await Harness(tls: true)
        var configuration = harness.configuration
        configuration.auth.ca = nil  // the system store does not know the test CA
        try await harness.startAgent(configuration)
        try await eventually("the TLS failure is logged") { harness.logs.contains("certificate") && harness.logs.contains("cannot register the device") }
        #expect(await harness.deviceID() == nil)
        await harness.close()
    }

    /// Each problem is typed: its key, where the value came from, why. A bad entry of a list names
    /// its own line, and a variable's entries their index.
    @Test func problemsNameTheKeyAndTheLineOfTheBadEntry() throws {
        let dir = temporaryDirectory()
        defer { FileSystem.removeTree(dir) }
        write(minimal + "\noperations:\n  concurrency: 99\nchildren:\n  - externalId: ok-1\n  - name: no id\n", to: dir + "/switchyard.yaml")
        let error = #expect(throws: ConfigurationError.self) {
            try AgentConfiguration.load(file: dir + "/switchyard.yaml", environment: ["SWITCHYARD_OAUTH2": "[{\"host\": \"ftp://x\"}]"])
        }
        let problems = error?.problems ?? []
        let lines = minimal.split(separator: "\n", omittingEmptySubsequences: false).count
        #expect(problems.contains(.init(key: "operations.concurrency", origin: dir + "/switchyard.yaml:\(lines + 2)",
                                        detail: "operations.concurrency must be a whole number from 1 to 64, found '99'")), "\(problems)")
        #expect(problems.contains { $0.key == "children" && $0.origin == dir + "/switchyard.yaml:\(lines + 5)"
            && $0.detail.contains("needs an externalId") }, "\(problems)")
        #expect(problems.contains { $0.key == "oauth2" && $0.origin == "SWITCHYARD_OAUTH2[0]" }, "\(problems)")
        #expect(problems.count == 3, "\(problems)")
    }

}
