public import HandlerKit
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A ``HandlerContext`` that records what a compiled handler does, so the handler can be unit-tested
/// without an agent, a sandbox or a network: inventory updates, events, measurements, alarms, log
/// lines, saved state and commands are kept in ``calls``; downloads are served from local files; the
/// commands a handler runs are answered by a ``CommandRunner`` the test provides.
///
/// ```swift
/// let context = RecordingContext(stateDirectory: directory)
/// let outcome = try await MessageHandler(options: .null).execute(operation, context: context)
/// #expect(context.calls == [.log("message: hello")])
/// ```
public final class RecordingContext: HandlerContext, Sendable {
    /// One thing the handler did, in order.
    public enum Call: Equatable, Sendable {
        case log(String)
        case inventory([String: JSONValue])
        case event(type: String, text: String, fragments: [String: JSONValue])
        /// An event with a file attached: the file's name, type and content as they were when sent.
        case eventWithFile(type: String, text: String, fileName: String, contentType: String, contents: [UInt8])
        case measurement(type: String, fragments: [String: JSONValue])
        case alarm(type: String, severity: AlarmSeverity, text: String)
        case clearAlarm(type: String)
        case saveState(key: String, value: String)
        case command(argv: [String], input: [UInt8]?, environment: [String: String])
        case download(url: String, path: String)
        case step(name: String, fragment: String, payload: JSONValue, phase: Phase)
        /// A file stored in the file repository with the managed object describing it.
        case storedFile(fileName: String, contentType: String, fragments: [String: JSONValue], contents: [UInt8])
    }

    /// Answers a step the handler runs (``HandlerContext/runStep(_:fragment:payload:phase:)``).
    public typealias StepRunner = @Sendable (_ step: String, _ fragment: String, _ payload: JSONValue, _ phase: Phase) async -> Outcome

    /// Answers a command the handler runs (argv, standard input, extra environment).
    public typealias CommandRunner = @Sendable (_ argv: [String], _ input: [UInt8]?, _ environment: [String: String]) async -> CommandResult

    public let phase: Phase
    public let stateDirectory: String
    private let state = Mutex<(calls: [Call], saved: [String: String])>(([], [:]))
    private let runner: CommandRunner
    private let stepRunner: StepRunner
    private let downloads: [String: String]

    /// - Parameters:
    ///   - stateDirectory: the operation's directory, which the handler may write in (the test makes it).
    ///   - downloads: what each URL serves, as the path of a local file.
    ///   - savedState: state a previous run saved (for ``OperationHandler/resume(_:context:)``).
    ///   - commands: answers the handler's commands; without one, every command fails saying so.
    ///   - steps: answers the steps the handler runs; without one, every step fails saying so.
    public init(phase: Phase = .execute, stateDirectory: String, downloads: [String: String] = [:],
                savedState: [String: String] = [:], commands: CommandRunner? = nil, steps: StepRunner? = nil) {
        self.stepRunner = steps ?? { step, fragment, _, _ in .failed("RecordingContext has no step runner for \(step) (\(fragment))") }
        self.phase = phase
        self.stateDirectory = stateDirectory
        self.downloads = downloads
        self.runner = commands ?? { argv, _, _ in
            CommandResult(exitCode: nil, detail: "RecordingContext has no command runner for \(argv)")
        }
        state.withLock { $0.saved = savedState }
    }

    /// Everything the handler did so far, in order.
    public var calls: [Call] { state.withLock { $0.calls } }

    /// The inventory fragments as they would be on the device after the recorded updates.
    public var inventory: [String: JSONValue] {
        var merged: [String: JSONValue] = [:]
        for case .inventory(let fragments) in calls { merged.merge(fragments) { $1 } }
        return merged
    }

    private func record(_ call: Call) { state.withLock { $0.calls.append(call) } }

    public func log(_ message: String) async { record(.log(message)) }

    public func updateInventory(_ fragments: [String: JSONValue]) async throws {
        var fragments = fragments
        fragments["name"] = nil  // as the agent does: never from an agent
        record(.inventory(fragments))
    }

    public func sendEvent(type: String, text: String, fragments: [String: JSONValue]) async throws {
        record(.event(type: type, text: text, fragments: fragments))
    }

    /// Records the event with the file's content; the URL returned is
    /// `https://recording.invalid/event/events/<n>/binaries`, n counting from 1.
    public func sendEvent(type: String, text: String, fragments: [String: JSONValue], attaching path: String,
                          fileName: String, contentType: String) async throws -> String {
        let contents = try readFile(path)
        let number = state.withLock { state in
            state.calls.append(.eventWithFile(type: type, text: text, fileName: fileName, contentType: contentType, contents: contents))
            return state.calls.count { if case .eventWithFile = $0 { true } else { false } }
        }
        return "https://recording.invalid/event/events/\(number)/binaries"
    }

    /// Records the file; the URL returned is `https://recording.invalid/inventory/binaries/<n>`, and
    /// the managed object's id `recorded-<n>`, n counting from 1.
    public func storeFile(_ path: String, fileName: String, contentType: String,
                          describedBy fragments: [String: JSONValue]) async throws -> (url: String, managedObject: String) {
        let contents = try readFile(path)
        let number = state.withLock { state in
            state.calls.append(.storedFile(fileName: fileName, contentType: contentType, fragments: fragments, contents: contents))
            return state.calls.count { if case .storedFile = $0 { true } else { false } }
        }
        return ("https://recording.invalid/inventory/binaries/\(number)", "recorded-\(number)")
    }

    public func runStep(_ step: String, fragment: String, payload: JSONValue, phase: Phase) async -> Outcome {
        record(.step(name: step, fragment: fragment, payload: payload, phase: phase))
        return await stepRunner(step, fragment, payload, phase)
    }

    public func blocking<T: Sendable, Failure: Error>(_ work: @escaping @Sendable () throws(Failure) -> T) async throws(Failure) -> T {
        try work()
    }

    public func sendMeasurement(type: String, fragments: [String: JSONValue]) async throws {
        record(.measurement(type: type, fragments: fragments))
    }

    public func raiseAlarm(type: String, severity: AlarmSeverity, text: String) async throws {
        record(.alarm(type: type, severity: severity, text: text))
    }

    public func clearAlarm(type: String) async throws { record(.clearAlarm(type: type)) }

    public func saveState(_ value: String, forKey key: String) async throws {
        state.withLock {
            $0.saved[key] = value
            $0.calls.append(.saveState(key: key, value: value))
        }
    }

    public func loadState(forKey key: String) async -> String? { state.withLock { $0.saved[key] } }

    public func runCommand(_ argv: [String], input: [UInt8]?, environment: [String: String], timeout: Duration,
                           logging: CommandLogging) async -> CommandResult {
        record(.command(argv: argv, input: input, environment: environment))
        let result = await runner(argv, input, environment)
        guard case .outputToFile(let path, let maxBytes) = logging else { return result }
        // As the agent does: the output goes to the file (up to the limit), not into the result.
        do {
            try writeFile(path, Array(Array(result.output.utf8).prefix(Int(clamping: maxBytes))))
        } catch {
            return CommandResult(exitCode: nil, detail: error.description)
        }
        return CommandResult(exitCode: result.exitCode, detail: result.detail)
    }

    /// Copies the file registered for `url` to `path`; an unknown URL fails as a 404 would.
    public func download(_ url: String, to path: String, maxBytes: Int64) async throws -> Int64 {
        record(.download(url: url, path: path))
        guard let source = downloads[url] else { throw RecordingContextError("no download registered for \(url) (404)") }
        let bytes = try readFile(source)
        guard Int64(bytes.count) <= maxBytes else {
            throw RecordingContextError("\(url) is \(bytes.count) bytes, more than the limit of \(maxBytes)")
        }
        try writeFile(path, bytes)
        return Int64(bytes.count)
    }

    public func sha256(ofFile path: String) async throws -> String {
        var hash = SHA256()
        hash.update(try readFile(path))
        return hash.hexDigest()
    }
}

/// What a ``RecordingContext`` could not do, with why.
public struct RecordingContextError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ description: String) { self.description = description }
}

func readFile(_ path: String) throws(RecordingContextError) -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw RecordingContextError("cannot open \(path): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if count < 0 && errno == EINTR { continue }
        guard count >= 0 else { throw RecordingContextError("cannot read \(path): \(String(cString: strerror(errno)))") }
        if count == 0 { return bytes }
        bytes += chunk[0..<count]
    }
}

func writeFile(_ path: String, _ bytes: [UInt8]) throws(RecordingContextError) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    guard fd >= 0 else { throw RecordingContextError("cannot create \(path): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    guard written == bytes.count else { throw RecordingContextError("cannot write \(path): \(String(cString: strerror(errno)))") }
}
