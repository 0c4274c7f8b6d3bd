import Testing
@testable import JSONSupport

/// `JSONValue.encoded()` (``JSONWriter``) against `JSONEncoder` through `Codable`, the reference it
/// replaced: the same bytes for every value (but a non-finite double, which the encoder cannot write).
struct JSONWriterTests {
    static let doubles: [Double] = [
        1.0, 1.5, -1.5, 1e20, 1e21, 1e-7, 0.1, -0.0, 0.0, 123456789012345680000.0, 5e-324, 1.7976931348623157e308,
        100.0, 1e15, 1e16, 1e17, 12345.678, 0.000001, 2.5e-5, 9007199254740993.0, -1.25e-10, .pi, -.ulpOfOne,
    ]

    @Test(arguments: doubles)
    func doublesAreWrittenAsTheEncoderWritesThem(_ double: Double) {
        #expect(JSONValue.double(double).encodedString() == String(decoding: JSONValue.double(double).encodedWithEncoder(), as: UTF8.self))
    }

    @Test func stringsEscapeWhatTheEncoderEscapes() {
        var text = String((0..<0x20).map { Character(Unicode.Scalar(UInt8($0))) })
        text += "\"\\/\u{7f}é\u{2028}😀 plain"
        for value: JSONValue in [.string(text), .string(""), .string("no escapes at all"), .string("\\"), .object([text: .string(text)])] {
            #expect(value.encodedString() == String(decoding: value.encodedWithEncoder(), as: UTF8.self))
        }
    }

    @Test func membersComeInTheOrderOfTheirNames() {
        let value: JSONValue = ["b": 1, "a": 2, "B": 3, "é": 4, "aa": 5, "_": 6, "": 7, "a b": 8]
        #expect(value.encodedString() == #"{"":7,"B":3,"_":6,"a":2,"a b":8,"aa":5,"b":1,"é":4}"#)
        #expect(value.encoded() == value.encodedWithEncoder())
    }

    @Test func aDoubleThatIsNotFiniteIsNullAndTheRestIsKept() {
        let value: JSONValue = ["a": .double(.nan), "b": .double(.infinity), "c": 1]
        #expect(value.encodedString() == #"{"a":null,"b":null,"c":1}"#)
    }

    /// Values of every shape, generated from a fixed seed, written by both.
    @Test func generatedValuesAreWrittenByteForByteAsByTheEncoder() {
        var generator = SeededGenerator(seed: 14)
        for _ in 0..<2_000 {
            let value = Self.randomValue(depth: 0, using: &generator)
            let expected = value.encodedWithEncoder()
            #expect(value.encoded() == expected, "\(String(decoding: expected, as: UTF8.self))")
            #expect((try? JSONValue.parse(value.encoded())) != nil)
        }
    }

    static func randomValue(depth: Int, using generator: inout SeededGenerator) -> JSONValue {
        switch Int.random(in: depth > 3 ? 0...4 : 0...6, using: &generator) {
        case 0: return .null
        case 1: return .bool(Bool.random(using: &generator))
        case 2: return .int(Int64.random(in: .min ... .max, using: &generator) >> Int64.random(in: 0...63, using: &generator))
        case 3:
            let double = Double(bitPattern: UInt64.random(in: 0 ... .max, using: &generator))
            return .double(double.isFinite ? double : Double.random(in: -1e6...1e6, using: &generator))
        case 4: return .string(randomString(using: &generator))
        case 5: return .array((0..<Int.random(in: 0...4, using: &generator)).map { _ in randomValue(depth: depth + 1, using: &generator) })
        default:
            var members: [String: JSONValue] = [:]
            for _ in 0..<Int.random(in: 0...4, using: &generator) {
                members[randomString(using: &generator)] = randomValue(depth: depth + 1, using: &generator)
            }
            return .object(members)
        }
    }

    static func randomString(using generator: inout SeededGenerator) -> String {
        let alphabet: [Unicode.Scalar] = ["a", "b", "Z", "0", " ", "\"", "\\", "/", "\n", "\t", "\u{0}", "\u{1f}", "\u{7f}", "é", "中", "😀", "\u{2028}"]
        return String(String.UnicodeScalarView((0..<Int.random(in: 0...8, using: &generator)).map { _ in
            alphabet[Int.random(in: 0..<alphabet.count, using: &generator)]
        }))
    }
}

/// A small deterministic generator (SplitMix64), so that a failure can be reproduced.
struct SeededGenerator: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
