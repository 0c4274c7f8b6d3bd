// libFuzzer target: JSONValue.parse (JSONParser) against JSONDecoder through Codable, the reference
// it replaced. Both must accept the same inputs with the same value, and refuse the same inputs.
// Built with JSONSupport's sources in the same module (the reference is internal) by .ci/fuzz.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzJSON(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    var sawDuplicateKey = false
    let parsed = bytes.withUnsafeBufferPointer { buffer in
        Result { () throws(JSONParser.Failure) in try JSONParser.parse(buffer, sawDuplicateKey: &sawDuplicateKey) }
    }
    // A NUL byte is never JSON (outside strings it is no token, inside one a control character);
    // the decoder reads some inputs with NULs as numbers (`1\0\0`), the parser refuses them all.
    if bytes.contains(0) {
        if case .success(let value) = parsed { fatalError("the parser accepts \(value) with a NUL byte") }
        return 0
    }
    // JSONDecoder itself crashes (a precondition in JSONError.SourceLocation) on some inputs nested
    // about 512 deep, the parser refuses them (JSONParserTests): the reference is not asked.
    if bytes.count(where: { $0 == UInt8(ascii: "[") || $0 == UInt8(ascii: "{") }) >= 500 { return 0 }
    let reference = Result { () throws(JSONParseError) in try JSONValue.parseWithDecoder(bytes) }
    switch (parsed, reference) {
    case (.success(let value), .success(let expected)):
        if !same(value, expected) { fatalError("parser \(value), decoder \(expected) for \(JSONValue.excerpt(bytes))") }
    case (.failure, .failure):
        break
    case (.success(let value), .failure(let error)):
        fatalError("the parser accepts \(value), the decoder refuses: \(error)")
    case (.failure, .success) where sawDuplicateKey:
        // The decoder never reads the value of a duplicate key (the first wins), so it lets pass a
        // broken string there; the parser reads every value.
        break
    case (.failure(let error), .success(let expected)):
        fatalError("the parser refuses (\(error)), the decoder accepts \(expected)")
    }
    return 0
}


/// Equal, but for a number at or past 2^53 that one has as `.int` and the other as `.double` of the
/// same value: there the decoder's reading goes through `Decimal`, whose rounding the parser follows
/// for the forms it knows (JSONParserTests) and not beyond.
func same(_ a: JSONValue, _ b: JSONValue) -> Bool {
    switch (a, b) {
    case (.int(let i), .double(let d)), (.double(let d), .int(let i)):
        return i.magnitude >= 1 << 53 && Double(i) == d
    case (.array(let x), .array(let y)):
        return x.count == y.count && zip(x, y).allSatisfy { same($0, $1) }
    case (.object(let x), .object(let y)):
        return x.count == y.count && x.allSatisfy { key, value in y[key].map { same(value, $0) } ?? false }
    default:
        return a == b
    }
}
