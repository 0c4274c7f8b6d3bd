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

/// Starts the sandbox and an agent in this process, creates one operation per declaration that has
/// an `example`, and prints how each ended and how long it took.
struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run an agent against the sandbox and show a round of operations.")

    @Option(help: "The handlers directory the agent uses.") var handlers = "handlers.d"
    @Option(help: "How long to wait for all operations.") var timeout = 60
    @Option(help: "Agent log level.") var logLevel = "warning"
    @Option(help: "Run each example this many times and print median, 95th percentile and maximum (a benchmark).")
    var rounds = 1

    struct Row {
        let operation: String
        let handler: String
        var lastID = "-"
        var status = "TIMED OUT"
        var reason = ""
        var times: [Duration] = []
    }

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel) ?? .warning
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "switchyard")
        let server = try await SandboxServer.start()
        let settings = server.tenant.settings
        let state = "/tmp/switchyard-demo-\(getpid())"
        defer { FileSystem.removeTree(state) }

        var device = AgentConfiguration.Device(externalId: "demo-\(getpid())")
        device.name = "Switchyard demo device"
        var configuration = AgentConfiguration(
            url: server.url, device: device,
            authentication: .basic(BasicCredentials(tenant: settings.tenantID, username: settings.username, password: settings.password)))
        configuration.handlersDirectory = FileSystem.absolute(handlers)
        configuration.stateDirectory = state
        let registry = Registry.load(directory: configuration.handlersDirectory, catalog: builtinHandlers)
        for problem in registry.problems { print("rejected declaration: \(problem)") }

        print("sandbox tenant at \(server.url); agent using \(configuration.handlersDirectory)")
        let agent = Agent(configuration: configuration, catalog: builtinHandlers, logger: logger)
        let agentTask = Task { try await agent.run() }

        let deadline = ContinuousClock.now + .seconds(timeout)
        var deviceID: String?
        while ContinuousClock.now < deadline {
            if let id = await server.tenant.device(externalId: device.externalId)?["id"]?.idValue,
               await server.tenant.bayeuxClientCount > 0 {
                deviceID = id
                break
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        guard let deviceID else {
            agentTask.cancel()
            await server.stop()
            throw ValidationError("the agent did not register and subscribe within \(timeout) s")
        }
        let advertised = await server.tenant.managedObject(deviceID)?["c8y_SupportedOperations"] ?? .null
        print("device \(deviceID) registered; advertises \(advertised)")

        // One operation at a time, so each figure is one operation's own end-to-end time:
        // created on the platform → notified → EXECUTING → handler → SUCCESSFUL/FAILED acknowledged.
        var rows: [Row] = []
        for declaration in registry.declarations.sorted(by: { $0.operation < $1.operation }) {
            guard case .object(var body)? = declaration.example else { continue }
            body["deviceId"] = .string(deviceID)
            var row = Row(operation: declaration.operation, handler: declaration.handlerName)
            for _ in 0..<max(1, rounds) where ContinuousClock.now < deadline {
                let started = ContinuousClock.now
                guard let created = await server.tenant.createOperation(.object(body)), let id = created["id"]?.idValue else { break }
                row.lastID = id
                while ContinuousClock.now < deadline {
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
        agentTask.cancel()
        _ = try? await agentTask.value
        await server.stop()

        print("")
        let header = pad("OPERATION", 26) + pad("ID", 8) + pad("HANDLER", 44) + pad("STATUS", 12)
        print(header + (rounds > 1 ? "RUNS  MEDIAN     P95        MAX" : "END TO END"))
        var allSuccessful = true
        for row in rows {
            allSuccessful = allSuccessful && row.status == "SUCCESSFUL"
            let sorted = row.times.sorted()
            var line = pad(row.operation, 26) + pad(row.lastID, 8) + pad(shorten(row.handler), 44) + pad(row.status, 12)
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
        if rows.isEmpty { print("(no declaration in \(configuration.handlersDirectory) has an example)") }
        if !allSuccessful { throw ExitCode(1) }
    }

    func shorten(_ handler: String) -> String {
        handler.count > 42 ? "…" + handler.suffix(41) : handler
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
