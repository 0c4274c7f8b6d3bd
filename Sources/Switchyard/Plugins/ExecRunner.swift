import Cumulocity
import HandlerKit
import Subprocess
import SystemPackage
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Runs executable handlers: argv without a shell, the operation JSON on stdin and in a file,
/// the agent's environment without its own variables (``PluginEnvironment``), its own session and process group, output captured with a cap, and a
/// timeout that sends SIGTERM to the whole group, waits the grace period, then SIGKILL.
struct ExecRunner: Sendable {
    /// Bytes of standard output and error kept in the operation's log file.
    static let logLimit = 1 << 20
    /// Bytes of standard error kept for the failure reason.
    static let tailBytes = 4096
    static let path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    static let setpriv = "/usr/bin/setpriv"
    /// A plugin that exits without reading its input closes the pipe we write it to: that must be an
    /// error of the write (EPIPE), not SIGPIPE ending this process, whoever runs plugins (the agent,
    /// `handlers run`, `conformance`, a test).
    static let ignoreBrokenPipes: Void = { signal(SIGPIPE, SIG_IGN) }()

    /// Runs one operation.
    /// - Parameters:
    ///   - environment: the `SWITCHYARD_*` context variables.
    ///   - workingDirectory: the operation's state directory; also receives the log.
    ///   - onDirective: called, in order, with each directive that acts on the platform
    ///     (progress, inventory, event, alarm, clear-alarm, measurement); result, failure and restart
    ///     are collected into the ``ExecResult``.
    func run(_ spec: ExecSpec, operation: JSONValue, environment: [String: String], timeout: Duration,
             workingDirectory: String, logFile: String, user: RunAs? = nil, templated: Bool = true,
             stdin: [UInt8]? = nil, captureOutput: Int = 0, logging: CommandLogging = .full, keepsGroupFile: Bool = false,
             onDirective: @escaping @Sendable (Directive) -> Void = { _ in },
             onInvalidDirective: @escaping @Sendable (_ why: String, _ line: String) -> Void = { _, _ in }) async -> ExecResult {
        var argv = spec.command.enumerated().map { index, argument in
            index == 0 || !templated ? argument : Template.render(argument, with: operation)
        }
        if let index = argv.firstIndex(where: { $0.utf8.contains(0) }) {
            // A C string ends at NUL: the program would get a different, shorter argument.
            return ExecResult(ending: .couldNotStart("argument \(index) (\(spec.command[index])) holds a NUL character "
                                                     + "from the operation; no program argument can carry one"),
                              stderrTail: "", logTruncated: false)
        }
        if let user {
            // Change user through util-linux's setpriv rather than set*id() in the forked child: the
            // child of a multithreaded process must not call glibc's setxid machinery.
            argv = [Self.setpriv, "--reuid=\(user.uid)", "--regid=\(user.gid)", "--init-groups", "--"] + argv
        }
        var env: [Subprocess.Environment.Key: String] = [:]
        for (key, value) in PluginEnvironment.base(home: workingDirectory) { env[Subprocess.Environment.Key(stringLiteral: key)] = value }
        for (key, value) in spec.environment { env[Subprocess.Environment.Key(stringLiteral: key)] = value }
        for (key, value) in environment { env[Subprocess.Environment.Key(stringLiteral: key)] = value }

        var options = PlatformOptions()
        options.createSession = true
        options.teardownSequence = [.send(signal: .terminate, toProcessGroup: true, allowedDurationToNextStep: spec.gracePeriod)]
        let configuration = Configuration(
            executable: .path(FilePath(argv[0])), arguments: Arguments(Array(argv.dropFirst())),
            environment: .custom(env), workingDirectory: FilePath(workingDirectory), platformOptions: options)

        Self.ignoreBrokenPipes
        let log = LogCapture(file: logFile, limit: Self.logLimit, tailBytes: Self.tailBytes, captureLimit: captureOutput,
                             logging: logging, onDirective: onDirective, onInvalidDirective: onInvalidDirective)
        let input = stdin ?? operation.encoded()
        let processGroup = ProcessGroupBox()

        // On timeout the whole group is stopped first: grandchildren may hold the output pipes open
        // after the plugin itself has gone.
        let outcome = await withTimeLimit(timeout, onTimeout: {
            if let pgid = processGroup.get() { await Self.stopGroup(pgid, grace: spec.gracePeriod) }
        }) { () async -> ExecResult.Ending? in
            do {
                let result = try await Subprocess.run(configuration, input: .inputWriter, output: .sequence, error: .sequence) { execution in
                    let pid = execution.processIdentifier.value
                    processGroup.set(pid)
                    Self.recordGroup(pid, in: workingDirectory)
                    let writer = execution.standardInputWriter
                    await withTaskGroup(of: Void.self) { streams in
                        streams.addTask {
                            // A plugin may exit without reading its input: that is not an error. No
                            // input is no write at all, only the end of file (an empty write was seen
                            // to leave standard input open now and then, so a plugin reading it hung).
                            if !input.isEmpty { _ = try? await writer.write(input) }
                            try? await writer.finish()
                        }
                        streams.addTask {
                            do { for try await chunk in execution.standardOutput { log.take(chunk, stderr: false) } } catch {}
                        }
                        streams.addTask {
                            do { for try await chunk in execution.standardError { log.take(chunk, stderr: true) } } catch {}
                        }
                    }
                }
                switch result.terminationStatus {
                case .exited(let code): return .exited(code)
                case .signaled(let signal): return .signalled(signal)
                }
            } catch is CancellationError {
                return nil
            } catch {
                return .couldNotStart("\(error)")
            }
        }
        let ending: ExecResult.Ending = switch outcome {
        case nil: .timedOut(timeout)
        case .some(nil): .couldNotStart("cancelled")
        case .some(let ending?): ending
        }
        if keepsGroupFile {
            FileSystem.empty(workingDirectory + "/" + Self.groupFile)
        } else {
            unlink(workingDirectory + "/" + Self.groupFile)
        }
        log.finish()
        // The log is whole when the run's end is reported, unless the disk holds the writer up: then
        // the end is not held back for it.
        _ = await withTimeLimit(.seconds(2)) { await LogWriter.flush() }
        let collected = log.collected
        return ExecResult(ending: ending, stderrTail: log.stderrTail, logTruncated: log.truncated,
                          result: collected.result, failureReason: collected.failureReason,
                          restartRequested: collected.restart, output: log.capturedOutput, processGroup: processGroup.get())
    }
}

extension ExecRunner {
    /// The file in an operation's directory that names its running plugin's process group, so that a
    /// plugin left running by an agent that was killed can be stopped by the next one.
    static let groupFile = "plugin.pgid"

    /// Writes `<pgid> <start time>`: the start time (from /proc) tells the group from a later process
    /// that reused the number. Not synced: after a power cut there is no process left to stop.
    static func recordGroup(_ pgid: pid_t, in directory: String) {
        guard let started = startTime(of: pgid) else { return }
        try? FileSystem.overwrite(directory + "/" + groupFile, Array("\(pgid) \(started)\n".utf8), mode: 0o600)
    }

    /// The start time of a process in clock ticks since boot (field 22 of /proc/<pid>/stat).
    static func startTime(of pid: pid_t) -> UInt64? {
        guard let text = try? FileSystem.readText("/proc/\(pid)/stat"), let close = text.lastIndex(of: ")") else { return nil }
        // Fields after the command name (which may hold spaces), starting with field 3 (state).
        let fields = text[text.index(after: close)...].split(separator: " ")
        return fields.count > 19 ? UInt64(fields[19]) : nil
    }

    /// Stops the plugin process group a previous run of the agent left in `directory`, if it still
    /// runs: SIGTERM to the group, `grace` to end, then SIGKILL. Returns whether one was found.
    static func terminateLeftover(in directory: String, grace: Duration) async -> Bool {
        let file = directory + "/" + groupFile
        defer { unlink(file) }
        guard let text = try? FileSystem.readText(file), !text.isEmpty else { return false }
        let parts = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard parts.count == 2, let pgid = pid_t(parts[0]), pgid > 1, let recorded = UInt64(parts[1]),
              startTime(of: pgid) == recorded else { return false }
        await stopGroup(pgid, grace: grace)
        return true
    }

    /// SIGTERM to a process group, `grace` for it to end, then SIGKILL.
    static func stopGroup(_ pgid: pid_t, grace: Duration) async {
        kill(-pgid, SIGTERM)
        let deadline = ContinuousClock.now + grace
        // A member that has exited but is not yet reaped (a zombie) has ended: it is not waited for.
        while ContinuousClock.now < deadline, await groupIsAlive(pgid) {
            try? await Task.sleep(for: .milliseconds(20))
        }
        kill(-pgid, SIGKILL)
    }

    /// Whether a member of the group still runs: the leader, read from /proc (one small read), or,
    /// once it has ended, any other member (a scan of /proc, on the blocking pool).
    static func groupIsAlive(_ pgid: pid_t) async -> Bool {
        guard kill(-pgid, 0) == 0 else { return false }
        if let state = processState(pgid), state != "Z" { return true }
        return await BlockingPool.run { livingProcesses(inGroup: pgid) > 0 }
    }

    /// The state letter of a process (`R`, `S`, `Z`, …), `nil` when it is gone.
    static func processState(_ pid: pid_t) -> Substring? {
        guard let stat = try? FileSystem.readText("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else { return nil }
        return stat[stat.index(after: close)...].split(separator: " ").first
    }

    /// How many members of a process group are alive (zombies, which have ended, do not count).
    /// Reads every process's /proc entry: call it off the cooperative pool.
    static func livingProcesses(inGroup group: pid_t) -> Int {
        guard let entries = try? FileSystem.list("/proc") else { return 0 }
        return entries.filter { entry in
            guard let pid = Int32(entry), let stat = try? FileSystem.readText("/proc/\(pid)/stat"),
                  let close = stat.lastIndex(of: ")") else { return false }
            // After the command name: state (field 3), ppid, pgrp (field 5).
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            return fields.count > 3 && Int32(fields[2]) == group && fields[0] != "Z"
        }.count
    }
}

/// The plugin's process id, which is also its process group id (it runs in its own session).
final class ProcessGroupBox: Sendable {
    private let value = Mutex<pid_t?>(nil)
    func set(_ pid: pid_t) { value.withLock { $0 = pid } }
    func get() -> pid_t? { value.withLock { $0 } }
}
