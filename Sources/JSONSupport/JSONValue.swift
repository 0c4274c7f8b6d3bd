import FoundationEssentials

/// A JSON document of any shape: operations, managed objects and fragments are open-ended,
/// so the agent keeps them as values rather than fixed structs.
public enum JSONValue: Sendable, Hashable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    /// The member `key` of an object, or `nil` for a missing member or a non-object.
    public subscript(key: String) -> JSONValue? {
        guard case .object(let members) = self else { return nil }
        return members[key]
    }

    /// The value at a dotted path such as `c8y_Command.text`.
    public func value(atPath path: String) -> JSONValue? {
        var current: JSONValue? = self
        for component in path.split(separator: ".", omittingEmptySubsequences: false) {
            current = current?[String(component)]
        }
        return current
    }

    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    /// A string, or an integer written as a string (platform ids arrive as either).
    public var idValue: String? {
        switch self {
        case .string(let s): return s.isEmpty ? nil : s
        case .int(let i): return String(i)
        default: return nil
        }
    }

    public var intValue: Int64? {
        switch self {
        case .int(let i): return i
        case .double(let d) where d.rounded() == d && abs(d) < 9.0e15: return Int64(d)
        default: return nil
        }
    }

    /// Any number, as a double.
    public var doubleValue: Double? {
        switch self {
        case .int(let i): return Double(i)
        case .double(let d): return d
        default: return nil
        }
    }

    public var boolValue: Bool? {
        if case .bool(let b) = self { return b }
        return nil
    }

    public var objectValue: [String: JSONValue]? {
        if case .object(let o) = self { return o }
        return nil
    }

    public var arrayValue: [JSONValue]? {
        if case .array(let a) = self { return a }
        return nil
    }

    /// This object with `other`'s members laid over it (one level deep; non-objects: `other` wins).
    public func merging(_ other: JSONValue) -> JSONValue {
        guard case .object(var mine) = self, case .object(let theirs) = other else { return other }
        for (key, value) in theirs { mine[key] = value }
        return .object(mine)
    }
}

extension JSONValue: Codable {
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let b = try? container.decode(Bool.self) {
            self = .bool(b)
        } else if let i = try? container.decode(Int64.self) {
            self = .int(i)
        } else if let d = try? container.decode(Double.self) {
            self = .double(d)
        } else if let s = try? container.decode(String.self) {
            self = .string(s)
        } else if let a = try? container.decode([JSONValue].self) {
            self = .array(a)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let b): try container.encode(b)
        case .int(let i): try container.encode(i)
        case .double(let d): try container.encode(d)
        case .string(let s): try container.encode(s)
        case .array(let a): try container.encode(a)
        case .object(let o): try container.encode(o)
        }
    }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral, ExpressibleByFloatLiteral, ExpressibleByNilLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int64) { self = .int(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(nilLiteral: ()) { self = .null }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        self = .object(Dictionary(elements, uniquingKeysWith: { _, last in last }))
    }
}

/// Why bytes could not be read as JSON, with an excerpt of them.
public struct JSONParseError: Error, CustomStringConvertible {
    public let detail: String
    public let excerpt: String
    public var description: String { "invalid JSON (\(detail)): \(excerpt)" }
}

extension JSONValue {
    /// Parses JSON text.
    /// - Throws: ``JSONParseError`` naming the problem and quoting the start of the input.
    public static func parse(_ bytes: some Collection<UInt8>) throws(JSONParseError) -> JSONValue {
        func parsing(_ buffer: UnsafeBufferPointer<UInt8>) -> Result<JSONValue, JSONParser.Failure> {
            Result { () throws(JSONParser.Failure) in try JSONParser.parse(buffer) }
        }
        // Contiguous bytes (an array, a native string's UTF-8) are read in place, others copied once.
        switch bytes.withContiguousStorageIfAvailable(parsing) ?? Array(bytes).withUnsafeBufferPointer(parsing) {
        case .success(let value): return value
        case .failure(let failure): throw JSONParseError(detail: failure.detail, excerpt: excerpt(bytes))
        }
    }

    /// The same through `JSONDecoder` and `Codable`: what ``parse(_:)`` did before ``JSONParser``,
    /// kept as the reference the parser is compared with (tests, the `json` fuzz target).
    static func parseWithDecoder(_ bytes: some Collection<UInt8>) throws(JSONParseError) -> JSONValue {
        do {
            return try JSONDecoder().decode(JSONValue.self, from: Data(bytes))
        } catch {
            throw JSONParseError(detail: Self.summary(of: error), excerpt: excerpt(bytes))
        }
    }

    public static func parse(_ text: String) throws(JSONParseError) -> JSONValue {
        try parse(text.utf8)
    }

    /// Compact JSON text with sorted keys (stable, so files and requests are reproducible): the
    /// bytes `JSONEncoder` writes with `.sortedKeys` and `.withoutEscapingSlashes`, without going
    /// through `Codable` (``JSONWriter``). A double that is not finite, which JSON cannot hold, is
    /// written `null`.
    public func encoded() -> [UInt8] {
        var writer = JSONWriter()
        writer.write(self)
        return writer.bytes
    }

    /// The same through `JSONEncoder` and `Codable`: what ``encoded()`` did before ``JSONWriter``,
    /// kept as the reference the writer is compared with (tests).
    func encodedWithEncoder() -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        if let data = try? encoder.encode(self) { return Array(data) }
        return Array("null".utf8)
    }

    public func encodedString() -> String { String(decoding: encoded(), as: UTF8.self) }

    /// The first bytes of a body, as text, for error messages.
    public static func excerpt(_ bytes: some Collection<UInt8>, limit: Int = 200) -> String {
        let text = String(decoding: bytes.prefix(limit), as: UTF8.self)
        return bytes.count > limit ? text + "…" : text
    }

    private static func summary(of error: any Error) -> String {
        switch error {
        case DecodingError.dataCorrupted(let context):
            return context.underlyingError.map { "\($0)" } ?? context.debugDescription
        default:
            return "\(error)"
        }
    }
}

extension JSONValue: CustomStringConvertible {
    public var description: String { encodedString() }
}
