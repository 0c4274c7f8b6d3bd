import HandlerKit

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A structured instruction an executable plugin prints on standard output (plugin protocol v1).
///
/// Framing: one JSON object per line with a string member `"switchyard"` naming the directive, e.g.
/// `{"switchyard":"result","fragments":{"c8y_Command":{"result":"ok"}}}`. Any other line is log.
enum Directive: Sendable, Equatable {
    case progress(String)
    case result([String: JSONValue])
    case inventory([String: JSONValue])
    case event(type: String, text: String, fragments: [String: JSONValue])
    case alarm(type: String, severity: String, text: String, fragments: [String: JSONValue])
    case clearAlarm(type: String)
    case measurement(type: String, fragments: [String: JSONValue])
    case failure(String)
    case restart

    enum Parsed: Equatable {
        /// An ordinary log line.
        case log
        case directive(Directive)
        /// Framed as a directive but not one this agent understands; logged, never fatal.
        case invalid(String)
    }

    static let severities: Set<String> = ["CRITICAL", "MAJOR", "MINOR", "WARNING"]
    static let names = ["progress", "result", "inventory", "event", "alarm", "clear-alarm", "measurement", "failure", "restart"]

    /// Reads one line of standard output (without its newline).
    static func parse(_ line: some Collection<UInt8>) -> Parsed {
        guard let first = line.first(where: { $0 != UInt8(ascii: " ") && $0 != UInt8(ascii: "\t") }),
              first == UInt8(ascii: "{"),
              let json = try? JSONValue.parse(line), let name = json["switchyard"]?.stringValue else { return .log }
        func fragments(_ key: String = "fragments") -> [String: JSONValue]? {
            switch json[key] {
            case nil, .null?: return [:]
            case .object(let members)?: return members
            default: return nil
            }
        }
        func text(_ key: String) -> String? { json[key]?.stringValue }
        switch name {
        case "progress":
            guard let message = text("message") else { return .invalid("progress needs a \"message\" string") }
            return .directive(.progress(message))
        case "result":
            guard let value = fragments(), !value.isEmpty else { return .invalid("result needs a \"fragments\" object") }
            return .directive(.result(value))
        case "inventory":
            guard let value = fragments(), !value.isEmpty else { return .invalid("inventory needs a \"fragments\" object") }
            return .directive(.inventory(value))
        case "event":
            guard let type = text("type"), let message = text("text"), let extra = fragments() else {
                return .invalid("event needs \"type\" and \"text\" strings (and optional \"fragments\")")
            }
            return .directive(.event(type: type, text: message, fragments: extra))
        case "alarm":
            let severity = text("severity") ?? "MAJOR"
            guard let type = text("type"), let message = text("text"), let extra = fragments(), severities.contains(severity) else {
                return .invalid("alarm needs \"type\" and \"text\" strings, \"severity\" CRITICAL, MAJOR, MINOR or WARNING")
            }
            return .directive(.alarm(type: type, severity: severity, text: message, fragments: extra))
        case "clear-alarm":
            guard let type = text("type") else { return .invalid("clear-alarm needs a \"type\" string") }
            return .directive(.clearAlarm(type: type))
        case "measurement":
            guard let type = text("type"), let values = fragments(), !values.isEmpty else {
                return .invalid("measurement needs a \"type\" string and a \"fragments\" object")
            }
            return .directive(.measurement(type: type, fragments: values))
        case "failure":
            guard let reason = text("reason") else { return .invalid("failure needs a \"reason\" string") }
            return .directive(.failure(reason))
        case "restart":
            return .directive(.restart)
        default:
            return .invalid("unknown directive \"\(name)\" (known: \(names.joined(separator: ", ")))")
        }
    }
}

/// Picks directive candidates out of a byte stream: lines whose first non-blank byte is `{`.
/// Other lines are skipped without being copied, so a plugin flooding its output costs little.
/// At most `limit` bytes of an unfinished line are held; a longer line is cut there and reported
/// as overlong, so it is never read as a directive.
struct LineSplitter {
    let limit: Int
    private var pending: [UInt8] = []
    private var overlong = false
    /// For the current line: nil until its first non-blank byte, then whether it may be a directive.
    private var candidate: Bool?

    init(limit: Int) { self.limit = limit }

    /// Feeds bytes; calls `line` for each complete candidate line (`false` for lines cut at the limit),
    /// and `plain` with every other byte, in order (candidate lines and their newline excluded), so a
    /// log can hold the output without the directives.
    mutating func feed(_ bytes: UnsafeRawBufferPointer, plain: (UnsafeRawBufferPointer) -> Void = { _ in },
                       line: ([UInt8], Bool) -> Void) {
        var index = bytes.startIndex
        var plainStart = index
        func flushPlain(upTo end: Int) {
            if end > plainStart { plain(UnsafeRawBufferPointer(rebasing: bytes[plainStart..<end])) }
        }
        while index < bytes.endIndex {
            if candidate == nil {
                let byte = bytes[index]
                if byte == UInt8(ascii: "\n") || byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") {
                    index += 1
                    continue
                }
                candidate = byte == UInt8(ascii: "{")
                if candidate == true { flushPlain(upTo: index) }
            }
            let end = Self.newline(in: bytes, from: index)
            if candidate == true {
                append(bytes[index..<(end ?? bytes.endIndex)])
                plainStart = end.map { $0 + 1 } ?? bytes.endIndex
            }
            guard let end else { break }
            if candidate == true { line(pending, !overlong) }
            pending.removeAll(keepingCapacity: true)
            overlong = false
            candidate = nil
            index = end + 1
        }
        flushPlain(upTo: bytes.endIndex)
    }

    /// The index of the next newline at or after `start` (memchr: floods are scanned at memory speed).
    static func newline(in bytes: UnsafeRawBufferPointer, from start: Int) -> Int? {
        guard let base = bytes.baseAddress, start < bytes.count,
              let found = memchr(base + start, Int32(UInt8(ascii: "\n")), bytes.count - start) else { return nil }
        return base.distance(to: UnsafeRawPointer(found))
    }

    /// The last line when the stream ends without a newline.
    mutating func finish(line: ([UInt8], Bool) -> Void) {
        if candidate == true && !pending.isEmpty { line(pending, !overlong) }
        pending.removeAll()
        candidate = nil
    }

    private mutating func append(_ slice: Slice<UnsafeRawBufferPointer>) {
        let room = limit - pending.count
        if slice.count > room {
            pending += slice.prefix(max(0, room))
            overlong = true
        } else {
            pending += slice
        }
    }
}
