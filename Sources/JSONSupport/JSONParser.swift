/// JSON text (RFC 8259) to a ``JSONValue`` in one pass over the bytes.
///
/// Why not `JSONDecoder`: decoding a `JSONValue` through `Codable` tries each case in turn (bool,
/// integer, double, string, array, object) and builds a `DecodingError` for every miss; on the agent's
/// hot path (each notification, each journal record read) that was over a third of its CPU. This
/// parser gives the same values and refuses the same inputs (`JSONParserTests` and the `json` fuzz
/// target compare the two), leniencies of the decoder included:
/// - a number whose value is a whole number that fits in `Int64` is `.int`, however it is written
///   (`1.0`, `1e2`: so that a value encoded and parsed again keeps its case), other numbers `.double`
///   (``number()`` follows the decoder's rule; at or past 2^53, where the decoder reads a number with
///   a fraction or an exponent through `Decimal`, the two may differ in case, never in value);
/// - strings must be valid UTF-8, without control characters or lone surrogates;
/// - of duplicate keys the first wins; a comma before `]` or `}` is let pass; a UTF-8 byte order mark
///   at the start is skipped;
/// - nesting deeper than ``maximumDepth`` is refused.
///
/// Two differences are on purpose: a NUL byte is refused wherever it is (the decoder takes some
/// inputs with NULs after a number, `1\0\0`, for that number), and so is a broken string in the
/// value of a duplicate key (the decoder never reads those values).
struct JSONParser {
    /// Arrays and objects nested deeper than this are refused (the limit `JSONDecoder` has).
    static let maximumDepth = 512

    private let bytes: UnsafeBufferPointer<UInt8>
    private var index = 0
    private var depth = 0
    /// Scratch bytes of a string with escapes, kept between strings.
    private var scratch: [UInt8] = []

    struct Failure: Error {
        let detail: String
    }

    /// Whether an object had a member name twice (the fuzz target's question: the decoder never
    /// reads a duplicate's value, so it lets pass a broken string there).
    private(set) var sawDuplicateKey = false

    static func parse(_ bytes: UnsafeBufferPointer<UInt8>) throws(Failure) -> JSONValue {
        var parser = JSONParser(bytes: bytes)
        return try parser.document()
    }

    static func parse(_ bytes: UnsafeBufferPointer<UInt8>, sawDuplicateKey: inout Bool) throws(Failure) -> JSONValue {
        var parser = JSONParser(bytes: bytes)
        defer { sawDuplicateKey = parser.sawDuplicateKey }
        return try parser.document()
    }

    private mutating func document() throws(Failure) -> JSONValue {
        if bytes.count >= 3, bytes[0] == 0xEF, bytes[1] == 0xBB, bytes[2] == 0xBF { index = 3 }
        skipWhitespace()
        let value = try value()
        skipWhitespace()
        guard index == bytes.count else { throw failure("unexpected text after the JSON value") }
        return value
    }

    private init(bytes: UnsafeBufferPointer<UInt8>) {
        self.bytes = bytes
    }

    private func failure(_ what: String) -> Failure {
        Failure(detail: "\(what) at byte \(index)")
    }

    private var current: UInt8? { index < bytes.count ? bytes[index] : nil }

    private mutating func skipWhitespace() {
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x09, 0x0A, 0x0D: index += 1
            default: return
            }
        }
    }

    private mutating func value() throws(Failure) -> JSONValue {
        guard let byte = current else { throw failure("unexpected end of the JSON text") }
        switch byte {
        case UInt8(ascii: "{"): return try object()
        case UInt8(ascii: "["): return try array()
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try number()
        default: throw failure("unexpected character \(Self.describe(byte))")
        }
    }

    private mutating func literal(_ word: StaticString) throws(Failure) {
        let count = word.utf8CodeUnitCount
        guard bytes.count - index >= count else { throw failure("unexpected end of the JSON text") }
        for offset in 0..<count where bytes[index + offset] != word.utf8Start[offset] {
            throw failure("unexpected character \(Self.describe(bytes[index + offset]))")
        }
        index += count
    }

    private mutating func nest() throws(Failure) {
        depth += 1
        guard depth <= Self.maximumDepth else { throw failure("nested deeper than \(Self.maximumDepth) levels") }
    }

    private mutating func array() throws(Failure) -> JSONValue {
        try nest()
        index += 1
        var elements: [JSONValue] = []
        if try closes(UInt8(ascii: "]")) { return .array(elements) }
        while true {
            elements.append(try value())
            if try endsAfterMember(closing: UInt8(ascii: "]"), in: "an array") { return .array(elements) }
        }
    }

    private mutating func object() throws(Failure) -> JSONValue {
        try nest()
        index += 1
        var members: [String: JSONValue] = [:]
        if try closes(UInt8(ascii: "}")) { return .object(members) }
        while true {
            guard current == UInt8(ascii: "\"") else {
                throw current.map { failure("expected a member name in quotes, found \(Self.describe($0))") }
                    ?? failure("unexpected end of the JSON text in an object")
            }
            let key = try string()
            skipWhitespace()
            guard current == UInt8(ascii: ":") else {
                throw current.map { failure("expected ':' after a member name, found \(Self.describe($0))") }
                    ?? failure("unexpected end of the JSON text in an object")
            }
            index += 1
            skipWhitespace()
            let duplicate = members[key] != nil
            if duplicate { sawDuplicateKey = true }
            let member = try value()
            if !duplicate { members[key] = member }
            if try endsAfterMember(closing: UInt8(ascii: "}"), in: "an object") { return .object(members) }
        }
    }

    /// Skips whitespace; `true`, past it, when `close` ends the container here.
    private mutating func closes(_ close: UInt8) throws(Failure) -> Bool {
        skipWhitespace()
        guard current == close else { return false }
        index += 1
        depth -= 1
        return true
    }

    /// After an element or member: `,` (and the next one, or `close` after it: the decoder's
    /// leniency), or `close`; `true` when the container ended.
    private mutating func endsAfterMember(closing close: UInt8, in what: String) throws(Failure) -> Bool {
        skipWhitespace()
        switch current {
        case UInt8(ascii: ","):
            index += 1
            return try closes(close)
        case close:
            index += 1
            depth -= 1
            return true
        case nil: throw failure("unexpected end of the JSON text in \(what)")
        case let byte?: throw failure("expected ',' or '\(Character(Unicode.Scalar(close)))' in \(what), found \(Self.describe(byte))")
        }
    }

    /// A string starting at its opening quote; `index` ends past the closing one.
    private mutating func string() throws(Failure) -> String {
        index += 1
        let start = index
        // Fast path: no escapes, the bytes are the string.
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") {
                let text = try decode(UnsafeBufferPointer(rebasing: bytes[start..<index]), from: start)
                index += 1
                return text
            }
            if byte == UInt8(ascii: "\\") { break }
            guard byte >= 0x20 else { throw failure("a control character (\(Self.describe(byte))) in a string") }
            index += 1
        }
        guard index < bytes.count else { throw failure("unterminated string") }
        scratch.removeAll(keepingCapacity: true)
        scratch.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[start..<index]))
        while index < bytes.count {
            let byte = bytes[index]
            switch byte {
            case UInt8(ascii: "\""):
                index += 1
                return try decode(scratch, from: start)
            case UInt8(ascii: "\\"):
                index += 1
                try escape()
            case ..<0x20:
                throw failure("a control character (\(Self.describe(byte))) in a string")
            default:
                scratch.append(byte)
                index += 1
            }
        }
        throw failure("unterminated string")
    }

    private func decode(_ utf8: some Collection<UInt8>, from start: Int) throws(Failure) -> String {
        guard let text = String(validating: utf8, as: UTF8.self) else {
            throw Failure(detail: "a string that is not valid UTF-8 at byte \(start)")
        }
        return text
    }

    /// The escape after a backslash, appended to `scratch` as UTF-8.
    private mutating func escape() throws(Failure) {
        guard let byte = current else { throw failure("unterminated string") }
        index += 1
        switch byte {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): scratch.append(byte)
        case UInt8(ascii: "b"): scratch.append(0x08)
        case UInt8(ascii: "f"): scratch.append(0x0C)
        case UInt8(ascii: "n"): scratch.append(0x0A)
        case UInt8(ascii: "r"): scratch.append(0x0D)
        case UInt8(ascii: "t"): scratch.append(0x09)
        case UInt8(ascii: "u"):
            var scalar = UInt32(try hex4())
            if (0xD800...0xDBFF).contains(scalar) {
                guard bytes.count - index >= 2, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u") else {
                    throw failure("a lone high surrogate in a string")
                }
                index += 2
                let low = UInt32(try hex4())
                guard (0xDC00...0xDFFF).contains(low) else { throw failure("a high surrogate without its low one in a string") }
                scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
            } else if (0xDC00...0xDFFF).contains(scalar) {
                throw failure("a lone low surrogate in a string")
            }
            guard let unicode = Unicode.Scalar(scalar) else { throw failure("an invalid \\u escape") }
            scratch.append(contentsOf: UTF8.encode(unicode) ?? UTF8.EncodedScalar())
        default:
            index -= 1
            throw failure("an invalid escape \\\(Self.describe(byte)) in a string")
        }
    }

    private mutating func hex4() throws(Failure) -> UInt16 {
        guard bytes.count - index >= 4 else { throw failure("a \\u escape cut short") }
        var value: UInt16 = 0
        for _ in 0..<4 {
            let byte = bytes[index]
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: throw failure("a \\u escape with \(Self.describe(byte)) for a hex digit")
            }
            value = value << 4 | UInt16(digit)
            index += 1
        }
        return value
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`. Which numbers are `.int` follows the
    /// decoder's reading of a number as `Int64`: digits alone that fit; else a double that is a whole
    /// number below 2^53; else, from 2^53 on, the number's significant decimal digits scaled by its
    /// exponent, truncated, if every step fits in 64 bits. Every other number
    /// is a `.double`, refused when not finite.
    private mutating func number() throws(Failure) -> JSONValue {
        let start = index
        let negative = current == UInt8(ascii: "-")
        if negative { index += 1 }
        guard let first = current, Self.isDigit(first) else { throw failure("a number without digits") }
        var integer: Int64 = 0
        var fits = true
        if first == UInt8(ascii: "0") {
            index += 1
            if let next = current, Self.isDigit(next) { throw failure("a number with a leading zero") }
        } else {
            while let byte = current, Self.isDigit(byte) {
                if fits {
                    let digit = Int64(byte - UInt8(ascii: "0"))
                    let (times10, overflow1) = integer.multipliedReportingOverflow(by: 10)
                    let (next, overflow2) = negative ? times10.subtractingReportingOverflow(digit) : times10.addingReportingOverflow(digit)
                    if overflow1 || overflow2 { fits = false } else { integer = next }
                }
                index += 1
            }
        }
        var plain = true
        if current == UInt8(ascii: ".") {
            plain = false
            index += 1
            guard let byte = current, Self.isDigit(byte) else { throw failure("a number with no digits after '.'") }
            while let byte = current, Self.isDigit(byte) { index += 1 }
        }
        if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
            plain = false
            index += 1
            if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { index += 1 }
            guard let byte = current, Self.isDigit(byte) else { throw failure("a number with no digits in its exponent") }
            while let byte = current, Self.isDigit(byte) { index += 1 }
        }
        if plain && fits { return .int(integer) }
        let literal = UnsafeBufferPointer(rebasing: bytes[start..<index])
        guard let double = Double(String(decoding: literal, as: UTF8.self)), double.isFinite else {
            throw Failure(detail: "the number \(String(decoding: literal, as: UTF8.self)) is out of range at byte \(start)")
        }
        guard let whole = Int64(exactly: double) else { return .double(double) }
        if double.magnitude < 0x1p53 { return .int(whole) }
        return Self.decimalInteger(literal).map(JSONValue.int) ?? .double(double)
    }

    /// A number literal read as the decoder reads one past 2^53 (through `Decimal`): its significant
    /// digits while they fit in `Decimal`'s 128-bit mantissa (later ones dropped, an integer digit
    /// still counting for the magnitude), trailing zeros dropped, then, if that fits in 64 bits,
    /// scaled by its exponent (divisions truncate) if every step fits.
    private static func decimalInteger(_ literal: UnsafeBufferPointer<UInt8>) -> Int64? {
        var mantissa: UInt128 = 0
        var full = false
        var scale = 0
        var index = 0
        let negative = literal.first == UInt8(ascii: "-")
        if negative { index += 1 }
        var fraction = false
        // Zeros after the last other digit so far: not in the mantissa (`Decimal` drops trailing
        // zeros), they raise the scale instead.
        var zeros = 0
        while index < literal.count {
            let byte = literal[index]
            if byte == UInt8(ascii: ".") {
                fraction = true
            } else if isDigit(byte) {
                if full {
                    if !fraction { scale += 1 }
                } else if byte == UInt8(ascii: "0") {
                    zeros += 1
                    if fraction { scale -= 1 }
                } else if let next = appending(byte - UInt8(ascii: "0"), after: zeros, to: mantissa) {
                    mantissa = next
                    zeros = 0
                    if fraction { scale -= 1 }
                } else {
                    full = true
                    if !fraction { scale += 1 }
                }
            } else {
                break
            }
            index += 1
        }
        scale += zeros
        if index < literal.count {
            index += 1
            var exponentNegative = false
            if literal[index] == UInt8(ascii: "+") || literal[index] == UInt8(ascii: "-") {
                exponentNegative = literal[index] == UInt8(ascii: "-")
                index += 1
            }
            var exponent = 0
            while index < literal.count {
                exponent = min(exponent * 10 + Int(literal[index] - UInt8(ascii: "0")), 100_000)
                index += 1
            }
            scale += exponentNegative ? -exponent : exponent
        }
        guard var value = UInt64(exactly: mantissa) else { return nil }
        while scale < 0 {
            value /= 10
            scale += 1
        }
        while scale > 0 {
            let (next, overflow) = value.multipliedReportingOverflow(by: 10)
            guard !overflow else { return nil }
            value = next
            scale -= 1
        }
        return Int64(exactly: value).map { negative ? -$0 : $0 }
    }

    /// `mantissa` with `zeros` zeros and then `digit` after it; `nil` when that overflows 128 bits.
    private static func appending(_ digit: UInt8, after zeros: Int, to mantissa: UInt128) -> UInt128? {
        var value = mantissa
        for _ in 0...zeros {
            let (next, overflow) = value.multipliedReportingOverflow(by: 10)
            guard !overflow else { return nil }
            value = next
        }
        let (next, overflow) = value.addingReportingOverflow(UInt128(digit))
        return overflow ? nil : next
    }

    private static func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }

    private static func describe(_ byte: UInt8) -> String {
        (0x21...0x7E).contains(byte) ? "'\(Character(Unicode.Scalar(byte)))'" : "byte 0x\(String(byte, radix: 16, uppercase: true))"
    }
}
