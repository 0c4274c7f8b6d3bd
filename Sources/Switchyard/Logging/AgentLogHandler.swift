import JSONSupport
public import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// How log lines look on standard error (`log.format`).
public enum LogFormat: String, Sendable, CaseIterable {
    /// `2026-12-01T10:00:00.123Z info message key=value`: for a terminal or a file.
    case text
    /// One JSON object per line: `timestamp`, `level`, `label`, `message`, `metadata`.
    case json
    /// `<6>message key=value`: the syslog priority first, so journald files each line at its level
    /// (`journalctl -p err` works) and stamps the time itself.
    case journal
}

/// Where the log level and format come from, strongest first: `--log-level`, then the configuration
/// (`log.level`/`SWITCHYARD_LOG_LEVEL`, `log.format`/`SWITCHYARD_LOG_FORMAT`); without a format, journal
/// when standard error is the stream `$JOURNAL_STREAM` names (systemd sets it), otherwise text.
public struct LogSettings: Sendable, Equatable {
    public var level: Logger.Level = .info
    /// `nil`: chosen from the environment (see ``resolvedFormat(environment:)``).
    public var format: LogFormat?

    public init(level: Logger.Level = .info, format: LogFormat? = nil) {
        self.level = level
        self.format = format
    }

    /// The configured format, else journal when standard error is journald's stream, else text.
    public func resolvedFormat(environment: [String: String]) -> LogFormat {
        if let format { return format }
        return Self.standardErrorIsJournal(environment["JOURNAL_STREAM"]) ? .journal : .text
    }

    /// Whether `JOURNAL_STREAM` (`device:inode`) names the file standard error is open on.
    static func standardErrorIsJournal(_ stream: String?) -> Bool {
        guard let stream, let colon = stream.firstIndex(of: ":"),
              let device = UInt64(stream[..<colon]), let inode = UInt64(stream[stream.index(after: colon)...]) else { return false }
        var info = stat()
        guard fstat(2, &info) == 0 else { return false }
        return UInt64(info.st_dev) == device && UInt64(info.st_ino) == inode
    }
}

/// The agent's log handler: one line per event on standard error in the chosen ``LogFormat``. A line
/// is written with one `write` under a lock, so lines from different threads never interleave, and
/// every value is escaped onto that line (a traceback in a failure reason keeps its `\n`s as text).
public struct AgentLogHandler: LogHandler {
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    let label: String
    let format: LogFormat
    let output: LogOutput

    public init(label: String, level: Logger.Level, format: LogFormat, output: LogOutput = .standardError) {
        self.label = label
        self.logLevel = level
        self.format = format
        self.output = output
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { $1 } }
        if let own = event.metadata { merged.merge(own) { $1 } }
        output.write(Self.render(format: format, timestamp: timestamp(), level: event.level, label: label,
                                 message: event.message.description, metadata: merged))
    }

    /// One line, newline included.
    static func render(format: LogFormat, timestamp: String, level: Logger.Level, label: String,
                       message: String, metadata: Logger.Metadata) -> String {
        let keys = metadata.keys.sorted()
        switch format {
        case .json:
            var object: [String: JSONValue] = [
                "timestamp": .string(timestamp), "level": .string(level.rawValue), "label": .string(label), "message": .string(message),
            ]
            if !metadata.isEmpty { object["metadata"] = .object(metadata.mapValues(json)) }
            return JSONValue.object(object).encodedString() + "\n"
        case .text, .journal:
            var line = format == .journal ? "<\(priority(level))>" : timestamp + " " + level.rawValue + " "
            line += escaped(message)
            for key in keys {
                guard let value = metadata[key] else { continue }
                line += " " + key + "=" + quotedIfNeeded(escaped(text(value)))
            }
            return line + "\n"
        }
    }

    /// syslog priorities, as sd-daemon(3) prefixes define them.
    static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: 7
        case .info: 6
        case .notice: 5
        case .warning: 4
        case .error: 3
        case .critical: 2
        }
    }

    static func text(_ value: Logger.MetadataValue) -> String {
        switch value {
        case .string(let text): text
        case .stringConvertible(let convertible): convertible.description
        case .array(let items): "[" + items.map(text).joined(separator: ", ") + "]"
        case .dictionary(let entries):
            "[" + entries.keys.sorted().map { "\($0): \(entries[$0].map(text) ?? "")" }.joined(separator: ", ") + "]"
        }
    }

    static func json(_ value: Logger.MetadataValue) -> JSONValue {
        switch value {
        case .string(let text): .string(text)
        case .stringConvertible(let convertible): .string(convertible.description)
        case .array(let items): .array(items.map(json))
        case .dictionary(let entries): .object(entries.mapValues(json))
        }
    }

    /// Control characters as escapes (`\n`, `\r`, `\t`, `\u{1B}`), a backslash doubled: one event, one line.
    static func escaped(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: { $0.value < 0x20 || $0 == "\\" || $0.value == 0x7F }) else { return text }
        var result = ""
        result.reserveCapacity(text.utf8.count + 8)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            case "\\": result += "\\\\"
            case _ where scalar.value < 0x20 || scalar.value == 0x7F:
                result += "\\u{" + String(scalar.value, radix: 16, uppercase: true) + "}"
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result
    }

    /// A value with a space, `"` or `=` in quotes (its `"` escaped), so `key=value` pairs stay parseable.
    static func quotedIfNeeded(_ text: String) -> String {
        guard text.isEmpty || text.utf8.contains(where: { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "=") })
        else { return text }
        var quoted: [UInt8] = [UInt8(ascii: "\"")]
        quoted.reserveCapacity(text.utf8.count + 4)
        for byte in text.utf8 {
            if byte == UInt8(ascii: "\"") { quoted.append(UInt8(ascii: "\\")) }
            quoted.append(byte)
        }
        quoted.append(UInt8(ascii: "\""))
        return String(decoding: quoted, as: UTF8.self)
    }
}

/// Where log lines go: a file descriptor, written whole under a lock.
public final class LogOutput: Sendable {
    private let descriptor: Int32
    private let lock = Mutex<Void>(())

    public init(descriptor: Int32) { self.descriptor = descriptor }
    public static let standardError = LogOutput(descriptor: 2)

    func write(_ line: String) {
        var line = line
        lock.withLock { _ in
            line.withUTF8 { bytes in
                var offset = 0
                while offset < bytes.count {
                    let written = Glibc.write(descriptor, bytes.baseAddress.map { $0 + offset }, bytes.count - offset)
                    if written < 0 && errno == EINTR { continue }
                    guard written > 0 else { return }   // nowhere to log to: drop the line rather than stop
                    offset += written
                }
            }
        }
    }
}
