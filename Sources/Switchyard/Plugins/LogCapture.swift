import Cumulocity
import HandlerKit
import Subprocess
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Collects a plugin's output: appends it to the log file up to a limit (then a note; the writes go
/// through ``LogWriter``, off the cooperative pool), keeps the
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
        /// ``CommandLogging/outputToFile(path:maxBytes:)``: where standard output goes, how much went.
        var outputFD: Int32 = -1
        var outputWritten: Int64 = 0
        var outputCut = false
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
    /// Standard output goes to a file, not the log (``CommandLogging/outputToFile(path:maxBytes:)``).
    private let output: (path: String, limit: Int64)?
    private let onDirective: @Sendable (Directive) -> Void
    private let onInvalidDirective: @Sendable (_ why: String, _ line: String) -> Void

    init(file: String, limit: Int, tailBytes: Int, captureLimit: Int = 0, logging: CommandLogging = .full,
         onDirective: @escaping @Sendable (Directive) -> Void = { _ in },
         onInvalidDirective: @escaping @Sendable (_ why: String, _ line: String) -> Void = { _, _ in }) {
        self.limit = limit
        self.tailBytes = tailBytes
        self.captureLimit = captureLimit
        self.summary = logging == .outputSummary
        self.onDirective = onDirective
        self.onInvalidDirective = onInvalidDirective
        var state = State(fd: open(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600), lines: LineSplitter(limit: Self.lineLimit))
        if case .outputToFile(let path, let maxBytes) = logging {
            output = (path, maxBytes)
            state.outputFD = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        } else {
            output = nil
        }
        self.state = Mutex(state)
    }

    deinit {
        let (fd, outputFD) = state.withLock { ($0.fd, $0.outputFD) }
        LogWriter.closeFile(fd)
        LogWriter.closeFile(outputFD)
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
                if let output {
                    // Data for the handler, written as it comes (on the writer's thread), never parsed.
                    let room = max(0, output.limit - s.outputWritten)
                    if Int64(bytes.count) > room { s.outputCut = true }
                    let part = bytes.prefix(Int(min(Int64(bytes.count), room)))
                    LogWriter.append(Array(part), to: s.outputFD)
                    s.outputWritten += Int64(part.count)
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
            if let output {
                if s.outputFD < 0 {
                    note("[switchyard: cannot write standard output to \(output.path): nothing kept]", to: &s)
                } else {
                    let cut = s.outputCut ? "; the rest was dropped at the limit of \(output.limit) bytes" : ""
                    note("[switchyard: \(s.outputWritten) bytes of standard output written to \(output.path)\(cut)]", to: &s)
                }
            }
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
        LogWriter.append(Array(("\n" + text + "\n").utf8), to: s.fd)
    }

    private func append(_ bytes: UnsafeRawBufferPointer, to s: inout State) {
        guard s.fd >= 0, !s.truncated else { return }
        let room = limit - s.written
        let part = UnsafeRawBufferPointer(rebasing: bytes.prefix(room))
        LogWriter.append(Array(part), to: s.fd)
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
