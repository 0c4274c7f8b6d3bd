import Foundation
import JSONSupport
import Logging
import Testing
@testable import Switchyard

/// Pruned operation directories kept as spares for new operations (``WorkspaceSpares``): only a
/// directory that holds nothing but the agent's own emptied files is kept, a new workspace takes one
/// over fresh, and pruning never follows a link out of the state directory.
struct WorkspaceSparesTests {
    func inode(_ path: String) -> UInt64? {
        var info = stat()
        return lstat(path, &info) == 0 ? UInt64(info.st_ino) : nil
    }

    @Test func aPrunedDirectoryIsEmptiedAndTakenOverByTheNextOperation() throws {
        let state = temporaryDirectory()
        defer { FileSystem.removeTree(state) }
        let old = OperationWorkspace(stateDirectory: state, operationID: "100")
        try old.prepare(["id": "100"], writeOperationFile: true)
        write("old log\n", to: old.logFile("execute"))
        let spares = WorkspaceSpares(stateDirectory: state)
        let directoryInode = inode(old.directory)
        #expect(spares.recycle(old.directory))
        #expect(!FileSystem.exists(old.directory))
        #expect(spares.count == 1)
        #expect(FileSystem.mode(spares.directory) == 0o700)

        // An executable's operation: the spare's inode, its log empty, operation.json its own.
        let new = OperationWorkspace(stateDirectory: state, operationID: "200")
        try new.prepare(["id": "200"], writeOperationFile: true, spares: spares)
        #expect(inode(new.directory) == directoryInode)
        #expect(spares.count == 0)
        #expect(try FileSystem.readText(new.logFile("execute")) == "")
        #expect(try JSONValue.parse(FileSystem.read(new.operationFile) ?? []) == ["id": "200"])
        #expect(FileSystem.mode(new.operationFile) == 0o600)
        #expect(FileSystem.mode(new.directory) == 0o711)
        let age = time(nil) - (FileSystem.modificationTime(new.directory) ?? 0)
        #expect(age <= 5, "a taken-over directory is as old as its operation")

        // A compiled handler's operation gets no operation.json from a spare.
        #expect(spares.recycle(new.directory))
        let compiled = OperationWorkspace(stateDirectory: state, operationID: "300")
        try compiled.prepare(["id": "300"], writeOperationFile: false, spares: spares)
        #expect(inode(compiled.directory) == directoryInode)
        #expect(try FileSystem.list(compiled.directory) == ["execute.log"])
    }

    @Test func anOperationPreparedAgainKeepsItsOwnDirectory() throws {
        let state = temporaryDirectory()
        defer { FileSystem.removeTree(state) }
        let spares = WorkspaceSpares(stateDirectory: state)
        let pruned = OperationWorkspace(stateDirectory: state, operationID: "1")
        try pruned.prepare(.null, writeOperationFile: false)
        #expect(spares.recycle(pruned.directory))
        let running = OperationWorkspace(stateDirectory: state, operationID: "2")
        try running.prepare(["id": "2"], writeOperationFile: true)
        write("state\n", to: OperationWorkspace.statePath("phase", in: running.directory))
        try running.prepare(["id": "2"], writeOperationFile: true, spares: spares)
        #expect(try FileSystem.readText(OperationWorkspace.statePath("phase", in: running.directory)) == "state\n")
        #expect(spares.count == 1)
    }

    /// Anything but the agent's own plain files is not kept: the directory is left as it was for the
    /// caller to remove (a plugin's files, state, steps, a link planted where the log was).
    @Test func aDirectoryHoldingAnythingElseIsNotKept() throws {
        let state = temporaryDirectory()
        defer { FileSystem.removeTree(state) }
        let outside = state + "/outside"
        write("precious\n", to: outside)
        let spares = WorkspaceSpares(stateDirectory: state)
        let cases: [(String, (String) throws -> Void)] = [
            ("state file", { write("x", to: $0 + "/state.phase") }),
            ("plugin file", { write("x", to: $0 + "/download.part") }),
            ("steps", { try FileManager.default.createDirectory(atPath: $0 + "/steps/firmware", withIntermediateDirectories: true) }),
            ("log as a link", { path in
                #expect(symlink(outside, path + "/execute.log") == 0)
            }),
            ("log as a hard link", { path in
                #expect(link(outside, path + "/execute.log") == 0)
            }),
            ("log as a directory", { try FileManager.default.createDirectory(atPath: $0 + "/operation.json", withIntermediateDirectories: true) }),
        ]
        for (index, (name, plant)) in cases.enumerated() {
            let workspace = OperationWorkspace(stateDirectory: state, operationID: "\(index)")
            try workspace.prepare(.null, writeOperationFile: false)
            try plant(workspace.directory)
            #expect(!spares.recycle(workspace.directory), "\(name)")
            #expect(FileSystem.exists(workspace.directory), "\(name)")
            FileSystem.removeTree(workspace.directory)
        }
        #expect(try FileSystem.readText(outside) == "precious\n")
        #expect(spares.count == 0)
    }

    /// A restarted agent adopts its earlier run's spares that are still fit (checked again), removes
    /// the others, and keeps no more than the capacity.
    @Test func anEarlierRunsSparesAreAdoptedAndSparesAreCapped() throws {
        let state = temporaryDirectory()
        defer { FileSystem.removeTree(state) }
        write("old\n", to: state + "/operations.spare/1/execute.log", mode: 0o600)
        write("x", to: state + "/operations.spare/2/state.phase", mode: 0o600)
        let spares = WorkspaceSpares(stateDirectory: state)
        var kept = 0
        for index in 0..<(WorkspaceSpares.capacity + 3) {
            let workspace = OperationWorkspace(stateDirectory: state, operationID: "\(100 + index)")
            try workspace.prepare(.null, writeOperationFile: false)
            if spares.recycle(workspace.directory) { kept += 1 }
        }
        #expect(kept == WorkspaceSpares.capacity - 1)
        #expect(spares.count == WorkspaceSpares.capacity)
        #expect(try FileSystem.list(spares.directory)?.count == WorkspaceSpares.capacity)
        #expect(try FileSystem.readText(spares.directory + "/1/execute.log") == "")
        #expect(!FileSystem.exists(spares.directory + "/2"))
    }

    /// Files written in place (operation.json, plugin.pgid): a shorter content leaves nothing of the
    /// longer one, and neither a symbolic nor a hard link is written through.
    @Test func overwritingInPlaceTruncatesAndNeverFollowsALink() throws {
        let root = temporaryDirectory()
        defer { FileSystem.removeTree(root) }
        try FileSystem.overwrite(root + "/file", Array("a longer first content".utf8), mode: 0o600)
        try FileSystem.overwrite(root + "/file", Array("short".utf8), mode: 0o600)
        #expect(try FileSystem.readText(root + "/file") == "short")
        #expect(FileSystem.mode(root + "/file") == 0o600)
        #expect(FileSystem.empty(root + "/file"))
        #expect(try FileSystem.readText(root + "/file") == "")
        #expect(FileSystem.empty(root + "/file", ownedBy: geteuid()))
        #expect(!FileSystem.empty(root + "/file", ownedBy: geteuid() + 1))
        #expect(!FileSystem.empty(root + "/absent"))
        #expect(!FileSystem.exists(root + "/absent"))
        write("precious\n", to: root + "/target")
        #expect(symlink(root + "/target", root + "/symbolic") == 0)
        #expect(link(root + "/target", root + "/hard") == 0)
        for name in ["symbolic", "hard"] {
            #expect(throws: FileSystemError.self) { try FileSystem.overwrite(root + "/" + name, Array("x".utf8)) }
            #expect(!FileSystem.empty(root + "/" + name), "\(name)")
        }
        #expect(try FileSystem.readText(root + "/target") == "precious\n")
    }

    /// An executable's run leaves its workspace with only what a spare keeps: its log, operation.json
    /// and an emptied plugin.pgid, so that pruning keeps the directory for the next operation.
    @Test func anExecutablesWorkspaceIsKeptWithItsFilesEmptied() async throws {
        let state = temporaryDirectory()
        defer { FileSystem.removeTree(state) }
        let workspace = OperationWorkspace(stateDirectory: state, operationID: "9")
        try workspace.prepare(["id": "9"], writeOperationFile: true)
        let spec = ExecSpec(command: ["/bin/sh", "-c", "cat plugin.pgid; echo done"], environment: [:], gracePeriod: .seconds(1), user: nil)
        let result = await ExecRunner().run(spec, operation: ["id": "9"], environment: [:], timeout: .seconds(20),
                                            workingDirectory: workspace.directory, logFile: workspace.logFile("execute"),
                                            captureOutput: 4096, keepsGroupFile: true)
        #expect(result.ending == .exited(0))
        #expect(result.output.hasSuffix("done\n"))
        #expect(try FileSystem.list(workspace.directory) == ["execute.log", "operation.json", "plugin.pgid"])
        #expect(try FileSystem.readText(workspace.directory + "/plugin.pgid") == "")
        let spares = WorkspaceSpares(stateDirectory: state)
        #expect(spares.recycle(workspace.directory))
    }

    /// A plugin may leave a link to a directory in its workspace: removing the tree removes the
    /// link, never what it points to.
    @Test func removingATreeNeverFollowsALink() throws {
        let root = temporaryDirectory()
        defer { FileSystem.removeTree(root) }
        try FileManager.default.createDirectory(atPath: root + "/elsewhere", withIntermediateDirectories: true)
        write("precious\n", to: root + "/elsewhere/file")
        try FileManager.default.createDirectory(atPath: root + "/operations/7", withIntermediateDirectories: true)
        #expect(symlink(root + "/elsewhere", root + "/operations/7/link") == 0)
        FileSystem.removeTree(root + "/operations/7")
        #expect(!FileSystem.exists(root + "/operations/7"))
        #expect(try FileSystem.readText(root + "/elsewhere/file") == "precious\n")
    }
}

/// Housekeeping's pruning with spares: what is beyond the count goes (to the spares), an
/// unfinished operation's directory stays, and the maximum age applies within the count.
struct HousekeepingTests {
    @Test func pruningKeepsTheNewestAndRecyclesTheRest() async throws {
        let state = temporaryDirectory()
        defer { FileSystem.removeTree(state) }
        let journal = try Journal(directory: state, logger: Logger(label: "test"))
        for index in 0..<10 {
            let id = "\(100 + index)"
            #expect(try await journal.accept(id, operation: ["id": .string(id)], fragment: "c8y_Message"))
            try await journal.started(id)
            try OperationWorkspace(stateDirectory: state, operationID: id).prepare(.null, writeOperationFile: false)
            write("log of \(id)\n", to: state + "/operations/\(id)/execute.log", mode: 0o600)
            if index != 2 { try await journal.finished(id, status: "SUCCESSFUL") }
        }
        // The oldest kept one is older than the maximum age.
        var times = [timespec(tv_sec: time(nil) - 3 * 86_400, tv_nsec: 0), timespec(tv_sec: time(nil) - 3 * 86_400, tv_nsec: 0)]
        #expect(utimensat(AT_FDCWD, state + "/operations/106", &times, 0) == 0)
        let housekeeping = Housekeeping(stateDirectory: state, journal: journal,
                                        retention: .init(keep: 4, maximumAge: .seconds(86_400), every: 1),
                                        logger: Logger(label: "test"))
        await housekeeping.prune()
        #expect(try FileSystem.list(state + "/operations") == ["102", "107", "108", "109"])
        #expect(await housekeeping.removed == 6)
        #expect(housekeeping.spares.count == 6)
        for name in try FileSystem.list(housekeeping.spares.directory) ?? [] {
            #expect(try FileSystem.readText(housekeeping.spares.directory + "/\(name)/execute.log") == "")
        }
    }
}
