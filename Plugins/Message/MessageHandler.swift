import HandlerKit

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Answers `c8y_Message` ("send message to device"): records the message in the operation log,
/// appends it to an optional file (`options.file`) and echoes it back in the result.
public struct MessageHandler: OperationHandler {
    let file: String?

    struct Options: Decodable {
        var file: String?
    }

    public init(options: JSONValue) throws(HandlerOptionsError) {
        file = try options.decode(Options.self).file
    }

    public func execute(_ operation: Operation, context: any HandlerContext) async throws -> Outcome {
        guard let text = operation.payload["text"]?.stringValue else {
            return .failed("c8y_Message.text is missing or not a string")
        }
        await context.log("message: \(text)")
        if let file {
            try appendLine(text, to: file)
        }
        return .successful(result: ["c8y_Message": ["text": .string(text), "delivered": true]])
    }

    private func appendLine(_ text: String, to path: String) throws(MessageFileError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        guard fd >= 0 else { throw MessageFileError(path: path, code: errno) }
        defer { close(fd) }
        let bytes = Array((text + "\n").utf8)
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard written == bytes.count else { throw MessageFileError(path: path, code: errno) }
    }
}

struct MessageFileError: Error, CustomStringConvertible {
    let path: String
    let code: Int32
    var description: String { "cannot write message to \(path): \(String(cString: strerror(code)))" }
}
