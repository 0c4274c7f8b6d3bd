// libFuzzer target: the Bayeux reply decoder (a reply split into messages, each decoded on its own).
// Built and run by .ci/fuzz; not part of the SwiftPM package.
import JSONSupport

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzBayeux(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    guard let messages = BayeuxReplyMessage.split(bytes) else { return 0 }
    for message in messages {
        switch message {
        case .message(let json): _ = json["channel"]?.stringValue
        case .undecodable(let channel, let data): _ = (channel, data)
        }
    }
    return 0
}
