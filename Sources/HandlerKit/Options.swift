public import JSONSupport
import FoundationEssentials

extension JSONValue {
    /// Decodes a declaration's `options` into a `Decodable` type: each handler states its options as
    /// a struct (optional properties for optional keys) instead of reading keys by hand.
    ///
    /// A wrong type, a missing required key or a value `T.init(from:)` refuses is a
    /// ``HandlerOptionsError`` naming the option: `options.timeout must be a whole number, found "ten"`.
    /// Keys `T` does not know are ignored.
    public func decode<T: Decodable>(_ type: T.Type) throws(HandlerOptionsError) -> T {
        let object: JSONValue = self == .null ? .object([:]) : self
        do {
            return try JSONDecoder().decode(T.self, from: Data(object.encoded()))
        } catch let error as DecodingError {
            throw HandlerOptionsError(Self.explain(error, in: object))
        } catch let error as HandlerOptionsError {
            throw error
        } catch {
            throw HandlerOptionsError("options: \(error)")
        }
    }

    /// The decoder's complaint, as the person who wrote the declaration reads it.
    private static func explain(_ error: DecodingError, in options: JSONValue) -> String {
        func name(_ path: [any CodingKey]) -> String {
            (["options"] + path.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }).joined(separator: ".")
                .replacingOccurrences(of: ".[", with: "[")
        }
        func found(_ path: [any CodingKey]) -> String {
            var value: JSONValue? = options
            for key in path { value = key.intValue.flatMap { value?.arrayValue?[safe: $0] } ?? value?[key.stringValue] }
            return value.map { ", found \($0)" } ?? ""
        }
        switch error {
        case .typeMismatch(let type, let context):
            return "\(name(context.codingPath)) must be \(describe(type))\(found(context.codingPath))"
        case .valueNotFound(let type, let context):
            return "\(name(context.codingPath)) must be \(describe(type)), not null"
        case .keyNotFound(let key, let context):
            return "\(name(context.codingPath + [key])) is required"
        case .dataCorrupted(let context):
            return "\(name(context.codingPath)): \(context.debugDescription)"
        @unknown default:
            return "options: \(error)"
        }
    }

    private static func describe(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: "text"
        case is Int.Type, is Int64.Type, is Int32.Type, is UInt.Type, is UInt64.Type: "a whole number"
        case is Double.Type, is Float.Type: "a number"
        case is Bool.Type: "true or false"
        case is [String].Type: "a list of text"
        case is [String: String].Type: "a mapping of names to text"
        default: "\(type)"
        }
    }
}

extension Array {
    fileprivate subscript(safe index: Int) -> Element? { indices.contains(index) ? self[index] : nil }
}

extension String {
    fileprivate func replacingOccurrences(of target: String, with replacement: String) -> String {
        split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
