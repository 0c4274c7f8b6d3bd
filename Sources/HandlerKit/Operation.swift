@_exported public import JSONSupport
import FoundationEssentials

/// One device operation as a handler sees it.
public struct Operation: Sendable {
    /// The platform's operation id.
    public let id: String
    /// The managed object id of the device the operation targets (the agent or one of its children).
    public let deviceId: String
    /// The target device's external id, when known.
    public let externalId: String?
    /// The fragment that selected this handler, e.g. `c8y_Restart`.
    public let fragment: String
    /// The whole operation as the platform sent it.
    public let json: JSONValue

    public init(id: String, deviceId: String, externalId: String?, fragment: String, json: JSONValue) {
        self.id = id
        self.deviceId = deviceId
        self.externalId = externalId
        self.fragment = fragment
        self.json = json
    }

    /// The value of the selecting fragment (`json[fragment]`), `.null` when absent.
    public var payload: JSONValue { json[fragment] ?? .null }
}

/// Why a handler is being called.
public enum Phase: String, Sendable {
    /// The first run of the operation.
    case execute
    /// The operation was running when the agent or the device restarted; finish what was started.
    case resume
}

/// How a handler ended an operation.
public enum Outcome: Sendable, Equatable {
    /// SUCCESSFUL; `result` fragments are merged into the final status update.
    case successful(result: [String: JSONValue] = [:])
    /// FAILED with a reason a person can act on; `result` fragments are merged too.
    case failed(reason: String, result: [String: JSONValue] = [:])
    /// The device must restart to go on: the runtime restarts it through its `c8y_Restart` handler and
    /// then calls ``OperationHandler/resume(_:context:)``. Only for declarations marked `resumable: true`.
    case restartRequired

    public static var successful: Outcome { .successful(result: [:]) }
    public static func failed(_ reason: String) -> Outcome { .failed(reason: reason, result: [:]) }
}

/// The current time as the platform writes it: ISO 8601 in UTC with milliseconds
/// (`2026-12-01T09:30:00.000Z`), for the `time` of fragments a handler reports.
public func platformTimestamp() -> String {
    Date().formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
}
