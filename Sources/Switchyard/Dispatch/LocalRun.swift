import Cumulocity
import HandlerKit
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// One handler run on this machine with nothing sent anywhere (`switchyard handlers run`): what would
/// reach the platform is printed instead, the operation's log is shown, and the outcome returned.
/// Compiled handlers run in this process as the agent runs them; executables (exec plugins and
/// `swift: {executable: …}` handlers) as the agent starts them, without the plugin proxy.
public struct LocalRun: Sendable {
    /// How the run ended, as the platform would be told.
    public enum End: Sendable, Equatable {
        case successful(result: [String: JSONValue])
        case failed(reason: String, result: [String: JSONValue])
        /// The handler asked for a device restart: the agent would restart the device and call it
        /// again with phase `resume`.
        case restartRequested
    }

    let registry: Registry
    let deviceID: String
    /// Where downloads are served from: a URL's last path segment names a file here.
    let files: String?
    let output: @Sendable (String) -> Void

    public init(registry: Registry, deviceID: String, files: String?, output: @escaping @Sendable (String) -> Void) {
        self.registry = registry
        self.deviceID = deviceID
        self.files = files
        self.output = output
    }

    /// Runs the declaration handling `fragment` on `operation` in `stateDirectory` (created if needed).
    public func run(fragment: String, operation json: JSONValue, phase: Phase, stateDirectory: String) async -> End {
        guard let declaration = registry.declaration(for: fragment) else {
            let handled = registry.fragments.joined(separator: ", ")
            return .failed(reason: "no declaration in \(registry.directory) handles \(fragment) (it handles: \(handled))", result: [:])
        }
        if phase == .resume && !declaration.resumable {
            return .failed(reason: "\(declaration.location) is not resumable: the agent would not call it with phase resume", result: [:])
        }
        do {
            try FileSystem.makeDirectories(stateDirectory, mode: 0o700)
        } catch {
            return .failed(reason: "cannot create the state directory \(stateDirectory): \(error)", result: [:])
        }
        let operation = Operation(id: json["id"]?.idValue ?? "local", deviceId: deviceID, externalId: nil, fragment: fragment, json: json)
        output("running \(declaration.handlerName) (\(declaration.location)) for \(fragment), phase \(phase.rawValue)")
        let logFile = stateDirectory + "/\(phase.rawValue).log"
        FileSystem.remove(logFile)
        let end: End
        switch declaration.kind {
        case .swift(_, let handler):
            let context = LocalContext(run: self, phase: phase, stateDirectory: stateDirectory, logFile: logFile)
            let outcome = await withTimeLimit(declaration.timeout) { () async -> Outcome in
                do {
                    return phase == .resume ? try await handler.resume(operation, context: context)
                        : try await handler.execute(operation, context: context)
                } catch {
                    return .failed("\(error)")
                }
            } ?? .failed("timed out after \(declaration.timeout) and was cancelled")
            end = switch outcome {
            case .successful(let result): .successful(result: result)
            case .failed(let reason, let result): .failed(reason: reason, result: result)
            case .restartRequired: .restartRequested
            }
        case .exec(let spec):
            end = await runExecutable(spec, declaration: declaration, operation: operation, phase: phase,
                                      stateDirectory: stateDirectory, logFile: logFile)
        }
        await LogWriter.flush()
        if let log = try? FileSystem.readText(logFile), !log.isEmpty {
            output("--- operation log (\(logFile)) ---")
            output(log.hasSuffix("\n") ? String(log.dropLast()) : log)
            output("---")
        }
        return end
    }

    private func runExecutable(_ spec: ExecSpec, declaration: HandlerDeclaration, operation: Operation, phase: Phase,
                               stateDirectory: String, logFile: String) async -> End {
        let workspaceFile = stateDirectory + "/operation.json"
        try? FileSystem.writeAtomically(workspaceFile, operation.json.encoded(), mode: 0o600, durable: false)
        let environment = ExecPluginRunner.variables(operation, phase: phase, stateDirectory: stateDirectory,
                                                     operationFile: workspaceFile, baseURL: "", spec: spec)
        let printer = self
        let result = await ExecRunner().run(spec, operation: operation.json, environment: environment, timeout: declaration.timeout,
                                            workingDirectory: stateDirectory, logFile: logFile,
                                            onDirective: { printer.show($0) },
                                            onInvalidDirective: { why, line in printer.output("! invalid directive (\(why)): \(line)") })
        if result.restartRequested, result.ending == .exited(0) { return .restartRequested }
        switch result.outcome(program: spec.command[0]) {
        case .successful(let fragments): return .successful(result: fragments)
        case .failed(let reason, let fragments): return .failed(reason: reason, result: fragments)
        case .restartRequired: return .restartRequested
        }
    }

    func show(_ directive: Directive) {
        switch directive {
        case .progress(let message): output("→ progress: \(message)")
        case .inventory(let fragments): sent("PUT /inventory/managedObjects/\(deviceID)", .object(fragments))
        case .event(let type, let text, let fragments): sent("POST /event/events", .object(fragments.merging(["type": .string(type), "text": .string(text)]) { $1 }))
        case .measurement(let type, let fragments): sent("POST /measurement/measurements", .object(fragments.merging(["type": .string(type)]) { $1 }))
        case .alarm(let type, let severity, let text, let fragments):
            sent("POST /alarm/alarms", .object(fragments.merging(["type": .string(type), "severity": .string(severity), "text": .string(text)]) { $1 }))
        case .clearAlarm(let type): output("→ clear the active alarms of type \(type)")
        case .result, .failure, .restart: break
        }
    }

    func sent(_ request: String, _ body: JSONValue) {
        output("→ \(request) \(String(decoding: body.encoded(), as: UTF8.self))")
    }
}

/// The ``HandlerContext`` of a local run: platform-bound calls are printed, the rest done for real.
struct LocalContext: HandlerContext {
    let run: LocalRun
    let phase: Phase
    let stateDirectory: String
    let logFile: String
    private let counter = Counter()

    init(run: LocalRun, phase: Phase, stateDirectory: String, logFile: String) {
        self.run = run
        self.phase = phase
        self.stateDirectory = stateDirectory
        self.logFile = logFile
    }

    final class Counter: Sendable {
        private let value = Mutex(0)
        func next() -> Int { value.withLock { $0 += 1; return $0 } }
    }

    func log(_ message: String) async { appendLine(message, to: logFile) }

    func updateInventory(_ fragments: [String: JSONValue]) async throws { run.show(.inventory(fragments)) }

    func sendEvent(type: String, text: String, fragments: [String: JSONValue]) async throws {
        run.show(.event(type: type, text: text, fragments: fragments))
    }

    func sendMeasurement(type: String, fragments: [String: JSONValue]) async throws {
        run.show(.measurement(type: type, fragments: fragments))
    }

    func raiseAlarm(type: String, severity: AlarmSeverity, text: String) async throws {
        run.show(.alarm(type: type, severity: severity.rawValue, text: text, fragments: [:]))
    }

    func clearAlarm(type: String) async throws { run.show(.clearAlarm(type: type)) }

    func saveState(_ value: String, forKey key: String) async throws {
        let path = statePath(key)
        try await BlockingPool.run { () throws(FileSystemError) in try FileSystem.writeAtomically(path, Array(value.utf8), mode: 0o600) }
    }

    func loadState(forKey key: String) async -> String? { (try? FileSystem.readText(statePath(key))) ?? nil }

    private func statePath(_ key: String) -> String {
        OperationWorkspace.statePath(key, in: stateDirectory)
    }

    func runCommand(_ argv: [String], input: [UInt8]?, environment: [String: String], timeout: Duration,
                    logging: CommandLogging) async -> CommandResult {
        await runDeviceCommand(argv, input: input, environment: environment, timeout: timeout, directory: stateDirectory,
                               logFile: logFile, logging: logging)
    }

    func sha256(ofFile path: String) async throws -> String {
        try await BlockingPool.run { () throws(DigestError) in try sha256Hex(ofFile: path) }
    }

    func blocking<T: Sendable, Failure: Error>(_ work: @escaping @Sendable () throws(Failure) -> T) async throws(Failure) -> T {
        try await BlockingPool.run(work)
    }

    /// Serves `url` from `--files`: its last path segment names the file there.
    func download(_ url: String, to path: String, maxBytes: Int64) async throws -> Int64 {
        guard let files = run.files else {
            throw DownloadError(url: url, detail: "a local run downloads nothing: give --files DIR to serve DIR/<last part of the URL>")
        }
        let name = url.split(separator: "?").first.flatMap { $0.split(separator: "/").last }.map(String.init) ?? ""
        let source = files + "/" + name
        guard let bytes = try? FileSystem.read(source) else { throw DownloadError(url: url, detail: "\(source) does not exist (404)") }
        guard Int64(bytes.count) <= maxBytes else { throw DownloadError(url: url, detail: "\(bytes.count) bytes, more than the limit of \(maxBytes)") }
        try FileSystem.writeAtomically(path, bytes, mode: 0o600, durable: false)
        run.output("→ GET \(url) (served from \(source), \(bytes.count) bytes)")
        return Int64(bytes.count)
    }

    func sendEvent(type: String, text: String, fragments: [String: JSONValue], attaching path: String,
                   fileName: String, contentType: String) async throws -> String {
        run.show(.event(type: type, text: text, fragments: fragments))
        let size = (try? FileSystem.read(path))?.count ?? 0
        let number = counter.next()
        run.output("→ POST /event/events/local-\(number)/binaries \(fileName) (\(contentType), \(size) bytes from \(path))")
        return "local:/event/events/local-\(number)/binaries"
    }

    func storeFile(_ path: String, fileName: String, contentType: String,
                   describedBy fragments: [String: JSONValue]) async throws -> (url: String, managedObject: String) {
        let number = counter.next()
        let size = (try? FileSystem.read(path))?.count ?? 0
        let url = "local:/inventory/binaries/local-\(number)"
        run.output("→ POST /inventory/binaries \(fileName) (\(contentType), \(size) bytes from \(path))")
        run.sent("POST /inventory/managedObjects", .object(fragments.merging(["url": .string(url)]) { $1 }))
        return (url, "local-\(number)")
    }

    /// Steps run locally too, each in its own directory, through the same registry.
    func runStep(_ step: String, fragment: String, payload: JSONValue, phase: Phase) async -> Outcome {
        run.output("step \(step): \(fragment)")
        let stepDirectory = OperationWorkspace.stepDirectory(step, in: stateDirectory)
        switch await run.run(fragment: fragment, operation: [fragment: payload], phase: phase, stateDirectory: stepDirectory) {
        case .successful(let result): return .successful(result: result)
        case .failed(let reason, let result): return .failed(reason: reason, result: result)
        case .restartRequested: return .restartRequired
        }
    }
}
