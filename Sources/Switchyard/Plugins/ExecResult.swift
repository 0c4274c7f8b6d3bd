import HandlerKit
import JSONSupport

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
    /// The plugin's process group (its pid), once started: what may outlive it is found by it.
    var processGroup: Int32?
}

extension ExecResult {
    /// The outcome of an executable's run: exit 0 → SUCCESSFUL, otherwise FAILED with the plugin's
    /// own reason (a `failure` directive) or why it ended and the tail of its standard error.
    func outcome(program: String) -> Outcome {
        if ending == .exited(0) { return .successful(result: result) }
        if let failureReason { return .failed(reason: Self.lastLines(failureReason), result: result) }
        return .failed(ending.reason(program: program, tail: Self.lastLines(stderrTail)))
    }

    /// The end of a text, at most `limit` characters of whole lines (a line longer than that: its end).
    static func lastLines(_ text: String, limit: Int = 1000) -> String {
        guard text.count > limit else { return text }
        let tail = text.suffix(limit)
        guard let newline = tail.firstIndex(of: "\n"), tail.index(after: newline) < tail.endIndex else { return "…" + tail }
        return "…" + tail[tail.index(after: newline)...]
    }
}

extension ExecResult.Ending {
    /// Why a program ended the way it did, with the end of its standard error: the one wording of
    /// failure reasons, for plugins and for the commands handlers run.
    func reason(program: String, tail: String) -> String {
        let more = tail.isEmpty ? "" : ": \(tail)"
        switch self {
        case .exited(let code): return "exited with code \(code)" + (tail.isEmpty ? " (no error output)" : more)
        case .signalled(let signal): return "killed by signal \(signal)" + more
        case .timedOut(let limit): return "timed out after \(limit) and was stopped (SIGTERM, then SIGKILL)" + more
        case .couldNotStart(let why): return "could not start \(program): \(why)"
        }
    }
}
