import ArgumentParser
import BuiltinHandlers
import Cumulocity
import JSONSupport
import Logging
import Sandbox
import Switchyard

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

@main
struct SandboxCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchyard-sandbox",
        abstract: "The Switchyard workbench: an emulated Cumulocity tenant on loopback, and a demo against it.",
        subcommands: [Demo.self, Serve.self, ConformanceCommand.self, DeviceCommand.self, OperationCommand.self, MeasurementCommand.self, EventCommand.self,
                      AlarmCommand.self, BinaryCommand.self, Accept.self, Bench.self],
        defaultSubcommand: Demo.self)
}

struct TenantOptions: ParsableArguments {
    @Option(help: "Tenant id the sandbox accepts.") var tenant = "t100"
    @Option(help: "Device user name the sandbox accepts.") var username = "device"
    @Option(help: "Device password the sandbox accepts.") var password = "device-secret"
    @Option(help: "The platform user (full access: create and cancel operations, read everything).") var platformUser = "admin"
    @Option(help: "The platform user's password.") var platformPassword = "admin-secret"

    var settings: Tenant.Settings {
        var settings = Tenant.Settings()
        settings.tenantID = tenant
        settings.username = username
        settings.password = password
        settings.platformUsername = platformUser
        settings.platformPassword = platformPassword
        return settings
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve the sandbox tenant until interrupted.",
        discussion: """
            With --tls-cert, --tls-key and --client-ca the tenant is served over HTTPS, and a second listener \
            (--mtls-port) requires client certificates signed by the --client-ca: there devices get access \
            tokens (POST /devicecontrol/deviceAccessToken) and OAuth2 tokens (POST /oauth/token).
            """)
    @Option(help: "Address to listen on (loopback unless you mean otherwise).") var host = "127.0.0.1"
    @Option(help: "Port (0: any free port).") var port = 8111
    @Option(help: "PEM file: the server certificate (enables HTTPS).") var tlsCert: String?
    @Option(help: "PEM file: the server certificate's private key.") var tlsKey: String?
    @Option(help: "PEM file: CA certificates whose device certificates the mTLS listener accepts.") var clientCa: String?
    @Option(help: "Port of the mTLS listener (0: any free port).") var mtlsPort = 8112
    @Option(help: "Lifetime of device access tokens, in seconds.") var tokenLifetime = 3600
    @Option(help: "The OAuth2 client id that may get tokens with its certificate.") var oauthClientId = "switchyard-device"
    @Option(help: "Milliseconds added to every platform answer, to stand for a remote tenant.") var latency = 0
    @Option(help: "A handlers directory whose declarations' examples prefill the console's new-operation form.") var handlers: String?
    @OptionGroup var tenant: TenantOptions

    func run() async throws {
        LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
        var settings = tenant.settings
        settings.tokenLifetime = .seconds(tokenLifetime)
        settings.oauthClientID = oauthClientId
        var tls: SandboxTLS?
        switch (tlsCert, tlsKey, clientCa) {
        case (nil, nil, nil): break
        case (let cert?, let key?, let ca?): tls = SandboxTLS(certificateFile: cert, keyFile: key, clientCAFile: ca)
        default: throw ValidationError("--tls-cert, --tls-key and --client-ca go together")
        }
        let server = try await SandboxServer.start(host: host, port: port, settings: settings, tls: tls, mtlsPort: mtlsPort)
        if latency > 0 { await server.tenant.setAnswerLatency(.milliseconds(latency)) }
        if let handlers {
            let registry = Registry.load(directory: FileSystem.absolute(handlers), catalog: builtinHandlers)
            for problem in registry.problems { print("rejected declaration: \(problem)") }
            await server.tenant.setOperationExamples(operationExamples(registry))
        }
        print("sandbox tenant at \(server.url)  (tenant \(tenant.tenant), user \(tenant.username))"
              + (latency > 0 ? "; every answer \(latency) ms late" : ""))
        print("console: \(server.url)/  (open it in a browser; on loopback it signs in as the platform user)")
        print("platform user: \(tenant.tenant)/\(tenant.platformUser), password \(tenant.platformPassword) (a local sandbox's, not a secret)")
        if let mtls = server.mtlsURL {
            print("mTLS (device certificates, OAuth2) at \(mtls); tokens live \(tokenLifetime) s")
            print("point an agent at it: SWITCHYARD_C8Y_URL=\(server.url) SWITCHYARD_C8Y_MTLS_URL=\(mtls) SWITCHYARD_AUTH_MODE=certificate SWITCHYARD_AUTH_CA=… SWITCHYARD_AUTH_CERTIFICATE_CERT=… SWITCHYARD_AUTH_CERTIFICATE_KEY=…")
        } else {
            print("point an agent at it: SWITCHYARD_C8Y_URL=\(server.url) SWITCHYARD_AUTH_TENANT=\(tenant.tenant) SWITCHYARD_AUTH_USERNAME=\(tenant.username) SWITCHYARD_AUTH_PASSWORD=…")
        }
        try await server.wait()  // until the process is interrupted
    }
}

/// Accepts a device waiting for its credentials (the tenant UI's device registration, seed step 0).
struct Accept: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Accept a device that bootstraps its credentials.")
    @Option(help: "The sandbox URL.") var url = "http://127.0.0.1:8111"
    @Argument(help: "The device's external id.") var externalId: String

    func run() async throws {
        let transport = try CurlTransport()
        defer { transport.shutdown() }
        let response = try await transport.send(HTTPRequest(method: "POST", url: url + "/sandbox/devices/\(percentEncoded(externalId))/accept", body: []))
        guard response.status == 200 else { throw ValidationError("the sandbox answered \(response.status)") }
        print("accepted \(externalId); its next credentials request is answered")
    }
}

/// Benchmarks of the device-side paths (build with -c release for representative figures).
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure plugin start overhead, and artifact download throughput and memory.",
        subcommands: [PluginStart.self, Download.self], defaultSubcommand: PluginStart.self)

    struct PluginStart: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "plugin-start", abstract: "Spawn, first byte of input read, exit: median, p95, max.")
        @Option(help: "How many runs.") var runs = 200
        @Option(help: "The plugin: a program that reads one byte of stdin and exits.") var plugin = "/usr/bin/head"

        func run() async throws {
            let directory = "/tmp/switchyard-bench-\(getpid())"
            defer { FileSystem.removeTree(directory) }
            let durations = try await PluginBenchmark.measure(command: [plugin, "-c", "1"], runs: runs, directory: directory).sorted()
            guard !durations.isEmpty else { return }
            let p95 = durations[min(durations.count - 1, Int((Double(durations.count) * 0.95).rounded(.up)) - 1)]
            print("plugin start (\(plugin) -c 1, \(durations.count) runs): median \(format3(durations[durations.count / 2])) ms, "
                  + "p95 \(format3(p95)) ms, max \(format3(durations[durations.count - 1])) ms")
        }
    }

    struct Download: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Download an image from the sandbox as the firmware handler does: throughput and memory growth.")
        @Option(help: "Image size in MiB.") var mib = 200

        func run() async throws {
            let server = try await SandboxServer.start(logger: Logger(label: "sandbox", factory: { _ in SwiftLogNoOpLogHandler() }))
            let id = await server.tenant.addBinary([UInt8](repeating: 0x5A, count: mib << 20))
            let settings = server.tenant.settings
            let transport = try CurlTransport()
            defer { transport.shutdown() }
            let client = PlatformClient(baseURL: server.url, transport: transport,
                                        credentials: BasicCredentials(tenant: settings.tenantID, username: settings.username, password: settings.password))
            let file = "/tmp/switchyard-bench-download-\(getpid())"
            defer { FileSystem.remove(file) }
            let before = memoryKiB("VmRSS")
            let started = ContinuousClock.now
            let size = try await downloadArtifact(client: client, url: server.url + "/inventory/binaries/\(id)", to: file,
                                                  maxBytes: Int64(mib + 1) << 20)
            let elapsed = ContinuousClock.now - started
            let peak = memoryKiB("VmHWM")
            await server.stop()
            let seconds = elapsed.inSeconds
            print("download of \(size >> 20) MiB: \(format3(elapsed)) ms, \(Int(Double(size >> 20) / seconds)) MiB/s; "
                  + "resident memory \(before / 1024) MiB before (the image is held by the in-process sandbox), peak \(peak / 1024) MiB")
        }

        func memoryKiB(_ field: String) -> Int {
            let status = (try? FileSystem.readText("/proc/self/status")) ?? ""
            let line = status.split(separator: "\n").first { $0.hasPrefix(field + ":") } ?? ""
            return Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
        }
    }
}

struct OperationCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "operation", abstract: "Create and read operations (the platform side).",
                                                    subcommands: [Create.self, List.self, Get.self, Cancel.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create an operation for a device and print it.")
        @OptionGroup var connection: PlatformConnection
        @Option(help: "Managed object id of the target device.") var device: String
        @Argument(help: "The operation's fragments as JSON, e.g. '{\"c8y_Message\":{\"text\":\"hi\"}}'.") var json: String

        func run() async throws {
            let body: JSONValue
            do { body = try JSONValue.parse(json) } catch { throw ValidationError("operation JSON: \(error)") }
            guard case .object(var members) = body else { throw ValidationError("operation JSON must be an object") }
            members["deviceId"] = .string(device)
            print(try await connection.client().createOperation(.object(members)))
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List an agent's operations in a status.")
        @OptionGroup var connection: PlatformConnection
        @Option(help: "Managed object id of the agent.") var device: String
        @Option(help: "PENDING, EXECUTING, SUCCESSFUL or FAILED.") var status = "PENDING"

        func run() async throws {
            for item in try await connection.client().operations(agentID: device, status: status) {
                switch item {
                case .operation(let operation): print(operation)
                case .undecodable(let id, let problem, _): print("undecodable operation \(id ?? "(no id)"): \(problem)")
                }
            }
        }
    }
}
