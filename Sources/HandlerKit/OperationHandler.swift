/// A compiled operation handler, linked into the agent and named by a `swift:` declaration in `handlers.d`.
///
/// The runtime creates one instance per declaration with the declaration's `options`, and calls it
/// once per operation. It reports EXECUTING before calling, and SUCCESSFUL or FAILED from the ``Outcome``.
/// A thrown error ends the operation as FAILED with the error's description as the reason.
public protocol OperationHandler: Sendable {
    /// Creates the handler from the declaration's `options` mapping (`.null` when absent).
    /// - Throws: ``HandlerOptionsError`` for options it cannot use; the declaration is then rejected
    ///   with its file and line, and the operation is not advertised.
    init(options: JSONValue) throws(HandlerOptionsError)

    /// Runs the operation for the first time.
    func execute(_ operation: Operation, context: any HandlerContext) async throws -> Outcome

    /// Finishes an operation that was running when the agent or the device restarted.
    /// Called only for declarations marked `resumable: true`. The default fails the operation.
    func resume(_ operation: Operation, context: any HandlerContext) async throws -> Outcome

    /// Called once after each start, when the device is registered: report the device's current state
    /// (its configuration, software list, firmware). The default does nothing.
    func report(context: any DeviceContext) async throws
}

extension OperationHandler {
    public func resume(_ operation: Operation, context: any HandlerContext) async throws -> Outcome {
        .failed("the agent restarted while \(operation.fragment) was executing, and its handler cannot resume")
    }

    public func report(context: any DeviceContext) async throws {}
}

/// Options a handler cannot use, with what was wrong.
public struct HandlerOptionsError: Error, CustomStringConvertible, Sendable, Equatable {
    public let detail: String
    public init(_ detail: String) { self.detail = detail }
    public var description: String { detail }
}

/// What a handler may do with its device outside an operation (see ``OperationHandler/report(context:)``).
public protocol DeviceContext: Sendable {
    /// Updates fragments of the device in the inventory (never its `name`). Queued durably.
    func updateInventory(_ fragments: [String: JSONValue]) async throws

    /// The SHA-256 of a file, as lower-case hex.
    /// - Throws: when the file cannot be read.
    func sha256(ofFile path: String) async throws -> String

    /// Runs a program (argv, no shell, no templates) in its own process group with a time limit.
    /// - Parameters:
    ///   - input: bytes for its standard input (then end of file); `nil` for none.
    ///   - environment: variables on top of the agent's environment (without the agent's own
    ///     `SWITCHYARD_*` and systemd variables; `PATH`, `LANG` and `HOME` always set).
    ///   - logging: what of the run goes into the operation's log (every run gets a header with its
    ///     argv and a footer with its exit status and duration).
    func runCommand(_ argv: [String], input: [UInt8]?, environment: [String: String], timeout: Duration,
                    logging: CommandLogging) async -> CommandResult

    /// Raises an alarm on the device, queued durably (the platform counts repeats of an active alarm
    /// of one type rather than adding alarms).
    func raiseAlarm(type: String, severity: AlarmSeverity, text: String) async throws

    /// Clears the device's active alarms of `type`, after what was queued before has gone out; none
    /// active: nothing happens.
    func clearAlarm(type: String) async throws

    /// Runs `work` on one of the agent's threads for blocking work (reading or writing large files,
    /// globbing, C calls that block) and returns its result: never block the cooperative pool that
    /// runs every operation, which on a one-core device has a single thread.
    func blocking<T: Sendable, Failure: Error>(_ work: @escaping @Sendable () throws(Failure) -> T) async throws(Failure) -> T
}

/// What of a command's run is copied into the operation's log.
public enum CommandLogging: Sendable, Equatable {
    /// Standard output and error, up to the log's limit.
    case full
    /// Standard error only, and how many lines of standard output there were: for commands whose
    /// output is data the handler reads (a software list of thousands of lines), not a story.
    case outputSummary
    /// Standard output is written to the file at `path` (created with mode 0600, or emptied), at
    /// most `maxBytes` of it (the rest is dropped; the run's footer in the log says so), and not
    /// to the log; standard error goes to the log. For output too large to hold in memory: a log
    /// excerpt, a decompressed file. ``CommandResult/output`` is then empty.
    case outputToFile(path: String, maxBytes: Int64)
}

/// An alarm's severity, as the platform names them.
public enum AlarmSeverity: String, Sendable {
    case critical = "CRITICAL", major = "MAJOR", minor = "MINOR", warning = "WARNING"
}

extension DeviceContext {
    /// Runs a program with its output in the operation's log.
    public func runCommand(_ argv: [String], input: [UInt8]?, environment: [String: String], timeout: Duration) async -> CommandResult {
        await runCommand(argv, input: input, environment: environment, timeout: timeout, logging: .full)
    }

    /// Runs a program with no input and no extra environment.
    public func runCommand(_ argv: [String], timeout: Duration) async -> CommandResult {
        await runCommand(argv, input: nil, environment: [:], timeout: timeout, logging: .full)
    }
}

/// How a command run through ``DeviceContext/runCommand(_:timeout:)`` ended.
public struct CommandResult: Sendable, Equatable {
    /// The exit code, or `nil` when the command was killed, timed out or could not start.
    public let exitCode: Int32?
    /// Why it did not exit normally, or the end of its standard error; empty when there is nothing to say.
    public let detail: String
    /// Its standard output (the first MiB).
    public let output: String

    public init(exitCode: Int32?, detail: String, output: String = "") {
        self.exitCode = exitCode
        self.detail = detail
        self.output = output
    }

    public var succeeded: Bool { exitCode == 0 }

    /// A reason for a failure report: `"exited with code 3: <stderr tail>"`.
    public var failureDescription: String {
        guard let exitCode else { return detail }
        return detail.isEmpty ? "exited with code \(exitCode)" : "exited with code \(exitCode): \(detail)"
    }
}

/// What a running handler may do besides returning its outcome.
public protocol HandlerContext: DeviceContext {
    /// Why the handler is called.
    var phase: Phase { get }
    /// A directory for this operation that survives agent restarts; removed some time after it ends.
    var stateDirectory: String { get }

    /// Records a progress message in the operation's log.
    func log(_ message: String) async

    /// Stores a small value under `key` for this operation, durably (it survives agent and device
    /// restarts, for ``OperationHandler/resume(_:context:)``).
    /// - Throws: when it cannot be written.
    func saveState(_ value: String, forKey key: String) async throws

    /// The value stored under `key` for this operation, if any.
    func loadState(forKey key: String) async -> String?

    /// Downloads `url` into the file at `path`, streaming (never the whole body in memory). The
    /// tenant's credentials are sent only when the URL is on the tenant's host. A partial file left
    /// by an interrupted download is resumed with an HTTP Range request when the server supports it.
    /// - Returns: the size of the complete file.
    /// - Throws: when the download fails, or would exceed `maxBytes`.
    func download(_ url: String, to path: String, maxBytes: Int64) async throws -> Int64

    /// Sends an event from the target device.
    func sendEvent(type: String, text: String, fragments: [String: JSONValue]) async throws

    /// Sends a measurement from the target device, e.g. `["c8y_Temperature": ["T": ["value": 21.5, "unit": "C"]]]`.
    func sendMeasurement(type: String, fragments: [String: JSONValue]) async throws

    /// Creates an event from the target device at once (not queued: the platform must be
    /// reachable) and attaches the file at `path` to it as its binary, streamed from disk, never
    /// whole in memory. The file is uploaded as `fileName` with `contentType`.
    /// - Returns: the URL the platform serves the file at (`<tenant>/event/events/<id>/binaries`),
    ///   as a log request's or a configuration upload's result names it.
    /// - Throws: when the event cannot be created or the file cannot be read or sent.
    func sendEvent(type: String, text: String, fragments: [String: JSONValue], attaching path: String,
                   fileName: String, contentType: String) async throws -> String

    /// Runs this device's own handler for `fragment` on `payload` as one named step of this operation
    /// (a device profile's firmware, software and configuration): the handler a single operation of
    /// that fragment would get, with its time limit and guarantees, its inventory updates, a state
    /// directory of its own under this one, but no status of its own: its outcome is returned.
    /// - Returns: the step's outcome. ``Outcome/restartRequired`` means the step needs the device
    ///   restarted: return it (the declaration must be `resumable`), and after the restart call
    ///   this again for the same step with `phase` ``Phase/resume``. No handler for `fragment`, or
    ///   one that cannot resume, is a failed outcome saying so.
    func runStep(_ step: String, fragment: String, payload: JSONValue, phase: Phase) async -> Outcome

    /// Stores the file at `path` in the tenant's file repository (inventory binaries), streamed, and
    /// creates a managed object that refers to it: `fragments` plus `url` (the file's URL). This is
    /// how a legacy configuration snapshot is kept (`type: c8y_ConfigurationDump`). Not queued: the
    /// platform must be reachable.
    /// - Returns: the file's URL and the created managed object's id.
    func storeFile(_ path: String, fileName: String, contentType: String,
                   describedBy fragments: [String: JSONValue]) async throws -> (url: String, managedObject: String)
}
