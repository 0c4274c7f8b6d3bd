import Foundation
import Testing
@testable import JSONSupport

/// `JSONValue.parse` (``JSONParser``) against `JSONDecoder` through `Codable`, the reference it
/// replaced: the same value for every input both accept, a refusal for every input the decoder
/// refuses. The fuzz target `json` (.ci/fuzz) does the same on generated inputs.
struct JSONParserTests {
    static let inputs: [String] = [
        // Scalars and fragments at the top level, whitespace around them.
        "null", "true", "false", " \t\r\n true \n", "0", "-0", "1", "-1", "42", "\"\"", "\"a\"",
        // Integers at and past Int64's ends; fractions and exponents.
        "9223372036854775807", "-9223372036854775808", "9223372036854775808", "-9223372036854775809",
        "123456789012345678901234567890", "1.0", "-1.0", "1.5", "0.1", "1e2", "1E2", "1e+2", "1e-2", "-0.0",
        "2.5e-3", "1.7976931348623157e308", "5e-324", "1e-400", "1e400", "-1e400", "0.000000000000000000000001",
        "100000000000000000000000.0", "9007199254740993", "9007199254740993.0",
        "-9.223372036854776e+18", "9.223372036854776e+18", "1.5e1", "0.1e1", "-1e-400", "11111000058073284.00000000", "11111000058073285.00000000000000000000000000008548800000000000000000000000000",
        "11111000058073285.00000000000000000000090000000000000000000000001652049697",
        // Numbers that are not JSON.
        "01", "-", "1.", ".5", "+1", "1e", "1e+", "0x10", "NaN", "Infinity", "-Infinity", "1.5.5", "--1", "1 2",
        // Strings: escapes, Unicode, surrogates, control characters.
        #""\"\\\/\b\f\n\r\t""#, #""\u0041\u00e9\u4e2d""#, #""\ud83d\ude00""#, #""\uD83D\uDE00x""#, #""\ud83d""#,
        #""\ude00""#, #""\ud83dx""#, #""\ud83d\u0041""#, #""\u12""#, #""\u12G4""#, #""\x""#, #""abc"#, "\"a\u{1}b\"",
        "\"tab\there\"", "\"é中😀\"", #""\u0000""#, "\"\\", "\"",
        // Arrays and objects.
        "[]", "[ ]", "[1,2,3]", "[1,]", "[,1]", "[1 2]", "[", "]", "[[[]]]", "[null,true,\"x\",{}]",
        "{}", "{ }", #"{"a":1}"#, #"{"a":1,}"#, #"{"a" 1}"#, #"{a:1}"#, #"{"a":}"#, #"{"a":1"b":2}"#, "{",
        #"{"a":{"b":{"c":[1,{"d":null}]}}}"#, #"{"a":1,"a":2}"#, #"{"":0}"#, #"{"\u0061":1,"a":2}"#,
        #"{"c8y_Command":{"text":"ls -l"},"id":"10001","status":"PENDING","creationTime":"2026-12-03T09:42:56.994Z"}"#,
        // Trailing text, empty input, a byte order mark, comments.
        "", " ", "true false", "{} {}", "\u{FEFF}{}", "{} // c", "/* c */ {}", "nul", "truex", "[true]x",
    ]

    @Test(arguments: inputs)
    func agreesWithTheDecoder(_ input: String) {
        compare(Array(input.utf8), input)
    }

    @Test func agreesOnInvalidUTF8() {
        for bytes: [UInt8] in [[0x22, 0xFF, 0x22], [0x22, 0xC3, 0x22], [0x22, 0xED, 0xA0, 0x80, 0x22], [0xFF], [0x22, 0xE2, 0x82, 0xAC, 0x22]] {
            compare(bytes, "\(bytes)")
        }
    }

    @Test func nestingPastTheLimitIsRefusedAndAtItAccepted() {
        let limit = JSONParser.maximumDepth
        let deep = String(repeating: "[", count: limit) + String(repeating: "]", count: limit)
        let tooDeep = String(repeating: "[", count: limit + 1) + String(repeating: "]", count: limit + 1)
        #expect((try? JSONValue.parse(deep)) != nil)
        #expect(throws: JSONParseError.self) { try JSONValue.parse(tooDeep) }
        compare(Array(tooDeep.utf8), "\(limit + 1) levels")
        // A hostile depth fails cleanly instead of exhausting the stack; 520 unclosed brackets crash
        // JSONDecoder (a precondition in JSONError.SourceLocation: found by the json fuzz target).
        #expect(throws: JSONParseError.self) { try JSONValue.parse(String(repeating: "[", count: 1_000_000)) }
        #expect(throws: JSONParseError.self) { try JSONValue.parse(String(repeating: "[", count: 520)) }
    }

    @Test func errorsNameTheCauseAndThePlace() throws {
        let error = try #require(throws: JSONParseError.self) { try JSONValue.parse(#"{"a": [1, 2,, 3]}"#) }
        #expect(error.detail == "unexpected character ',' at byte 12")
        #expect(error.excerpt == #"{"a": [1, 2,, 3]}"#)
    }

    @Test func documentsRoundTrip() throws {
        let text = #"{"a":[1,-2.5,"x\n\"y\"",true,null,{"b":{}}],"c":"é😀","d":9223372036854775807}"#
        let value = try JSONValue.parse(text)
        #expect(try JSONValue.parse(value.encoded()) == value)
        #expect(value == (try JSONValue.parseWithDecoder(Array(text.utf8))))
    }

    private func compare(_ bytes: [UInt8], _ label: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let reference = Result { () throws(JSONParseError) in try JSONValue.parseWithDecoder(bytes) }
        let parsed = Result { () throws(JSONParseError) in try JSONValue.parse(bytes) }
        switch (reference, parsed) {
        case (.success(let expected), .success(let actual)):
            #expect(Self.same(expected, actual), "\(label): decoder \(expected), parser \(actual)", sourceLocation: sourceLocation)
        case (.failure, .failure):
            break
        case (.success(let expected), .failure(let error)):
            Issue.record("\(label): the decoder accepts it as \(expected), the parser refuses it: \(error)", sourceLocation: sourceLocation)
        case (.failure(let error), .success(let actual)):
            Issue.record("\(label): the decoder refuses it (\(error)), the parser accepts it as \(actual)", sourceLocation: sourceLocation)
        }
    }

    /// Equal, with -0.0 and 0.0 told apart (`==` does not).
    static func same(_ a: JSONValue, _ b: JSONValue) -> Bool {
        switch (a, b) {
        case (.double(let x), .double(let y)): return x.bitPattern == y.bitPattern
        case (.array(let x), .array(let y)): return x.count == y.count && zip(x, y).allSatisfy { same($0, $1) }
        case (.object(let x), .object(let y)):
            return x.count == y.count && x.allSatisfy { key, value in y[key].map { same(value, $0) } ?? false }
        default: return a == b
        }
    }
}
