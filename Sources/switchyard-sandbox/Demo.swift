import ArgumentParser
import BuiltinHandlers
import Cumulocity
import FoundationEssentials
import JSONSupport
import Logging
import Sandbox
import HandlerKit
import Switchyard
import Synchronization
import UnixSignals

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Starts the sandbox and an agent in this process and runs one operation per declaration that has an
/// `example`, plus the four standard operations set up safely in a scratch directory: the restart
/// "reboots" by restarting the in-process agent with a new boot id, software goes into a throwaway dpkg
/// root, firmware into simulated A/B slots. Prints each operation's final status and end-to-end time.
struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run an agent against the sandbox and show a round of operations.")

    @Option(help: "The handlers directory whose examples to run (its standard operations are replaced by safe ones).")
    var handlers = "handlers.d"
    @Option(help: "How long to wait for all operations, in seconds.") var timeout = 120
    @Option(help: "Agent log level.") var logLevel = "warning"
    @Option(help: "Run each example this many times and print median, 95th percentile and maximum (a benchmark).")
    var rounds = 1
    @Option(help: "Size of the demo firmware image in MiB.") var firmwareMiB = 8
    @Flag(help: "Leave the sandbox and the agent running after the demo, for exploration (Ctrl-C or SIGTERM ends it).")
    var keep = false
    @Option(help: "The sandbox's port (0: any free port; the URL is printed).") var port = 0
    @OptionGroup var tenant: TenantOptions

    struct Row {
        let operation: String
        let handler: String
        var lastID = "-"
        var status = "TIMED OUT"
        var reason = ""
        var times: [Duration] = []
    }

    static let standard: Set<String> = ["c8y_Restart", "c8y_Configuration", "c8y_SendConfiguration", "c8y_SoftwareUpdate",
                                        "c8y_SoftwareList", "c8y_Firmware", "c8y_LogfileRequest", "c8y_DownloadConfigFile",
                                        "c8y_UploadConfigFile", "c8y_DeviceProfile"]

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel) ?? .warning
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "switchyard")
        let source = FileSystem.absolute(handlers)
        // The repository holds the demo's standard plugins: beside the handlers directory, or here
        // (a device maker's own handlers.d elsewhere, such as docs/examples/swift-handler/handlers.d).
        let beside = FileSystem.parent(of: source)
        let repository = FileSystem.isDirectory(beside + "/Plugins") ? beside : FileSystem.absolute(".")
        let scratch = "/tmp/switchyard-demo-\(getpid())"
        defer { FileSystem.removeTree(scratch) }
        let server = try await SandboxServer.start(port: port, settings: tenant.settings)
        let settings = server.tenant.settings
        let demo = try await DemoDevice.prepare(scratch: scratch, repository: repository, tenant: server.tenant,
                                                baseURL: server.url, firmwareMiB: firmwareMiB)

        // The handlers the demo agent uses: the directory's own (minus the standard operations) plus safe standard ones.
        let registry = Registry.load(directory: source, catalog: builtinHandlers)
        for problem in registry.problems { print("rejected declaration: \(problem)") }
        var index = 0
        for declaration in registry.declarations where !declaration.fragments.contains(where: Self.standard.contains) {
            index += 1
            try FileSystem.writeAtomically(demo.handlers + "/\(index)-\(declaration.operation).yaml", declaration.json.encoded())
        }
        let combined = Registry.load(directory: demo.handlers, catalog: builtinHandlers)
        for problem in combined.problems { print("rejected demo declaration: \(problem)") }
        await server.tenant.setOperationExamples(operationExamples(combined))

        var device = AgentConfiguration.Device(externalId: "demo-\(getpid())")
        device.name = "Switchyard demo device"
        device.requiredInterval = 10  // availability monitoring: c8y_RequiredAvailability, heartbeats
        var configuration = AgentConfiguration(
            url: server.url, device: device,
            authentication: .basic(BasicCredentials(tenant: settings.tenantID, username: settings.username, password: settings.password)))
        configuration.handlers = demo.handlers
        configuration.stateDir = scratch + "/state"
        print("sandbox tenant at \(server.url); agent using \(source) (standard operations set up in \(scratch))")
        let agent = Agent(configuration: configuration, catalog: builtinHandlers, logger: logger)
        var agentTask = Task { try await agent.run() }

        let deadline = ContinuousClock.now + .seconds(timeout)
        guard let deviceID = try await waitForAgent(server.tenant, externalId: device.externalId, handshakes: 0, deadline: deadline) else {
            agentTask.cancel()
            await server.stop()
            throw ValidationError("the agent did not register and subscribe within \(timeout) s")
        }
        let advertised = await server.tenant.managedObject(deviceID)?["c8y_SupportedOperations"] ?? .null
        print("device \(deviceID) registered; advertises \(advertised)")

        // One operation at a time, so each figure is one operation's own end-to-end time:
        // created on the platform → notified → EXECUTING → handler → SUCCESSFUL/FAILED acknowledged.
        var rows: [Row] = []
        for declaration in combined.declarations.sorted(by: { $0.operation < $1.operation }) {
            guard case .object(var body)? = declaration.example else { continue }
            body["deviceId"] = .string(deviceID)
            var row = Row(operation: declaration.operation, handler: declaration.handlerName)
            let repeats = declaration.resumable ? 1 : max(1, rounds)  // a reboot per round is too slow to repeat
            for _ in 0..<repeats where ContinuousClock.now < deadline {
                let started = ContinuousClock.now
                guard let created = await server.tenant.createOperation(.object(body)), let id = created["id"]?.idValue else { break }
                row.lastID = id
                while ContinuousClock.now < deadline {
                    if demo.rebootRequested() {
                        agentTask = try await reboot(agentTask, agent: agent, demo: demo, tenant: server.tenant,
                                                     externalId: device.externalId, deadline: deadline)
                    }
                    let operation = await server.tenant.operation(id)
                    let status = operation?["status"]?.stringValue ?? "?"
                    if status == "SUCCESSFUL" || status == "FAILED" {
                        row.status = status
                        row.reason = operation?["failureReason"]?.stringValue ?? ""
                        row.times.append(ContinuousClock.now - started)
                        break
                    }
                    try await Task.sleep(for: .microseconds(200))
                }
                if row.status != "SUCCESSFUL" { break }
            }
            rows.append(row)
        }
        let inventory = await server.tenant.managedObject(deviceID) ?? .null
        if !keep {
            agentTask.cancel()
            _ = try? await agentTask.value
            await server.stop()
        }

        print("")
        let header = pad("OPERATION", 24) + pad("ID", 8) + pad("HANDLER", 40) + pad("STATUS", 12)
        print(header + (rounds > 1 ? "RUNS  MEDIAN     P95        MAX" : "END TO END"))
        var allSuccessful = true
        for row in rows {
            allSuccessful = allSuccessful && row.status == "SUCCESSFUL"
            let sorted = row.times.sorted()
            var line = pad(row.operation, 24) + pad(row.lastID, 8) + pad(shorten(row.handler), 40) + pad(row.status, 12)
            if sorted.isEmpty {
                line += "-"
            } else if rounds > 1 {
                let p95 = sorted[min(sorted.count - 1, Int((Double(sorted.count) * 0.95).rounded(.up)) - 1)]
                line += pad("\(sorted.count)", 6) + pad(format3(sorted[sorted.count / 2]) + " ms", 11)
                    + pad(format3(p95) + " ms", 11) + format3(sorted[sorted.count - 1]) + " ms"
            } else {
                line += format3(sorted[0]) + " ms"
            }
            print(line)
            if !row.reason.isEmpty { print("    reason: \(row.reason)") }
        }
        if rows.isEmpty { print("(no declaration has an example)") }
        print("")
        print("device inventory afterwards: c8y_Firmware \(inventory["c8y_Firmware"] ?? .null)")
        print("  c8y_SoftwareList \(inventory["c8y_SoftwareList"] ?? .null)")
        print("  c8y_Configuration \(inventory["c8y_Configuration"] ?? .null)")
        print("  c8y_Configuration_demo-app \(inventory["c8y_Configuration_demo-app"] ?? .null)")
        print("  c8y_Profile \(inventory["c8y_Profile"] ?? .null)")
        print("  c8y_SupportedLogs \(inventory["c8y_SupportedLogs"] ?? .null)  c8y_SupportedConfigurations \(inventory["c8y_SupportedConfigurations"] ?? .null)")
        print("  c8y_RequiredAvailability \(inventory["c8y_RequiredAvailability"] ?? .null)  c8y_Availability \(inventory["c8y_Availability"] ?? .null)")
        if keep {
            print("")
            print("console: \(server.url)/  (open it in a browser)")
            print("kept running (--keep): sandbox tenant at \(server.url)  device \(deviceID)  "
                  + "platform user \(settings.tenantID)/\(settings.platformUsername), password \(settings.platformPassword); Ctrl-C ends")
            fflush(nil)  // every output stream: a script reading the pipe sees the line now
            agentTask = try await keepRunning(agentTask, agent: agent, demo: demo, tenant: server.tenant, externalId: device.externalId)
            agentTask.cancel()
            _ = try? await agentTask.value
            await server.stop()
        }
        if !allSuccessful { throw ExitCode(1) }
    }

    /// The "device" reboots: the agent goes down and comes back with a new boot id.
    func reboot(_ running: Task<Void, any Error>, agent: Agent, demo: DemoDevice, tenant: Tenant, externalId: String,
                deadline: ContinuousClock.Instant) async throws -> Task<Void, any Error> {
        running.cancel()
        _ = try? await running.value
        try demo.boot()
        let handshakes = await tenant.handshakeCount
        let restarted = Task { try await agent.run() }
        _ = try await waitForAgent(tenant, externalId: externalId, handshakes: handshakes, deadline: deadline)
        return restarted
    }

    /// After the demo with `--keep`: reboots the agent when its restart handler asks, until SIGINT or SIGTERM.
    func keepRunning(_ running: Task<Void, any Error>, agent: Agent, demo: DemoDevice, tenant: Tenant,
                     externalId: String) async throws -> Task<Void, any Error> {
        var agentTask = running
        let stopped = StopRequest()
        let signals = await UnixSignalsSequence(trapping: .sigint, .sigterm)
        let watcher = Task {
            for await _ in signals {
                stopped.set()
                return
            }
        }
        defer { watcher.cancel() }
        while !stopped.isSet {  // the restart handler's marker and the signal are looked at four times a second
            if demo.rebootRequested() {
                agentTask = try await reboot(agentTask, agent: agent, demo: demo, tenant: tenant, externalId: externalId,
                                             deadline: .now + .seconds(60))
            }
            try? await Task.sleep(for: .milliseconds(250))
        }
        print("stopping the kept sandbox and agent")
        return agentTask
    }

    func waitForAgent(_ tenant: Tenant, externalId: String, handshakes: Int, deadline: ContinuousClock.Instant) async throws -> String? {
        while ContinuousClock.now < deadline {
            if let id = await tenant.device(externalId: externalId)?["id"]?.idValue,
               await tenant.handshakeCount > handshakes, await tenant.bayeuxClientCount > 0 {
                return id
            }
            try await Task.sleep(for: .milliseconds(5))
        }
        return nil
    }

    func shorten(_ handler: String) -> String {
        handler.count > 38 ? "…" + handler.suffix(37) : handler
    }
}

/// Each declaration's `example` by the operation it handles, for the console's new-operation form.
func operationExamples(_ registry: Registry) -> [String: JSONValue] {
    var examples: [String: JSONValue] = [:]
    for declaration in registry.declarations {
        guard let example = declaration.example else { continue }
        examples[declaration.operation] = example
    }
    return examples
}

/// Set once by the signal watcher of `demo --keep`, read by its loop.
final class StopRequest: Sendable {
    private let flag = Mutex(false)
    func set() { flag.withLock { $0 = true } }
    var isSet: Bool { flag.withLock { $0 } }
}

/// The demo's scratch device: safe declarations of the four standard operations and what they act on.
struct DemoDevice {
    let scratch: String
    var handlers: String { scratch + "/handlers.d" }
    var bootID: String { scratch + "/boot_id" }
    var rebootMarker: String { scratch + "/reboot-requested" }

    func rebootRequested() -> Bool { FileSystem.exists(rebootMarker) }

    /// "Boots" the device: a new boot id, the reboot request consumed.
    func boot() throws {
        FileSystem.remove(rebootMarker)
        try FileSystem.writeAtomically(bootID, Array("boot-\(UInt64.random(in: 1...UInt64.max))\n".utf8))
    }

    static func prepare(scratch: String, repository: String, tenant: Tenant, baseURL: String, firmwareMiB: Int) async throws -> DemoDevice {
        let device = DemoDevice(scratch: scratch)
        try FileSystem.makeDirectories(device.handlers)
        try FileSystem.makeDirectories(scratch + "/bin")
        try device.boot()
        let reboot = scratch + "/bin/reboot"
        try FileSystem.writeAtomically(reboot, Array("#!/bin/sh\ntouch '\(device.rebootMarker)'\n".utf8), mode: 0o755)

        // Configuration: a file in the scratch directory.
        try FileSystem.writeAtomically(scratch + "/device.conf", Array("# demo device\nspeed=1\n".utf8))

        // Software: the shipped apt plugin, into a throwaway dpkg root, installing a package built now.
        let dpkgRoot = scratch + "/dpkg-root"
        try FileSystem.makeDirectories(dpkgRoot + "/var/lib/dpkg/info")
        try FileSystem.makeDirectories(dpkgRoot + "/var/lib/dpkg/updates")
        try FileSystem.writeAtomically(dpkgRoot + "/var/lib/dpkg/status", [])
        try FileSystem.writeAtomically(dpkgRoot + "/var/lib/dpkg/available", [])
        try FileSystem.makeDirectories(scratch + "/sm-plugins")
        let plugin = try FileSystem.read(repository + "/Plugins/sm-plugins/apt") ?? []
        try FileSystem.writeAtomically(scratch + "/sm-plugins/apt", plugin, mode: 0o755)
        let package = try await buildDemoPackage(scratch: scratch)
        let packageID = await tenant.addBinary(package)

        // Firmware: the example A/B installer and an image served by the sandbox.
        let installer = try FileSystem.read(repository + "/Plugins/firmware/ab-installer") ?? []
        try FileSystem.writeAtomically(scratch + "/bin/ab-installer", installer, mode: 0o755)
        var image = [UInt8](repeating: 0, count: firmwareMiB << 20)
        for index in image.indices where index % 4096 == 0 { image[index] = UInt8(truncatingIfNeeded: index >> 12) }
        let imageID = await tenant.addBinary(image)
        try FileSystem.writeAtomically(scratch + "/image", image)
        let digest = try await sha256(of: scratch + "/image")
        FileSystem.remove(scratch + "/image")

        // Logs: a log with a gzipped rotation, each line stamped with its time.
        try FileSystem.makeDirectories(scratch + "/logs")
        let now = Int64(Date().timeIntervalSince1970)
        func stamped(_ lines: [String], endingAt end: Int64) -> String {
            lines.enumerated().map { index, line in
                Date(timeIntervalSince1970: Double(end - Int64(lines.count - index) * 60)).formatted(.iso8601) + " demo: " + line + "\n"
            }.joined()
        }
        try FileSystem.writeAtomically(scratch + "/logs/demo.log.1", Array(stamped(["booted", "ERROR sensor timeout", "recovered"],
                                                                                    endingAt: now - 3600).utf8))
        let gzip = await runTool(["/bin/gzip", "-f", scratch + "/logs/demo.log.1"])
        guard gzip.succeeded else { throw ValidationError("gzip failed: \(gzip.failureDescription)") }
        try FileSystem.writeAtomically(scratch + "/logs/demo.log", Array(stamped(["started", "ERROR disk almost full", "ok"], endingAt: now).utf8))

        // Typed configuration: a file the platform can fetch and replace; a new version served by the sandbox.
        try FileSystem.writeAtomically(scratch + "/app.conf", Array("# demo application\nlevel=info\n".utf8))
        let appConfig = await tenant.addBinary(Array("# from the demo\nlevel=debug\n".utf8), name: "app.conf", type: "text/plain")
        let profileConfig = await tenant.addBinary(Array("# from the demo profile\nlevel=warning\n".utf8), name: "app.conf", type: "text/plain")

        let declarations: [JSONValue] = [
            ["operation": "c8y_Restart", "swift": "Restart", "resumable": true,
             "options": ["command": [.string(reboot)], "bootIdFile": .string(device.bootID), "restartTimeout": 60],
             "example": ["c8y_Restart": [:], "description": "Restart from the demo"]],
            ["operation": "c8y_Configuration", "swift": "Configuration",
             "options": ["file": .string(scratch + "/device.conf")],
             "example": ["c8y_Configuration": ["config": "# set by the demo\nspeed=2\n"]]],
            ["operation": "c8y_SendConfiguration", "swift": "Configuration",
             "options": ["file": .string(scratch + "/device.conf")]],
            ["operation": "c8y_SoftwareUpdate", "fragments": ["c8y_SoftwareUpdate", "c8y_SoftwareList"], "swift": "Software",
             "options": ["pluginsDirectory": .string(scratch + "/sm-plugins"), "env": ["DPKG_ROOT": .string(dpkgRoot)]],
             "example": ["c8y_SoftwareUpdate": [["name": "switchyard-demo", "version": "1.0", "softwareType": "apt", "action": "install",
                                                 "url": .string(baseURL + "/inventory/binaries/\(packageID)")]]]],
            ["operation": "c8y_Firmware", "swift": "Firmware", "resumable": true,
             "options": ["installer": [.string(scratch + "/bin/ab-installer")], "env": ["FIRMWARE_ROOT": .string(scratch + "/slots")]],
             "example": ["c8y_Firmware": ["name": "demo-os", "version": "2.0", "sha256": .string(digest),
                                          "url": .string(baseURL + "/inventory/binaries/\(imageID)")]]],
            ["operation": "c8y_LogfileRequest", "swift": "Logfile",
             "options": ["types": [["type": "demo", "files": .string(scratch + "/logs/demo.log*")]]],
             "example": ["c8y_LogfileRequest": ["logFile": "demo", "searchText": "ERROR", "maximumLines": 100,
                                                "dateFrom": .string(Date(timeIntervalSince1970: Double(now - 86400)).formatted(.iso8601)),
                                                "dateTo": .string(Date(timeIntervalSince1970: Double(now + 60)).formatted(.iso8601))]]],
            ["operation": "c8y_DownloadConfigFile", "fragments": ["c8y_DownloadConfigFile", "c8y_UploadConfigFile"],
             "advertise": ["c8y_UploadConfigFile"], "swift": "Configuration",
             "options": ["files": [["type": "demo-app", "path": .string(scratch + "/app.conf"), "mode": "0640"]]],
             "example": ["c8y_DownloadConfigFile": ["type": "demo-app", "url": .string(baseURL + "/inventory/binaries/\(appConfig)")]]],
            ["operation": "c8y_DeviceProfile", "swift": "DeviceProfile", "resumable": true,
             "requires": ["c8y_Firmware", "c8y_SoftwareUpdate", "c8y_DownloadConfigFile"],
             "example": ["profileName": "demo profile", "profileId": "1", "c8y_DeviceProfile": [
                 "software": [["name": "switchyard-demo", "version": "1.0", "softwareType": "apt", "action": "install",
                               "url": .string(baseURL + "/inventory/binaries/\(packageID)")]],
                 "configuration": [["name": "demo-app", "type": "demo-app", "url": .string(baseURL + "/inventory/binaries/\(profileConfig)")]],
             ]]],
        ]
        for (index, declaration) in declarations.enumerated() {
            try FileSystem.writeAtomically(device.handlers + "/standard-\(index).yaml", declaration.encoded())
        }
        return device
    }

    static func buildDemoPackage(scratch: String) async throws -> [UInt8] {
        let tree = scratch + "/package"
        try FileSystem.makeDirectories(tree + "/DEBIAN")
        try FileSystem.makeDirectories(tree + "/opt/switchyard-demo")
        try FileSystem.writeAtomically(tree + "/DEBIAN/control", Array("""
            Package: switchyard-demo
            Version: 1.0
            Architecture: all
            Maintainer: Switchyard <demo@example.com>
            Description: installed by the Switchyard demo

            """.utf8))
        try FileSystem.writeAtomically(tree + "/opt/switchyard-demo/README", Array("installed by the Switchyard demo\n".utf8))
        let result = await runTool(["/usr/bin/dpkg-deb", "--build", tree, scratch + "/switchyard-demo.deb"])
        guard result.succeeded else { throw ValidationError("dpkg-deb failed: \(result.failureDescription)") }
        return try FileSystem.read(scratch + "/switchyard-demo.deb") ?? []
    }

    static func sha256(of path: String) async throws -> String {
        let result = await runTool(["/usr/bin/sha256sum", path])
        guard result.succeeded, let digest = result.output.split(separator: " ").first else {
            throw ValidationError("sha256sum failed: \(result.failureDescription)")
        }
        return String(digest)
    }
}

/// Milliseconds with one decimal.
func format3(_ duration: Duration) -> String {
    let micros = duration.components.seconds * 1_000_000 + duration.components.attoseconds / 1_000_000_000_000
    return "\(micros / 1000).\((micros % 1000) / 100)"
}

func pad(_ text: String, _ width: Int) -> String {
    text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count)
}
