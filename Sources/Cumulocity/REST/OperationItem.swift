public import JSONSupport

/// One element of a list of operations (a collection page, a Bayeux reply), decoded on its own.
public enum OperationItem: Sendable {
    case operation(JSONValue)
    /// An element that could not be decoded: its `id` when that can still be read, why, and its start.
    case undecodable(id: String?, problem: String, excerpt: String)

    /// Decodes the element at `range` of `bytes`.
    public static func decode(_ bytes: [UInt8], _ range: Range<Int>) -> OperationItem {
        do {
            return .operation(try JSONValue.parse(bytes[range]))
        } catch {
            return .undecodable(id: JSONScan.member("id", of: bytes, in: range)?.idValue, problem: error.detail,
                                excerpt: JSONValue.excerpt(bytes[range]))
        }
    }

    /// The statuses an operation ends in.
    public static let finalStatuses: Set<String> = ["SUCCESSFUL", "FAILED"]

    /// The element ranges of a collection answer's `operations` array; `nil` when it has none.
    public static func elements(ofPage body: [UInt8]) -> [Range<Int>]? {
        guard let members = JSONScan.objectMembers(body) else { return nil }
        for (key, value) in members where (try? JSONValue.parse(body[key]))?.stringValue == "operations" {
            return JSONScan.arrayElements(body, in: value)
        }
        return nil
    }
}
