/// Finds the structure of JSON text without decoding it: the byte ranges of an array's elements and
/// of an object's members.
///
/// A list of operations (a PENDING page, a Bayeux reply) is split with it before anything is
/// decoded, so that one element the decoder refuses (a lone surrogate, a wrong type, a broken
/// fragment) is judged on its own and the others still run. The scan checks only what it needs to
/// find boundaries: brackets, braces and strings; the decoder checks everything else per element.
public enum JSONScan {
    /// The ranges of the elements of the array that `range` of `bytes` holds (whitespace around it
    /// allowed); `nil` when it is not one well-bracketed array.
    public static func arrayElements(_ bytes: [UInt8], in range: Range<Int>? = nil) -> [Range<Int>]? {
        let range = range ?? bytes.indices
        var index = skipWhitespace(bytes, range.lowerBound, range.upperBound)
        guard index < range.upperBound, bytes[index] == UInt8(ascii: "[") else { return nil }
        index += 1
        var elements: [Range<Int>] = []
        index = skipWhitespace(bytes, index, range.upperBound)
        if index < range.upperBound, bytes[index] == UInt8(ascii: "]") {
            return skipWhitespace(bytes, index + 1, range.upperBound) == range.upperBound ? [] : nil
        }
        while index < range.upperBound {
            guard let end = valueEnd(bytes, index, range.upperBound) else { return nil }
            elements.append(index..<end)
            index = skipWhitespace(bytes, end, range.upperBound)
            guard index < range.upperBound else { return nil }
            if bytes[index] == UInt8(ascii: "]") {
                return skipWhitespace(bytes, index + 1, range.upperBound) == range.upperBound ? elements : nil
            }
            guard bytes[index] == UInt8(ascii: ",") else { return nil }
            index = skipWhitespace(bytes, index + 1, range.upperBound)
        }
        return nil
    }

    /// The members of the object that `range` of `bytes` holds: each key's range (with its quotes)
    /// and its value's range; `nil` when it is not one well-bracketed object.
    public static func objectMembers(_ bytes: [UInt8], in range: Range<Int>? = nil) -> [(key: Range<Int>, value: Range<Int>)]? {
        let range = range ?? bytes.indices
        var index = skipWhitespace(bytes, range.lowerBound, range.upperBound)
        guard index < range.upperBound, bytes[index] == UInt8(ascii: "{") else { return nil }
        index = skipWhitespace(bytes, index + 1, range.upperBound)
        var members: [(key: Range<Int>, value: Range<Int>)] = []
        if index < range.upperBound, bytes[index] == UInt8(ascii: "}") {
            return skipWhitespace(bytes, index + 1, range.upperBound) == range.upperBound ? [] : nil
        }
        while index < range.upperBound {
            guard bytes[index] == UInt8(ascii: "\""), let keyEnd = stringEnd(bytes, index, range.upperBound) else { return nil }
            let key = index..<keyEnd
            index = skipWhitespace(bytes, keyEnd, range.upperBound)
            guard index < range.upperBound, bytes[index] == UInt8(ascii: ":") else { return nil }
            index = skipWhitespace(bytes, index + 1, range.upperBound)
            guard let valueEnd = valueEnd(bytes, index, range.upperBound) else { return nil }
            members.append((key, index..<valueEnd))
            index = skipWhitespace(bytes, valueEnd, range.upperBound)
            guard index < range.upperBound else { return nil }
            if bytes[index] == UInt8(ascii: "}") {
                return skipWhitespace(bytes, index + 1, range.upperBound) == range.upperBound ? members : nil
            }
            guard bytes[index] == UInt8(ascii: ",") else { return nil }
            index = skipWhitespace(bytes, index + 1, range.upperBound)
        }
        return nil
    }

    /// The value of a top-level member of an object, decoded on its own (`nil` when there is no such
    /// member or it does not decode): reads an operation's `id` even when the rest of it is broken.
    public static func member(_ name: String, of bytes: [UInt8], in range: Range<Int>? = nil) -> JSONValue? {
        guard let members = objectMembers(bytes, in: range) else { return nil }
        for (key, value) in members {
            guard case .string(let text)? = try? JSONValue.parse(bytes[key]), text == name else { continue }
            return try? JSONValue.parse(bytes[value])
        }
        return nil
    }

    /// The `id` of the first element of a top-level object's `name` array when the text is cut
    /// short (only the first bytes of a huge answer were kept): read from the members before the
    /// first one that does not end within `bytes`.
    public static func firstElementID(ofArray name: String, inPrefix bytes: [UInt8]) -> String? {
        guard let (start, _) = prefixMembers(bytes, from: 0, until: { key in key == name }),
              let arrayStart = start, arrayStart < bytes.count, bytes[arrayStart] == UInt8(ascii: "[") else { return nil }
        let element = skipWhitespace(bytes, arrayStart + 1, bytes.count)
        guard let (_, members) = prefixMembers(bytes, from: element, until: { _ in false }) else { return nil }
        return members.first { $0.key == "id" }?.value.idValue
    }

    /// The `"id":"…"` or `"id":123` member found in the last bytes of a cut answer, when exactly one
    /// stands at the start of a member (after `{` or `,`); `nil` when there is none or several.
    public static func lonelyID(inSuffix bytes: [UInt8]) -> String? {
        let needle = Array("\"id\"".utf8)
        var found: [String] = []
        var index = 0
        while index + needle.count < bytes.count {
            defer { index += 1 }
            guard bytes[index] == needle[0], bytes[index..<(index + needle.count)].elementsEqual(needle) else { continue }
            var before = index - 1
            while before >= 0, isWhitespace(bytes[before]) { before -= 1 }
            guard before >= 0, bytes[before] == UInt8(ascii: ",") || bytes[before] == UInt8(ascii: "{") else { continue }
            var colon = skipWhitespace(bytes, index + needle.count, bytes.count)
            guard colon < bytes.count, bytes[colon] == UInt8(ascii: ":") else { continue }
            colon = skipWhitespace(bytes, colon + 1, bytes.count)
            guard let end = valueEnd(bytes, colon, bytes.count), end < bytes.count,
                  let id = (try? JSONValue.parse(bytes[colon..<end]))?.idValue else { continue }
            found.append(id)
        }
        return found.count == 1 ? found[0] : nil
    }

    /// Walks the members of the object starting at `start` as far as they are complete. Stops at the
    /// member whose key satisfies `stop` (returning where its value starts) or at the first value
    /// that does not end within `bytes`; returns the complete members read before.
    private static func prefixMembers(_ bytes: [UInt8], from start: Int,
                                      until stop: (String) -> Bool) -> (Int?, [(key: String, value: JSONValue)])? {
        var index = skipWhitespace(bytes, start, bytes.count)
        guard index < bytes.count, bytes[index] == UInt8(ascii: "{") else { return nil }
        index = skipWhitespace(bytes, index + 1, bytes.count)
        var members: [(key: String, value: JSONValue)] = []
        while index < bytes.count, bytes[index] == UInt8(ascii: "\"") {
            guard let keyEnd = stringEnd(bytes, index, bytes.count),
                  let key = (try? JSONValue.parse(bytes[index..<keyEnd]))?.stringValue else { break }
            index = skipWhitespace(bytes, keyEnd, bytes.count)
            guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { break }
            index = skipWhitespace(bytes, index + 1, bytes.count)
            if stop(key) { return (index, members) }
            guard let end = valueEnd(bytes, index, bytes.count), end < bytes.count else { break }
            if let value = try? JSONValue.parse(bytes[index..<end]) { members.append((key, value)) }
            index = skipWhitespace(bytes, end, bytes.count)
            guard index < bytes.count, bytes[index] == UInt8(ascii: ",") else { break }
            index = skipWhitespace(bytes, index + 1, bytes.count)
        }
        return (nil, members)
    }

    // MARK: Scanning

    private static func isWhitespace(_ byte: UInt8) -> Bool {
        byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09
    }

    private static func skipWhitespace(_ bytes: [UInt8], _ start: Int, _ end: Int) -> Int {
        var index = start
        while index < end, isWhitespace(bytes[index]) { index += 1 }
        return index
    }

    /// The index after the string starting at `start` (a `"`), or `nil` when it does not end.
    private static func stringEnd(_ bytes: [UInt8], _ start: Int, _ end: Int) -> Int? {
        var index = start + 1
        while index < end {
            switch bytes[index] {
            case UInt8(ascii: "\\"): index += 2
            case UInt8(ascii: "\""): return index + 1
            default: index += 1
            }
        }
        return nil
    }

    /// The index after the value starting at `start`, or `nil` when it is cut short or unbalanced.
    /// Nesting is counted, not recursed into, so no depth of input can exhaust the stack.
    private static func valueEnd(_ bytes: [UInt8], _ start: Int, _ end: Int) -> Int? {
        guard start < end else { return nil }
        switch bytes[start] {
        case UInt8(ascii: "\""):
            return stringEnd(bytes, start, end)
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            var closers: [UInt8] = []
            var index = start
            while index < end {
                switch bytes[index] {
                case UInt8(ascii: "\""):
                    guard let after = stringEnd(bytes, index, end) else { return nil }
                    index = after
                    continue
                case UInt8(ascii: "{"): closers.append(UInt8(ascii: "}"))
                case UInt8(ascii: "["): closers.append(UInt8(ascii: "]"))
                case UInt8(ascii: "}"), UInt8(ascii: "]"):
                    guard closers.popLast() == bytes[index] else { return nil }
                    if closers.isEmpty { return index + 1 }
                default: break
                }
                index += 1
            }
            return nil
        case UInt8(ascii: ","), UInt8(ascii: "]"), UInt8(ascii: "}"), UInt8(ascii: ":"):
            return nil
        default:
            var index = start
            while index < end {
                let byte = bytes[index]
                if isWhitespace(byte) || byte == UInt8(ascii: ",") || byte == UInt8(ascii: "]") || byte == UInt8(ascii: "}") { break }
                index += 1
            }
            return index
        }
    }
}
