import Cumulocity
public import HandlerKit

/// One entry of `handlers.d`: which fragments trigger it, what is advertised, and how it runs.
public struct HandlerDeclaration: Sendable {
    /// How the handler runs.
    public enum Kind: Sendable {
        /// A compiled module, by the name it is registered under.
        case swift(name: String, handler: any OperationHandler)
        /// An external executable.
        case exec(ExecSpec)
    }

    /// The operation name advertised in `c8y_SupportedOperations`.
    public let operation: String
    /// The fragments that select this handler (by default just `operation`).
    public let fragments: [String]
    /// What it adds to `c8y_SupportedOperations`: `operation`, then those of `advertise`.
    public let advertised: [String]
    /// Fragments of which the same directory must handle at least one for this declaration to be
    /// active (`requires`; empty: always active). A device profile needs a firmware, software or
    /// configuration handler to be of any use.
    public let requires: [String]
    public let description: String?
    public let kind: Kind
    /// How many operations of this handler may run at once.
    public let concurrency: Int
    /// How long one run may take before it is stopped and FAILED.
    public let timeout: Duration
    /// Whether an operation interrupted by a restart is handed back to the handler (phase `resume`).
    public let resumable: Bool
    /// An operation body the demo creates to show the handler (optional).
    public let example: JSONValue?
    /// The `options` mapping of a swift handler (`.null` otherwise).
    public let options: JSONValue
    public let file: String
    public let line: Int

    /// `file:line`, for messages.
    public var location: String { "\(file):\(line)" }

    /// The declaration as JSON, which is also valid YAML for a `handlers.d` file (exec programs absolute).
    public var json: JSONValue {
        var object: [String: JSONValue] = [
            "operation": .string(operation), "fragments": .array(fragments.map(JSONValue.string)),
            "concurrency": .int(Int64(concurrency)), "resumable": .bool(resumable),
            "timeout": .string(Self.milliseconds(timeout)),
        ]
        if advertised.count > 1 { object["advertise"] = .array(advertised.dropFirst().map(JSONValue.string)) }
        if !requires.isEmpty { object["requires"] = .array(requires.map(JSONValue.string)) }
        if let description { object["description"] = .string(description) }
        if let example { object["example"] = example }
        switch kind {
        case .swift(let name, _):
            object["swift"] = .string(name)
            if options != .null { object["options"] = options }
        case .exec(let spec):
            var exec: [String: JSONValue] = ["gracePeriod": .string(Self.milliseconds(spec.gracePeriod))]
            if !spec.environment.isEmpty { exec["env"] = .object(spec.environment.mapValues(JSONValue.string)) }
            if let user = spec.user { exec["user"] = .string(user.name) }
            if let options = spec.handlerOptions {
                exec["executable"] = .string(spec.command[0])
                object["swift"] = .object(exec)
                if options != .null { object["options"] = options }
            } else {
                exec["command"] = .array(spec.command.map(JSONValue.string))
                object["exec"] = .object(exec)
            }
        }
        return .object(object)
    }

    static func milliseconds(_ duration: Duration) -> String { "\(duration.milliseconds)ms" }

    /// A short name of the handler for logs and tables: `swift:Message` or `exec:/path/to/script`.
    public var handlerName: String {
        switch kind {
        case .swift(let name, _): return "swift:\(name)"
        case .exec(let spec): return (spec.handlerOptions == nil ? "exec:" : "swift:") + (spec.command.first ?? "?")
        }
    }
}

/// How to start an executable handler.
public struct ExecSpec: Sendable {
    /// argv; element 0 is an absolute path. Elements may hold `${path.in.operation}` templates,
    /// each substituted inside its own element (never split, never through a shell).
    public let command: [String]
    /// Static extra environment variables.
    public let environment: [String: String]
    /// Between SIGTERM and SIGKILL when the timeout is reached.
    public let gracePeriod: Duration
    /// The user to run as when the agent runs as root.
    let user: RunAs?
    /// For a compiled handler built as its own executable (`swift: {executable: …}`, HandlerKitRunner):
    /// the declaration's `options`, passed as JSON in `SWITCHYARD_HANDLER_OPTIONS`; such a handler is
    /// also run once after each start with phase `report`. `nil` for an ordinary executable plugin.
    var handlerOptions: JSONValue? = nil

    /// `SWITCHYARD_HANDLER_OPTIONS` for a compiled handler built as its own executable; empty otherwise.
    var handlerEnvironment: [String: String] {
        handlerOptions.map { ["SWITCHYARD_HANDLER_OPTIONS": String(decoding: $0.encoded(), as: UTF8.self)] } ?? [:]
    }
}
