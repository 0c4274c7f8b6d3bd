import HandlerKit
import JSONSupport

/// An operation's directory in the state directory (`operations/<id>/`) and the files in it: what a
/// handler runs in, logs to and keeps state in across restarts. Pruned by ``Housekeeping`` some time
/// after the operation ends.
struct OperationWorkspace: Sendable {
    let directory: String

    init(stateDirectory: String, operationID: String) {
        directory = stateDirectory + "/operations/" + operationID
    }

    /// The workspace of one step of an operation (``HandlerContext/runStep(_:fragment:payload:phase:)``):
    /// `steps/<step>` inside the operation's, the step's name reduced to a safe file name.
    func step(_ name: String) -> OperationWorkspace {
        OperationWorkspace(directory: Self.stepDirectory(name, in: directory))
    }

    private init(directory: String) { self.directory = directory }

    /// `<directory>/steps/<step>`, the step's name reduced to a safe file name.
    static func stepDirectory(_ step: String, in directory: String) -> String {
        directory + "/steps/" + safeFileName(step)
    }

    /// Where a handler's state value `key` is kept in an operation's directory: `state.<key>`.
    static func statePath(_ key: String, in directory: String) -> String {
        directory + "/state." + safeFileName(key)
    }

    /// A name as one file name: letters, digits, `-` and `_` kept, anything else `_`.
    static func safeFileName(_ name: String) -> String {
        String(name.map { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" ? $0 : "_" })
    }

    /// The log of one phase (`execute.log`, `resume.log`, `report.log`, `restart.log`).
    func logFile(_ name: String) -> String { directory + "/\(name).log" }

    /// The operation as the platform sent it, for an executable plugin (`SWITCHYARD_OPERATION_FILE`).
    var operationFile: String { directory + "/operation.json" }

    /// Creates the directory (traversable, not listable, by others, so that a plugin declared with
    /// `user:` reaches its own), with `operation.json` when asked (not synced: after a crash the
    /// journal has the operation, and the workspace is prepared again).
    func prepare(_ operation: JSONValue, writeOperationFile: Bool) throws(FileSystemError) {
        try FileSystem.makeDirectories(directory, mode: 0o711)
        if writeOperationFile { try writeOperation(operation) }
    }

    func writeOperation(_ operation: JSONValue) throws(FileSystemError) {
        try FileSystem.writeAtomically(operationFile, operation.encoded(), mode: 0o600, durable: false)
    }
}
