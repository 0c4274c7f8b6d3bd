import HandlerKit
import Subprocess
import Synchronization
import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A handler's commands when it runs as an executable: argv (no shell), its own process group,
/// a time limit that stops the whole group (SIGTERM, 5 s, SIGKILL), the first MiB of standard output
/// kept for ``CommandResult/output``, and what ``CommandLogging`` asks for on standard error (the
/// operation's log), between a header with the argv and a footer with how it ended.
enum CommandRunner {
    static let outputLimit = 1 << 20
    static let tailBytes = 4096

    static func run(_ argv: [String], input: [UInt8]?, environment: [String: String], timeout: Duration, directory: String,
                    logging: CommandLogging, log: DirectiveWriter) async -> CommandResult {
        guard let program = argv.first, program.hasPrefix("/") else {
            return CommandResult(exitCode: nil, detail: "the command must start with an absolute program path, found \(argv)")
        }
        log.log("[$ \(argv.joined(separator: " "))]")
        var env: [Subprocess.Environment.Key: String] = [:]
        for (key, value) in environment { env[Subprocess.Environment.Key(stringLiteral: key)] = value }
        var options = PlatformOptions()
        options.createSession = true
        options.teardownSequence = [.send(signal: .terminate, toProcessGroup: true, allowedDurationToNextStep: .seconds(5))]
        let configuration = Configuration(executable: .path(FilePath(program)), arguments: Arguments(Array(argv.dropFirst())),
                                          environment: .inherit.updating(env), workingDirectory: FilePath(directory),
                                          platformOptions: options)
        let collected = Collected(logging: logging, log: log)
        let ending: Result<TerminationStatus, any Error>? = await withTaskGroup(of: Result<TerminationStatus, any Error>?.self) { group in
            group.addTask {
                do {
                    let result = try await Subprocess.run(configuration, input: .inputWriter, output: .sequence, error: .sequence) { execution in
                        let writer = execution.standardInputWriter
                        await withTaskGroup(of: Void.self) { streams in
                            streams.addTask {
                                if let input, !input.isEmpty { _ = try? await writer.write(input) }
                                try? await writer.finish()
                            }
                            streams.addTask {
                                do { for try await chunk in execution.standardOutput { chunk.withUnsafeBytes { collected.take($0, stderr: false) } } } catch {}
                            }
                            streams.addTask {
                                do { for try await chunk in execution.standardError { chunk.withUnsafeBytes { collected.take($0, stderr: true) } } } catch {}
                            }
                        }
                    }
                    return .success(result.terminationStatus)
                } catch {
                    return .failure(error)
                }
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
        collected.finish()
        let tail = collected.stderrTail
        let result: CommandResult
        switch ending {
        case nil:
            result = CommandResult(exitCode: nil, detail: "timed out after \(timeout) and was stopped (SIGTERM, then SIGKILL)")
        case .success(.exited(let code))?:
            result = CommandResult(exitCode: code, detail: tail, output: collected.output)
        case .success(.signaled(let signal))?:
            result = CommandResult(exitCode: nil, detail: "killed by signal \(signal)" + (tail.isEmpty ? "" : ": \(tail)"))
        case .failure(let error)?:
            result = CommandResult(exitCode: nil, detail: "could not start \(program): \(error)")
        }
        log.log("[\(result.exitCode.map { "exit status \($0)" } ?? result.detail)]")
        return result
    }

    /// The output of one run, kept within bounds.
    final class Collected: Sendable {
        private struct State {
            var output: [UInt8] = []
            var tail: [UInt8] = []
            var outputLines = 0
            var fileFD: Int32 = -1
            var fileWritten: Int64 = 0
        }
        private let state: Mutex<State>
        private let logging: CommandLogging
        private let log: DirectiveWriter

        init(logging: CommandLogging, log: DirectiveWriter) {
            self.logging = logging
            self.log = log
            var state = State()
            if case .outputToFile(let path, _) = logging { state.fileFD = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600) }
            self.state = Mutex(state)
        }

        func take(_ bytes: UnsafeRawBufferPointer, stderr: Bool) {
            state.withLock { s in
                if stderr {
                    s.tail += bytes.suffix(CommandRunner.tailBytes)
                    if s.tail.count > CommandRunner.tailBytes { s.tail.removeFirst(s.tail.count - CommandRunner.tailBytes) }
                    _ = write(STDERR_FILENO, bytes.baseAddress, bytes.count)
                    return
                }
                switch logging {
                case .outputToFile(_, let maxBytes):
                    let part = Int(min(Int64(bytes.count), max(0, maxBytes - s.fileWritten)))
                    if part > 0, s.fileFD >= 0 { _ = write(s.fileFD, bytes.baseAddress, part) }
                    s.fileWritten += Int64(part)
                    return
                case .outputSummary:
                    s.outputLines += bytes.reduce(0) { $0 + ($1 == UInt8(ascii: "\n") ? 1 : 0) }
                case .full:
                    _ = write(STDERR_FILENO, bytes.baseAddress, bytes.count)
                }
                if s.output.count < CommandRunner.outputLimit { s.output += bytes.prefix(CommandRunner.outputLimit - s.output.count) }
            }
        }

        func finish() {
            state.withLock { s in
                if s.fileFD >= 0 { fsync(s.fileFD); close(s.fileFD); s.fileFD = -1 }
                if case .outputSummary = logging { log.log("[\(s.outputLines) lines of standard output, read by the handler]") }
            }
        }

        var output: String { String(decoding: state.withLock { $0.output }, as: UTF8.self) }
        var stderrTail: String {
            let text = String(decoding: state.withLock { $0.tail }, as: UTF8.self)
            return String(text.split(whereSeparator: { $0 == "\n" || $0 == "\r" }).last ?? "")
        }
    }
}
