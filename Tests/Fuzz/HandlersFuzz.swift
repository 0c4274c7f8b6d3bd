// libFuzzer target: the handler-file parser (YAML with limits on depth and alias expansion, then
// the node tree walked as JSON). Built and run by .ci/fuzz; not part of the SwiftPM package.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHandlers(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    guard let documents = try? YAMLNode.parseDocuments(bytes: bytes, limits: YAMLLimits()) else { return 0 }
    var nodes = 0
    var stack = documents
    while let node = stack.popLast() {
        nodes += 1
        precondition(nodes <= 200_000, "the node budget did not hold")
        switch node {
        case .scalar(let text, _, _): _ = text.utf8.count
        case .sequence(let items, _): stack += items
        case .mapping(let pairs, _): for pair in pairs { stack += [pair.key, pair.value] }
        }
    }
    return 0
}
