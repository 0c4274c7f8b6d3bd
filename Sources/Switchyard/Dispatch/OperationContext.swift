import Cumulocity
import FoundationEssentials
import HandlerKit

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The managed object the agent runs as, once registered.
public struct DeviceIdentity: Sendable, Equatable {
    public let id: String
    public let externalId: String
    public let externalIdType: String
}

/// The ``HandlerContext`` given to handlers: what they send concerns the operation's target device and
/// goes through the outbox, so it survives an outage and arrives before the operation's final status.
struct OperationContext: HandlerContext {
    let phase: Phase
    let stateDirectory: String
    let logFile: String
    let deviceID: String
    let operationID: String
    let outbox: Outbox

    func log(_ message: String) async {
        appendLine(message, to: logFile)
    }

    let client: PlatformClient
    /// The plugin proxy's `SWITCHYARD_PROXY_URL` and `SWITCHYARD_PROXY_SECRET`, for the commands a
    /// handler runs (a software plugin may download through the proxy).
    var variables: [String: String] = [:]
    /// Runs another declaration's handler as a step of this operation (the ``Dispatcher`` does).
    var steps: @Sendable (_ step: String, _ fragment: String, _ payload: JSONValue, _ phase: Phase) async -> Outcome = { step, _, _, _ in
        .failed("steps cannot be run here (\(step))")
    }

    func runStep(_ step: String, fragment: String, payload: JSONValue, phase: Phase) async -> Outcome {
        appendLine("[switchyard: step \(step): \(fragment), phase \(phase.rawValue)]", to: logFile)
        let outcome = await steps(step, fragment, payload, phase)
        appendLine("[switchyard: step \(step) ended: \(outcome)]", to: logFile)
        return outcome
    }

    func runCommand(_ argv: [String], input: [UInt8]?, environment: [String: String], timeout: Duration,
                    logging: CommandLogging) async -> CommandResult {
        await runDeviceCommand(argv, input: input, environment: environment.merging(variables) { own, _ in own }, timeout: timeout,
                               directory: stateDirectory, logFile: logFile, logging: logging)
    }

    func raiseAlarm(type: String, severity: AlarmSeverity, text: String) async throws {
        try await raiseAlarm(type: type, severity: severity.rawValue, text: text, fragments: [:])
    }

    func clearAlarm(type: String) async throws {
        try await outbox.enqueue(.clearAlarms(source: deviceID, type: type), for: operationID)
    }

    func sha256(ofFile path: String) async throws -> String { try await BlockingPool.run { () throws(DigestError) in try sha256Hex(ofFile: path) } }

    func saveState(_ value: String, forKey key: String) async throws {
        // Synced, off the cooperative pool: on a busy disk an fsync can take a tenth of a second.
        let path = statePath(key)
        try await BlockingPool.run { () throws(FileSystemError) in try FileSystem.writeAtomically(path, Array(value.utf8), mode: 0o600) }
    }

    func loadState(forKey key: String) async -> String? {
        (try? FileSystem.readText(statePath(key))) ?? nil
    }

    /// `state.<key>` in the operation's directory; the key is reduced to a safe file name.
    private func statePath(_ key: String) -> String {
        OperationWorkspace.statePath(key, in: stateDirectory)
    }

    func download(_ url: String, to path: String, maxBytes: Int64) async throws -> Int64 {
        try await Downloader(client: client).download(url, to: path, maxBytes: maxBytes)
    }

    func updateInventory(_ fragments: [String: JSONValue]) async throws {
        try await outbox.enqueue(.updateManagedObject(id: deviceID, fragments: fragments), for: operationID)
    }

    func sendEvent(type: String, text: String, fragments: [String: JSONValue]) async throws {
        var event = fragments
        event["source"] = ["id": .string(deviceID)]
        event["type"] = .string(type)
        event["text"] = .string(text)
        event["time"] = .string(timestamp())
        try await outbox.enqueue(.createEvent(.object(event)), for: operationID)
    }

    func sendEvent(type: String, text: String, fragments: [String: JSONValue], attaching path: String,
                   fileName: String, contentType: String) async throws -> String {
        var event = fragments
        event["source"] = ["id": .string(deviceID)]
        event["type"] = .string(type)
        event["text"] = .string(text)
        event["time"] = .string(timestamp())
        let body = JSONValue.object(event)
        let id = try await retryingNetwork { () throws(PlatformError) in try await client.createEvent(body) }
        let url = try await retryingNetwork { () throws(PlatformError) in
            try await client.attachFile(toEvent: id, path: path, name: fileName, contentType: contentType)
        }
        appendLine("[switchyard: \(fileName) attached to event \(id) (\(type))]", to: logFile)
        return url
    }

    func blocking<T: Sendable, Failure: Error>(_ work: @escaping @Sendable () throws(Failure) -> T) async throws(Failure) -> T {
        try await BlockingPool.run(work)
    }

    func storeFile(_ path: String, fileName: String, contentType: String,
                   describedBy fragments: [String: JSONValue]) async throws -> (url: String, managedObject: String) {
        let url = try await retryingNetwork { () throws(PlatformError) in
            try await client.uploadBinary(path: path, name: fileName, contentType: contentType)
        }
        let body = JSONValue.object(fragments.merging(["url": .string(url)]) { $1 })
        let created = try await retryingNetwork { () throws(PlatformError) in try await client.createManagedObject(body) }
        let id = created["id"]?.idValue ?? ""
        appendLine("[switchyard: \(fileName) stored as \(url), described by managed object \(id)]", to: logFile)
        return (url, id)
    }

    func sendMeasurement(type: String, fragments: [String: JSONValue]) async throws {
        var measurement = fragments
        measurement["source"] = ["id": .string(deviceID)]
        measurement["type"] = .string(type)
        measurement["time"] = .string(timestamp())
        try await outbox.enqueue(.createMeasurement(.object(measurement)), for: operationID)
    }

    /// Raises an alarm on the target device (through the outbox).
    func raiseAlarm(type: String, severity: String, text: String, fragments: [String: JSONValue]) async throws {
        try await outbox.enqueue(.createAlarm(alarmBody(device: deviceID, type: type, severity: severity, text: text,
                                                        fragments: fragments)), for: operationID)
    }
}

/// The ``DeviceContext`` given to handlers' start-up reports.
struct ReportContext: DeviceContext {
    let deviceID: String
    let directory: String
    let outbox: Outbox
    let client: PlatformClient

    func updateInventory(_ fragments: [String: JSONValue]) async throws {
        try await outbox.enqueue(.updateManagedObject(id: deviceID, fragments: fragments))
    }

    func runCommand(_ argv: [String], input: [UInt8]?, environment: [String: String], timeout: Duration,
                    logging: CommandLogging) async -> CommandResult {
        await runDeviceCommand(argv, input: input, environment: environment, timeout: timeout,
                               directory: directory, logFile: directory + "/report.log", logging: logging)
    }

    func raiseAlarm(type: String, severity: AlarmSeverity, text: String) async throws {
        try await outbox.enqueue(.createAlarm(alarmBody(device: deviceID, type: type, severity: severity.rawValue, text: text)))
    }

    func clearAlarm(type: String) async throws {
        try await outbox.enqueue(.clearAlarms(source: deviceID, type: type))
    }

    func sha256(ofFile path: String) async throws -> String { try await BlockingPool.run { () throws(DigestError) in try sha256Hex(ofFile: path) } }

    func blocking<T: Sendable, Failure: Error>(_ work: @escaping @Sendable () throws(Failure) -> T) async throws(Failure) -> T {
        try await BlockingPool.run(work)
    }
}

/// Runs a direct platform call (one a handler waits for, outside the outbox) up to four times
/// while the network fails or the platform answers 5xx, 200 ms more between each try.
func retryingNetwork<T: Sendable>(_ call: () async throws(PlatformError) -> T) async throws -> T {
    var attempt = 1
    while true {
        let result: Result<T, PlatformError>
        do { result = .success(try await call()) } catch { result = .failure(error) }
        switch result {
        case .success(let value):
            return value
        case .failure(let error):
            guard attempt < 4, error.isRetryable, !error.isCancellation, error.code != .credentials else { throw error }
        }
        try await Task.sleep(for: .milliseconds(200 * attempt))
        attempt += 1
    }
}

/// A new ACTIVE alarm of `device`, as `POST /alarm/alarms` takes it.
func alarmBody(device: String, type: String, severity: String, text: String, fragments: [String: JSONValue] = [:]) -> JSONValue {
    var alarm = fragments
    alarm["source"] = ["id": .string(device)]
    alarm["type"] = .string(type)
    alarm["severity"] = .string(severity)
    alarm["text"] = .string(text)
    alarm["status"] = "ACTIVE"
    alarm["time"] = .string(timestamp())
    return .object(alarm)
}

/// Runs a handler's command through the executable runner (own process group, time limit, capped
/// output), between a header (`$ argv`) and a footer (exit status and duration) in the log.
func runDeviceCommand(_ argv: [String], input: [UInt8]?, environment: [String: String], timeout: Duration,
                      directory: String, logFile: String, logging: CommandLogging = .full) async -> CommandResult {
    guard let program = argv.first, program.hasPrefix("/") else {
        return CommandResult(exitCode: nil, detail: "the command must start with an absolute program path, found \(argv)")
    }
    appendLine("[switchyard: $ \(shellQuoted(argv))]", to: logFile)
    let started = ContinuousClock.now
    let spec = ExecSpec(command: argv, environment: environment, gracePeriod: .seconds(5), user: nil)
    let result = await ExecRunner().run(spec, operation: .null, environment: [:], timeout: timeout,
                                        workingDirectory: directory, logFile: logFile, templated: false,
                                        stdin: input ?? [], captureOutput: 1 << 20, logging: logging)
    if case .outputToFile = logging {
        await LogWriter.flush()  // the handler reads the file next: all of it must be there
    }
    let tail = ExecResult.lastLines(result.stderrTail)
    let outcome: CommandResult
    if case .exited(let code) = result.ending {
        outcome = CommandResult(exitCode: code, detail: tail, output: result.output)
    } else {
        outcome = CommandResult(exitCode: nil, detail: result.ending.reason(program: program, tail: ""))
    }
    let ending = outcome.exitCode.map { "exit status \($0)" } ?? outcome.detail
    appendLine("[switchyard: \(ending), after \((ContinuousClock.now - started).readable)]", to: logFile)
    return outcome
}

/// argv as a person would type it: arguments with spaces or quotes in single quotes.
func shellQuoted(_ argv: [String]) -> String {
    argv.map { argument in
        guard argument.isEmpty || argument.contains(where: { " \t\n'\"\\$`*?;&|<>()".contains($0) }) else { return argument }
        return "'" + argument.split(separator: "'", omittingEmptySubsequences: false).joined(separator: "'\\''") + "'"
    }.joined(separator: " ")
}

/// Appends one line to a log file (created 0600), best effort, in order with the plugin output
/// queued before it (``LogWriter``).
func appendLine(_ line: String, to path: String) {
    LogWriter.append(line: line, to: path)
}

/// The current time as the platform writes it (ISO 8601, UTC, milliseconds).
func timestamp() -> String {
    platformTimestamp()
}

/// Runs a program the way handlers' commands run (argv, own process group, time limit, captured output),
/// for the workbench and tools.
package func runTool(_ argv: [String], timeout: Duration = .seconds(60)) async -> CommandResult {
    await runDeviceCommand(argv, input: nil, environment: [:], timeout: timeout, directory: "/tmp", logFile: "/dev/null")
}
