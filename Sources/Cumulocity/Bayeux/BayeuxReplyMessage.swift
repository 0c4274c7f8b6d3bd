public import JSONSupport

/// One message of a Bayeux reply: decoded, or (when the decoder refuses it) its channel and the
/// operation it carried, judged on its own.
public enum BayeuxReplyMessage: Sendable {
    case message(JSONValue)
    case undecodable(channel: String?, data: OperationItem?)

    /// Splits a reply (a JSON array of messages) before decoding each message, so that one message
    /// the decoder refuses (say, an operation with a lone surrogate) does not lose the others.
    /// `nil` when the reply is not an array.
    public static func split(_ body: [UInt8]) -> [BayeuxReplyMessage]? {
        guard let elements = JSONScan.arrayElements(body) else { return nil }
        return elements.map { range in
            if let message = try? JSONValue.parse(body[range]) { return .message(message) }
            let channel = JSONScan.member("channel", of: body, in: range)?.stringValue
            let data = JSONScan.objectMembers(body, in: range)?.first { member in
                (try? JSONValue.parse(body[member.key]))?.stringValue == "data"
            }.map { OperationItem.decode(body, $0.value) }
            return .undecodable(channel: channel, data: data)
        }
    }
}
