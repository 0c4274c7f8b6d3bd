public import HandlerKit
import Cumulocity

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Turns a compiled handler into an executable plugin (plugin protocol v1), so a handler written
/// against HandlerKit is built in the device maker's own package and deployed without rebuilding
/// the agent:
///
/// ```swift
/// @main struct Main {
///     static func main() async { await HandlerRunner.run(Blink.self) }
/// }
/// ```
///
/// declared as `swift: {executable: /usr/lib/acme/blink}`. The agent starts it like any executable
/// plugin, with the declaration's `options` as JSON in `SWITCHYARD_HANDLER_OPTIONS`, and
/// `SWITCHYARD_PHASE` `execute`, `resume` or `report` (once after each start). The runner reads the
/// operation, creates the handler, calls ``OperationHandler/execute(_:context:)``,
/// ``OperationHandler/resume(_:context:)`` or ``OperationHandler/report(context:)``, and maps:
///
/// | in the handler | out of process |
/// | --- | --- |
/// | `log` | a line on standard error (the operation's log) |
/// | inventory, events, measurements, alarms | directives, applied by the agent in order |
/// | `saveState` / `loadState` | `state.<key>` files in `SWITCHYARD_STATE_DIR`, as the agent keeps them |
/// | `download`, `sendEvent(…attaching:)`, `storeFile` | requests through the agent's plugin proxy (tenant URLs), or direct (other hosts) |
/// | `runCommand`, `blocking`, `sha256` | done in this process |
/// | ``Outcome`` | `result` / `failure` / `restart` directives and the exit status (0 or 1) |
///
/// Options the handler refuses, or an operation that cannot be read, exit 2 with the reason.
/// `runStep` needs the agent's registry and fails saying so.
public enum HandlerRunner {
    public static func run<Handler: OperationHandler>(_ type: Handler.Type) async {
        let environment = ProcessEnvironment.current
        let code = await run(type, environment: environment, stdin: { readStandardInput() })
        exit(code)
    }

    /// One run with the given environment; the exit status. (Separate from ``run(_:)`` for tests.)
    static func run<Handler: OperationHandler>(_ type: Handler.Type, environment: [String: String],
                                               stdin: () -> [UInt8]) async -> Int32 {
        let output = DirectiveWriter()
        let options: JSONValue
        do {
            options = try environment["SWITCHYARD_HANDLER_OPTIONS"].map { try JSONValue.parse(Array($0.utf8)) } ?? .null
        } catch {
            return output.fail("SWITCHYARD_HANDLER_OPTIONS is not JSON: \(error)", code: 2)
        }
        let handler: Handler
        do {
            handler = try Handler(options: options)
        } catch {
            return output.fail("options of \(Handler.self): \(error.detail)", code: 2)
        }
        let phase = environment["SWITCHYARD_PHASE"] ?? "execute"
        let context = ExecutableContext(environment: environment, output: output,
                                        phase: phase == "resume" ? .resume : .execute)
        if phase == "report" {
            do {
                try await handler.report(context: context)
                return 0
            } catch {
                return output.fail("\(error)", code: 1)
            }
        }
        guard phase == "execute" || phase == "resume" else { return output.fail("unknown SWITCHYARD_PHASE \(phase)", code: 2) }
        let json: JSONValue
        do {
            let bytes = environment["SWITCHYARD_OPERATION_FILE"].flatMap { readFileBytes($0) } ?? stdin()
            json = try JSONValue.parse(bytes)
        } catch {
            return output.fail("the operation is not JSON: \(error)", code: 2)
        }
        let fragment = environment["SWITCHYARD_FRAGMENT"] ?? ""
        let operation = Operation(id: environment["SWITCHYARD_OPERATION_ID"] ?? json["id"]?.idValue ?? "",
                                  deviceId: environment["SWITCHYARD_DEVICE_ID"] ?? json["deviceId"]?.idValue ?? "",
                                  externalId: environment["SWITCHYARD_EXTERNAL_ID"].flatMap { $0.isEmpty ? nil : $0 },
                                  fragment: fragment, json: json)
        let outcome: Outcome
        do {
            outcome = phase == "resume" ? try await handler.resume(operation, context: context)
                : try await handler.execute(operation, context: context)
        } catch {
            return output.fail("\(error)", code: 1)
        }
        switch outcome {
        case .successful(let result):
            if !result.isEmpty { output.directive("result", ["fragments": .object(result)]) }
            return 0
        case .failed(let reason, let result):
            if !result.isEmpty { output.directive("result", ["fragments": .object(result)]) }
            return output.fail(reason, code: 1)
        case .restartRequired:
            output.directive("restart", [:])
            return 0
        }
    }
}

/// Writes directives to standard output, one line each, flushed at once (the agent applies them
/// while the handler runs).
final class DirectiveWriter: Sendable {
    func directive(_ name: String, _ members: [String: JSONValue]) {
        var object = members
        object["switchyard"] = .string(name)
        writeLine(JSONValue.object(object).encoded(), to: STDOUT_FILENO)
    }

    func log(_ message: String) {
        writeLine(Array(message.utf8), to: STDERR_FILENO)
    }

    /// A `failure` directive, the reason on standard error too; returns `code`.
    func fail(_ reason: String, code: Int32) -> Int32 {
        directive("failure", ["reason": .string(reason)])
        log(reason)
        return code
    }

    private func writeLine(_ bytes: [UInt8], to fd: Int32) {
        let line = bytes + [UInt8(ascii: "\n")]
        var offset = 0
        while offset < line.count {
            let written = line[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if written < 0 && errno == EINTR { continue }
            guard written > 0 else { return }
            offset += written
        }
    }
}

enum ProcessEnvironment {
    static var current: [String: String] {
        var result: [String: String] = [:]
        var pointer = environ
        while let entry = pointer.pointee {
            let text = String(cString: entry)
            if let equals = text.firstIndex(of: "=") {
                result[String(text[..<equals])] = String(text[text.index(after: equals)...])
            }
            pointer += 1
        }
        return result
    }
}

func readStandardInput() -> [UInt8] {
    readAll(STDIN_FILENO)
}

func readFileBytes(_ path: String) -> [UInt8]? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    return readAll(fd)
}

func readAll(_ fd: Int32) -> [UInt8] {
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if count < 0 && errno == EINTR { continue }
        if count <= 0 { return bytes }
        bytes += chunk[0..<count]
    }
}
