import CLinux
import HandlerKit
import JSONSupport
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

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
    var operationFile: String { directory + "/" + Self.operationFileName }

    /// The name of an executable's copy of its operation in its workspace.
    static let operationFileName = "operation.json"

    /// Creates the directory (traversable, not listable, by others, so that a plugin declared with
    /// `user:` reaches its own), a spare renamed into place when there is one, with `operation.json`
    /// when asked (not synced: after a crash the journal has the operation, and the workspace is
    /// prepared again).
    func prepare(_ operation: JSONValue, writeOperationFile: Bool, spares: WorkspaceSpares? = nil) throws(FileSystemError) {
        if let spare = takeOver(spares) {
            // A spare of an executable's: a compiled handler's workspace has no operation.json.
            if spare.holdsOperationFile, !writeOperationFile { unlink(operationFile) }
        } else {
            try FileSystem.makeDirectories(directory, mode: 0o711)
        }
        if writeOperationFile { try writeOperation(operation) }
    }

    /// Renames a spare into place when there is one and the directory does not exist yet (an
    /// operation prepared again keeps its own); `nil` when the directory is to be made.
    private func takeOver(_ spares: WorkspaceSpares?) -> WorkspaceSpares.Spare? {
        guard let spares, let spare = spares.take() else { return nil }
        if sy_rename_noreplace(spare.path, directory) != 0 {
            let code = errno
            var info = stat()
            // A file system without RENAME_NOREPLACE: the same, checked first.
            guard code == EINVAL || code == ENOSYS, lstat(directory, &info) != 0, errno == ENOENT,
                  rename(spare.path, directory) == 0 else {
                // The directory exists (an operation prepared again keeps its own), or its parent
                // does not yet: the spare waits for the next operation, if it is still there.
                if FileSystem.isDirectory(spare.path) { spares.putBack(spare) }
                return nil
            }
        }
        // Its age is the operation's, for housekeeping's maximum age.
        utimensat(AT_FDCWD, directory, nil, 0)
        return spare
    }

    /// Writes `operation.json` in place (a spare's empty one, or a new file): it is read only by the
    /// plugin started after it, and a crash before that prepares the workspace again.
    func writeOperation(_ operation: JSONValue) throws(FileSystemError) {
        try FileSystem.overwrite(operationFile, operation.encoded(), mode: 0o600)
    }
}

/// Directories of pruned operations, emptied and kept for new operations to take over, so that a
/// steady stream of operations allocates and frees no inodes for its workspaces.
///
/// Creating a file or a directory is an inode allocation, and removing one a free: on flash both are
/// metadata writes, and on ext4 without a journal an allocation steps over every inode freed in the
/// last minutes (measured here: 0.24 ms per mkdir or create with 10,000 operations pruned, against
/// 0.05 ms for a rename). ``Housekeeping`` offers the directories it prunes; a new operation's
/// workspace is a spare renamed into place, with its `execute.log` (and an executable's
/// `operation.json` and `plugin.pgid`) kept, empty, for the operation to write again.
///
/// Only a directory that holds nothing but those files, all owned by the agent and none linked
/// elsewhere, is kept; anything else (a plugin's files, state, steps) is removed as before. The
/// spares live in `operations.spare/` (mode 0700); an earlier run's are checked again and adopted at
/// the first pruning, so that a restarted agent has its spares at once.
final class WorkspaceSpares: Sendable {
    /// At most this many are kept; a pruning beyond it removes directories as before.
    static let capacity = 64
    /// The files a spare keeps (emptied): what every operation, or every executable's, writes again.
    static let keptFiles: Set<String> = ["execute.log", OperationWorkspace.operationFileName, ExecRunner.groupFile]

    struct Spare: Sendable {
        let path: String
        /// It keeps an (empty) `operation.json`, which a compiled handler's workspace must not have.
        let holdsOperationFile: Bool
    }

    let directory: String
    private let state = Mutex<(spares: [Spare], ready: Bool)>(([], false))

    init(stateDirectory: String) {
        directory = stateDirectory + "/operations.spare"
    }

    var count: Int { state.withLock { $0.spares.count } }

    /// A spare directory to rename into place, if there is one.
    func take() -> Spare? {
        state.withLock { $0.spares.popLast() }
    }

    /// Empties `path`, an operation's directory, and keeps it as a spare; `false` when it is not
    /// one to keep (the caller removes it). Blocking file-system work: call it off the cooperative pool.
    func recycle(_ path: String) -> Bool {
        guard prepareDirectory(), count < Self.capacity, let names = Self.empty(path) else { return false }
        let spare = directory + "/" + (path.split(separator: "/").last.map(String.init) ?? "")
        guard rename(path, spare) == 0 else { return false }
        keep(Spare(path: spare, holdsOperationFile: names.contains(OperationWorkspace.operationFileName)))
        return true
    }

    /// Returns a spare that was taken but not used.
    func putBack(_ spare: Spare) { keep(spare) }

    private func keep(_ spare: Spare) {
        state.withLock { $0.spares.append(spare) }
    }

    /// `operations.spare/` once per process: an earlier run's spares that are still fit to keep are
    /// adopted, the others removed.
    private func prepareDirectory() -> Bool {
        if state.withLock({ $0.ready }) { return true }
        if Self.isAgentsDirectory(directory) {
            for name in (try? FileSystem.list(directory)) ?? [] {
                let path = directory + "/" + name
                if count < Self.capacity, let names = Self.empty(path) {
                    keep(Spare(path: path, holdsOperationFile: names.contains(OperationWorkspace.operationFileName)))
                } else {
                    FileSystem.removeTree(path)
                }
            }
            chmod(directory, 0o700)
        } else {
            FileSystem.removeTree(directory)
            guard mkdir(directory, 0o700) == 0 else { return false }
        }
        state.withLock { $0.ready = true }
        return true
    }

    /// Truncates the kept files of an operation's directory and returns their names; `nil` (nothing
    /// changed but truncated files) when it holds anything else, or anything not plainly the agent's own.
    static func empty(_ path: String) -> [String]? {
        guard isAgentsDirectory(path), let names = try? FileSystem.list(path), names.allSatisfy(keptFiles.contains),
              names.allSatisfy({ FileSystem.empty(path + "/" + $0, ownedBy: geteuid()) }) else { return nil }
        return names
    }

    /// A directory (not a link to one) owned by the agent's user.
    private static func isAgentsDirectory(_ path: String) -> Bool {
        var info = stat()
        return lstat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR && info.st_uid == geteuid()
    }
}
