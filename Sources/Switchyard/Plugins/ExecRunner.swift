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

/// What one run of an executable handler produced.
struct ExecResult: Sendable {
    enum Ending: Sendable, Equatable {
        case exited(Int32)
        case signalled(Int32)
        case timedOut(Duration)
        case couldNotStart(String)
    }
    var ending: Ending
    /// The last lines of standard error (at most ``ExecRunner/tailBytes``).
    var stderrTail: String
    /// Whether the log file was cut at ``ExecRunner/logLimit``.
    var logTruncated: Bool
    /// Fragments from `result` directives, merged in order.
    var result: [String: JSONValue] = [:]
    /// The reason from the last `failure` directive.
    var failureReason: String?
    /// Whether the plugin printed a `restart` directive.
    var restartRequested = false
    /// The start of standard output, when the caller asked for it (`captureOutput`).
    var output = ""
}

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

    /// Runs one operation.
    /// - Parameters:
    ///   - environment: the `SWITCHYARD_*` context variables.
    ///   - workingDirectory: the operation's state directory; also receives the log.
    ///   - onDirective: called, in order, with each directive that acts on the platform
    ///     (progress, inventory, event, alarm, clear-alarm, measurement); result, failure and restart
    ///     are collected into the ``ExecResult``.
    func run(_ spec: ExecSpec, operation: JSONValue, environment: [String: String], timeout: Duration,
             workingDirectory: String, logFile: String, user: RunAs? = nil, templated: Bool = true,
             stdin: [UInt8]? = nil, captureOutput: Int = 0, logging: CommandLogging = .full,
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

        let log = LogCapture(file: logFile, limit: Self.logLimit, tailBytes: Self.tailBytes, captureLimit: captureOutput,
                             summary: logging == .outputSummary, onDirective: onDirective, onInvalidDirective: onInvalidDirective)
        let input = stdin ?? operation.encoded()
        let processGroup = ProcessGroupBox()

        let ending: ExecResult.Ending = await withTaskGroup(of: ExecResult.Ending?.self) { group in
            group.addTask {
                do {
                    let result = try await Subprocess.run(configuration, input: .inputWriter, output: .sequence, error: .sequence) { execution in
                        let pid = execution.processIdentifier.value
                        processGroup.set(pid)
                        Self.recordGroup(pid, in: workingDirectory)
                        let writer = execution.standardInputWriter
                        await withTaskGroup(of: Void.self) { streams in
                            streams.addTask {
                                // A plugin may exit without reading its input: that is not an error.
                                _ = try? await writer.write(input)
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
            group.addTask {
                // Not Task.sleep: a cancelled one stays scheduled, with its task, until its deadline.
                await Deadlines.shared.sleep(for: timeout) ? .timedOut(timeout) : nil
            }
            var ending: ExecResult.Ending?
            while let next = await group.next() {
                guard let value = next else { continue }
                ending = value
                if case .timedOut = value, let pgid = processGroup.get() {
                    // Stop the whole group ourselves: grandchildren may hold the output pipes open
                    // after the plugin itself has gone.
                    await Self.stopGroup(pgid, grace: spec.gracePeriod)
                }
                group.cancelAll()
                break
            }
            await group.waitForAll()
            return ending ?? .couldNotStart("cancelled")
        }
        unlink(workingDirectory + "/" + Self.groupFile)
        log.finish()
        let collected = log.collected
        return ExecResult(ending: ending, stderrTail: log.stderrTail, logTruncated: log.truncated,
                          result: collected.result, failureReason: collected.failureReason,
                          restartRequested: collected.restart, output: log.capturedOutput)
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
        try? FileSystem.writeAtomically(directory + "/" + groupFile, Array("\(pgid) \(started)\n".utf8), mode: 0o600, durable: false)
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
        guard let text = try? FileSystem.readText(file) else { return false }
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
        while ContinuousClock.now < deadline, kill(-pgid, 0) == 0 {
            try? await Task.sleep(for: .milliseconds(20))
        }
        kill(-pgid, SIGKILL)
    }
}

/// The plugin's process id, which is also its process group id (it runs in its own session).
final class ProcessGroupBox: Sendable {
    private let value = Mutex<pid_t?>(nil)
    func set(_ pid: pid_t) { value.withLock { $0 = pid } }
    func get() -> pid_t? { value.withLock { $0 } }
}

/// Who an executable handler runs as (`user:` in its declaration, when the agent runs as root).
struct RunAs: Sendable, Equatable {
    let name: String
    let uid: uid_t
    let gid: gid_t

    /// Looks a user up in the system's user database.
    static func lookup(_ name: String) -> RunAs? {
        guard let entry = getpwnam(name) else { return nil }
        return RunAs(name: name, uid: entry.pointee.pw_uid, gid: entry.pointee.pw_gid)
    }
}

/// Collects a plugin's output: appends it to the log file up to a limit (then a note), keeps the
/// tail of standard error, and reads directives from standard output line by line. Memory stays
/// bounded whatever the plugin prints.
final class LogCapture: Sendable {
    struct Collected {
        var result: [String: JSONValue] = [:]
        var failureReason: String?
        var restart = false
        var forwarded = 0
    }
    private struct State {
        var fd: Int32
        var written = 0
        var truncated = false
        var tail: [UInt8] = []
        var lines: LineSplitter
        var collected = Collected()
        var captured: [UInt8] = []
        var outputLines = 0
    }
    /// The longest stdout line read as a possible directive.
    static let lineLimit = 256 * 1024
    /// Platform-facing directives forwarded per run; more are logged and ignored.
    static let directiveLimit = 1000

    private let state: Mutex<State>
    private let limit: Int
    private let tailBytes: Int
    private let captureLimit: Int
    /// Standard output is counted, not copied (``CommandLogging/outputSummary``).
    private let summary: Bool
    private let onDirective: @Sendable (Directive) -> Void
    private let onInvalidDirective: @Sendable (_ why: String, _ line: String) -> Void

    init(file: String, limit: Int, tailBytes: Int, captureLimit: Int = 0, summary: Bool = false,
         onDirective: @escaping @Sendable (Directive) -> Void = { _ in },
         onInvalidDirective: @escaping @Sendable (_ why: String, _ line: String) -> Void = { _, _ in }) {
        self.limit = limit
        self.tailBytes = tailBytes
        self.captureLimit = captureLimit
        self.summary = summary
        self.onDirective = onDirective
        self.onInvalidDirective = onInvalidDirective
        self.state = Mutex(State(fd: open(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600),
                                 lines: LineSplitter(limit: Self.lineLimit)))
    }

    deinit {
        state.withLock { if $0.fd >= 0 { close($0.fd) } }
    }

    func take(_ chunk: SubprocessOutputSequence.Buffer, stderr: Bool) {
        chunk.withUnsafeBytes { bytes in
            state.withLock { s in
                if stderr {
                    s.tail += bytes.suffix(tailBytes)
                    if s.tail.count > tailBytes { s.tail.removeFirst(s.tail.count - tailBytes) }
                    append(bytes, to: &s)
                    return
                }
                if s.captured.count < captureLimit {
                    s.captured += bytes.prefix(captureLimit - s.captured.count)
                }
                // Plain output goes to the log as it comes; lines that may be directives wait until whole
                // and are logged only when they are not directives.
                var lines = s.lines
                var complete: [([UInt8], Bool)] = []
                lines.feed(bytes, plain: { part in
                    if summary {
                        s.outputLines += part.reduce(0) { $0 + ($1 == UInt8(ascii: "\n") ? 1 : 0) }
                    } else {
                        append(part, to: &s)
                    }
                }, line: { line, whole in complete.append((line, whole)) })
                s.lines = lines
                for (line, whole) in complete {
                    if whole { read(line, into: &s) } else { logLine(line, to: &s) }
                }
            }
        }
    }

    /// A stdout line that is no directive, with its newline.
    private func logLine(_ line: [UInt8], to s: inout State) {
        if summary {
            s.outputLines += 1
            return
        }
        (line + [UInt8(ascii: "\n")]).withUnsafeBytes { append($0, to: &s) }
    }

    /// Reads a last stdout line that had no newline.
    func finish() {
        state.withLock { s in
            var lines = s.lines
            var last: [UInt8]?
            lines.finish { line, whole in if whole { last = line } }
            s.lines = lines
            if let last { read(last, into: &s) }
            if summary { note("[switchyard: \(s.outputLines) lines of standard output, read by the handler, not copied here]", to: &s) }
        }
    }

    private func read(_ line: [UInt8], into s: inout State) {
        switch Directive.parse(line) {
        case .log:
            logLine(line, to: &s)
        case .invalid(let why):
            let excerpt = String(decoding: line.prefix(200), as: UTF8.self)
            note("[switchyard: directive ignored: \(why): \(excerpt)]", to: &s)
            onInvalidDirective(why, excerpt)
        case .directive(.result(let fragments)):
            s.collected.result.merge(fragments) { _, new in new }
        case .directive(.failure(let reason)):
            s.collected.failureReason = reason
        case .directive(.restart):
            s.collected.restart = true
        case .directive(let directive):
            s.collected.forwarded += 1
            if s.collected.forwarded <= Self.directiveLimit {
                onDirective(directive)
            } else if s.collected.forwarded == Self.directiveLimit + 1 {
                note("[switchyard: more than \(Self.directiveLimit) directives; the rest are ignored]", to: &s)
            }
        }
    }

    private func note(_ text: String, to s: inout State) {
        let bytes = Array(("\n" + text + "\n").utf8)
        bytes.withUnsafeBytes { _ = write(s.fd, $0.baseAddress, $0.count) }
    }

    private func append(_ bytes: UnsafeRawBufferPointer, to s: inout State) {
        guard s.fd >= 0, !s.truncated else { return }
        let room = limit - s.written
        let part = UnsafeRawBufferPointer(rebasing: bytes.prefix(room))
        _ = write(s.fd, part.baseAddress, part.count)
        s.written += part.count
        if bytes.count > room {
            s.truncated = true
            note("[switchyard: output truncated at \(limit) bytes]", to: &s)
        }
    }

    var truncated: Bool { state.withLock { $0.truncated } }
    var capturedOutput: String { String(decoding: state.withLock { $0.captured }, as: UTF8.self) }
    var collected: Collected { state.withLock { $0.collected } }

    /// The last non-empty lines of standard error, as text.
    var stderrTail: String {
        let bytes = state.withLock { $0.tail }
        let text = String(decoding: bytes, as: UTF8.self)
        return text.trimmingCharacters(in: " \t\r\n")
    }
}
