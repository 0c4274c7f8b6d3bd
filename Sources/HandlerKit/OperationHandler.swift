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
}

extension OperationHandler {
    public func resume(_ operation: Operation, context: any HandlerContext) async throws -> Outcome {
        .failed("the agent restarted while \(operation.fragment) was executing, and its handler cannot resume")
    }
}

/// Options a handler cannot use, with what was wrong.
public struct HandlerOptionsError: Error, CustomStringConvertible, Sendable {
    public let detail: String
    public init(_ detail: String) { self.detail = detail }
    public var description: String { detail }
}

/// What a running handler may do besides returning its outcome.
public protocol HandlerContext: Sendable {
    /// Why the handler is called.
    var phase: Phase { get }
    /// A directory for this operation that survives agent restarts; removed some time after it ends.
    var stateDirectory: String { get }

    /// Records a progress message in the operation's log.
    func log(_ message: String) async

    /// Updates fragments of the target device in the inventory (never its `name`).
    /// - Throws: the platform's error when the update is refused.
    func updateInventory(_ fragments: [String: JSONValue]) async throws

    /// Sends an event from the target device.
    func sendEvent(type: String, text: String, fragments: [String: JSONValue]) async throws

    /// Sends a measurement from the target device, e.g. `["c8y_Temperature": ["T": ["value": 21.5, "unit": "C"]]]`.
    func sendMeasurement(type: String, fragments: [String: JSONValue]) async throws
}
