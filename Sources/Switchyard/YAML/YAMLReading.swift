import Cumulocity
public import JSONSupport

/// A problem in a YAML file, located by file and line.
/// Every problem found in one file.
public struct FileProblems: Error, CustomStringConvertible, Sendable {
    public let problems: [FileProblem]
    public init(_ problems: [FileProblem]) { self.problems = problems }
    public var description: String { problems.map(\.description).joined(separator: "\n") }
}

public struct FileProblem: Error, CustomStringConvertible, Sendable, Equatable {
    public let file: String
    public let line: Int?
    public let detail: String
    /// A program the problem is about (missing, not executable, not runnable): watched, so fixing it
    /// takes effect without touching the declaration.
    public let program: String?

    public init(file: String, line: Int?, _ detail: String, program: String? = nil) {
        self.file = file
        self.line = line
        self.detail = detail
        self.program = program
    }

    public var description: String { "\(file):\(line.map(String.init) ?? "?"): \(detail)" }
}

/// Typed reading of one YAML mapping, with errors that point at the offending line.
struct MappingReader {
    let file: String
    let line: Int
    let what: String
    let pairs: [(key: String, keyLine: Int, value: YAMLNode)]

    init(_ node: YAMLNode, file: String, what: String) throws(FileProblem) {
        guard case .mapping(let raw, let line) = node else {
            throw FileProblem(file: file, line: node.line, "\(what) must be a mapping, found \(node.kindName)")
        }
        var seen: [String: Int] = [:]
        var pairs: [(key: String, keyLine: Int, value: YAMLNode)] = []
        for (key, value) in raw {
            guard let name = key.scalar else {
                throw FileProblem(file: file, line: key.line, "keys of \(what) must be plain text")
            }
            if let first = seen[name] {
                throw FileProblem(file: file, line: key.line, "key '\(name)' appears twice (first on line \(first))")
            }
            seen[name] = key.line
            pairs.append((name, key.line, value))
        }
        self.file = file
        self.line = line
        self.what = what
        self.pairs = pairs
    }

    func node(_ key: String) -> YAMLNode? {
        pairs.first(where: { $0.key == key })?.value
    }

    /// A problem for every key not in `allowed`.
    func unknownKeyProblems(allowed: [String]) -> [FileProblem] {
        pairs.filter { !allowed.contains($0.key) }.map { pair in
            FileProblem(file: file, line: pair.keyLine,
                        "unknown key '\(pair.key)' in \(what) (expected one of: \(allowed.joined(separator: ", ")))")
        }
    }

    func string(_ key: String) throws(FileProblem) -> String? {
        guard let node = node(key), !node.isNull else { return nil }
        guard let text = node.scalar else {
            throw FileProblem(file: file, line: node.line, "'\(key)' must be text, found \(node.kindName)")
        }
        return text
    }

    func requiredString(_ key: String) throws(FileProblem) -> String {
        guard let text = try string(key), !text.isEmpty else {
            throw FileProblem(file: file, line: line, "\(what) needs '\(key)'")
        }
        return text
    }

    func stringList(_ key: String) throws(FileProblem) -> [String]? {
        guard let node = node(key), !node.isNull else { return nil }
        if let single = node.scalar { return [single] }
        guard case .sequence(let items, _) = node else {
            throw FileProblem(file: file, line: node.line, "'\(key)' must be a list of text")
        }
        var out: [String] = []
        for item in items {
            guard let text = item.scalar else {
                throw FileProblem(file: file, line: item.line, "'\(key)' must be a list of text, found \(item.kindName)")
            }
            out.append(text)
        }
        return out
    }

    func int(_ key: String, range: ClosedRange<Int>) throws(FileProblem) -> Int? {
        guard let node = node(key), !node.isNull else { return nil }
        guard let text = node.scalar, let value = Int(text), range.contains(value) else {
            throw FileProblem(file: file, line: node.line,
                              "'\(key)' must be a whole number from \(range.lowerBound) to \(range.upperBound)")
        }
        return value
    }

    func bool(_ key: String) throws(FileProblem) -> Bool? {
        guard let node = node(key), !node.isNull else { return nil }
        switch node.scalar {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default: throw FileProblem(file: file, line: node.line, "'\(key)' must be true or false")
        }
    }

    func duration(_ key: String) throws(FileProblem) -> Duration? {
        guard let node = node(key), !node.isNull else { return nil }
        guard let text = node.scalar, let value = parseDuration(text), value > .zero else {
            throw FileProblem(file: file, line: node.line,
                              "'\(key)' must be a positive duration such as 500ms, 30s, 5m or 1h")
        }
        return value
    }
}

/// Parses `500ms`, `30s`, `5m`, `1h`, `30d` or a bare number of seconds.
public func parseDuration(_ text: String) -> Duration? {
    let trimmed = text.trimmingCharacters(in: " ")
    let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86400)]
    for (suffix, factor) in units where trimmed.hasSuffix(suffix) {
        let number = trimmed.dropLast(suffix.count)
        // "ms" also ends in "s": only accept a number before the suffix.
        guard let value = Double(number), value >= 0 else { continue }
        return .milliseconds(Int64((value * factor * 1000).rounded()))
    }
    guard let seconds = Double(trimmed), seconds >= 0 else { return nil }
    return .milliseconds(Int64((seconds * 1000).rounded()))
}

/// Parses a size: `512`, `64KiB`, `16MiB`, `4GiB` (powers of 1024) or `10kB`, `20MB`, `1GB` (of 1000), in bytes.
public func parseByteSize(_ text: String) -> Int64? {
    let trimmed = text.trimmingCharacters(in: " ")
    let units: [(String, Double)] = [("KiB", 1024), ("MiB", 1_048_576), ("GiB", 1_073_741_824), ("kB", 1e3), ("KB", 1e3), ("MB", 1e6), ("GB", 1e9), ("B", 1)]
    for (suffix, factor) in units where trimmed.hasSuffix(suffix) {
        guard let value = Double(trimmed.dropLast(suffix.count).trimmingCharacters(in: " ")), value >= 0 else { return nil }
        let bytes = value * factor
        return bytes < 9e18 ? Int64(bytes.rounded()) : nil
    }
    return Int64(trimmed).flatMap { $0 >= 0 ? $0 : nil }
}

extension YAMLNode {
    /// The node as JSON: plain `true`/`false`/`null` and numbers are typed, quoted scalars stay text.
    public var json: JSONValue {
        switch self {
        case .scalar(let text, let plain, _):
            guard plain else { return .string(text) }
            switch text {
            case "true", "True", "TRUE": return .bool(true)
            case "false", "False", "FALSE": return .bool(false)
            case "", "~", "null", "Null", "NULL": return .null
            default:
                if let int = Int64(text) { return .int(int) }
                if let double = Double(text), text.contains(where: { $0.isNumber }) { return .double(double) }
                return .string(text)
            }
        case .sequence(let items, _):
            return .array(items.map(\.json))
        case .mapping(let pairs, _):
            var object: [String: JSONValue] = [:]
            for pair in pairs { object[pair.key.scalar ?? pair.key.json.encodedString()] = pair.value.json }
            return .object(object)
        }
    }
}
