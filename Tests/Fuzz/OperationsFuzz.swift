// libFuzzer target: the operation decoder (a collection page split into its operations, each
// decoded on its own). Built and run by .ci/fuzz; not part of the SwiftPM package.
import JSONSupport

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOperations(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    guard let elements = OperationItem.elements(ofPage: bytes) else { return 0 }
    var previous = 0
    for range in elements {
        // Element ranges lie inside the input, in order, without overlap.
        precondition(range.lowerBound >= previous && range.upperBound <= bytes.count, "element range out of order or bounds")
        previous = range.upperBound
        switch OperationItem.decode(bytes, range) {
        case .operation(let json): _ = json.encoded()
        case .undecodable(let id, let problem, let excerpt): _ = (id, problem, excerpt)
        }
    }
    _ = JSONScan.firstElementID(ofArray: "operations", inPrefix: bytes)
    _ = JSONScan.lonelyID(inSuffix: bytes)
    return 0
}
