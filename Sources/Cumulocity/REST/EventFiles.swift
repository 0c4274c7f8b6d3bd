public import JSONSupport

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Files attached to events: how a device hands the platform a log excerpt (`c8y_LogfileRequest`) or
/// a configuration file (typed `c8y_UploadConfigFile`). Both flows are in the platform's
/// device-management reference ("Logs", "Configuration > Typed file-based configuration"): create an
/// event, then `POST /event/events/{id}/binaries` as `multipart/form-data` with an `object` part
/// (`{name, type}`) and a `file` part.
extension PlatformClient {
    /// Creates an event now (not through a queue) and returns its id.
    public func createEvent(_ event: JSONValue) async throws(PlatformError) -> String {
        let path = "/event/events"
        let (status, json) = try await send("POST", path, body: event, accept: MediaType.event)
        guard let id = json?["id"]?.idValue else {
            throw PlatformError.malformed("POST", path, status: status, body: json?.encoded() ?? [], "no id in the created event")
        }
        if let device = event["source"]?["id"]?.idValue { activity.record(device) }
        return id
    }

    /// Attaches the file at `path` to event `eventID`, streamed from disk (never whole in memory),
    /// and returns the URL the platform serves it at (`<tenant>/event/events/<id>/binaries`).
    /// An event that already has a file (409, e.g. an earlier attempt that succeeded without its
    /// answer arriving) counts as attached.
    public func attachFile(toEvent eventID: String, path: String, name: String, contentType: String,
                           timeout: Duration = .seconds(600)) async throws(PlatformError) -> String {
        let target = "/event/events/\(percentEncoded(eventID))/binaries"
        _ = try await postFile(target, path: path, name: name, contentType: contentType, timeout: timeout, alreadyThere: 409)
        return baseURL + target
    }

    /// Stores the file at `path` in the inventory's binaries (`POST /inventory/binaries`, multipart,
    /// streamed) and returns its URL (`<tenant>/inventory/binaries/<id>`): a legacy configuration
    /// snapshot is kept this way (device-management reference, "Legacy file-based configuration").
    public func uploadBinary(path: String, name: String, contentType: String,
                             timeout: Duration = .seconds(600)) async throws(PlatformError) -> String {
        let target = "/inventory/binaries"
        let answer = try await postFile(target, path: path, name: name, contentType: contentType, timeout: timeout, alreadyThere: nil)
        guard let id = (try? JSONValue.parse(answer.head))?["id"]?.idValue else {
            throw PlatformError.malformed("POST", target, status: 201, body: answer.head, "no id in the stored binary")
        }
        return baseURL + target + "/" + percentEncoded(id)
    }

    /// POSTs a file as `multipart/form-data`; the start of the answer. `alreadyThere` is a status
    /// that counts as success (the file was stored by an earlier attempt whose answer was lost).
    private func postFile(_ target: String, path: String, name: String, contentType: String, timeout: Duration,
                          alreadyThere: Int?) async throws(PlatformError) -> AnswerEnds {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw PlatformError.localFile("POST", target, "cannot open \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            throw PlatformError.localFile("POST", target, "cannot read the size of \(path): \(String(cString: strerror(errno)))")
        }
        let body = MultipartFileBody(fd: fd, size: Int64(info.st_size), name: name, contentType: contentType)
        let answer = AnswerEnds()
        let response = try await forward("POST", target, headers: [
            ("Accept", MediaType.json), ("Content-Type", "multipart/form-data; boundary=\(MultipartFileBody.boundary)"),
        ], streaming: body, into: answer, timeout: timeout)
        guard (200..<300).contains(response.status) || response.status == alreadyThere else {
            throw PlatformError.status("POST", target, response)
        }
        return answer
    }
}

/// A `multipart/form-data` body of one file, read from an open descriptor at the offsets the
/// transport asks for (so a 401 can send it again): the `object` part, then the `file` part.
final class MultipartFileBody: RequestBodySource, @unchecked Sendable {
    static let boundary = "switchyard-9f3c1e7a4b2d"
    private let fd: Int32
    private let size: Int64
    private let head: [UInt8]
    private let tail: [UInt8]

    init(fd: Int32, size: Int64, name: String, contentType: String) {
        self.fd = fd
        self.size = size
        let object: JSONValue = ["name": .string(name), "type": .string(contentType)]
        let quoted = String(name.map { $0 == "\"" || $0 == "\r" || $0 == "\n" ? "_" : $0 })
        head = Array(("--\(Self.boundary)\r\nContent-Disposition: form-data; name=\"object\"\r\n\r\n").utf8) + object.encoded()
            + Array(("\r\n--\(Self.boundary)\r\nContent-Disposition: form-data; name=\"file\"; filename=\"\(quoted)\"\r\n"
                     + "Content-Type: \(contentType)\r\n\r\n").utf8)
        tail = Array("\r\n--\(Self.boundary)--\r\n".utf8)
    }

    var length: Int64? { Int64(head.count) + size + Int64(tail.count) }

    func read(at offset: Int64, into buffer: UnsafeMutableRawBufferPointer, wake: @escaping @Sendable () -> Void) -> BodyRead {
        let headEnd = Int64(head.count)
        let fileEnd = headEnd + size
        if offset < headEnd {
            return .bytes(copy(head, from: Int(offset), into: buffer))
        }
        if offset < fileEnd {
            let wanted = min(Int64(buffer.count), fileEnd - offset)
            // The transport's own thread, never the cooperative pool: a read from disk may block.
            let count = pread(fd, buffer.baseAddress, Int(wanted), off_t(offset - headEnd))
            if count > 0 { return .bytes(count) }
            return .failed(count == 0 ? "the file shrank while it was being sent" : "read failed: \(String(cString: strerror(errno)))")
        }
        let inTail = Int(offset - fileEnd)
        return inTail < tail.count ? .bytes(copy(tail, from: inTail, into: buffer)) : .end
    }

    private func copy(_ bytes: [UInt8], from start: Int, into buffer: UnsafeMutableRawBufferPointer) -> Int {
        let count = min(buffer.count, bytes.count - start)
        bytes.withUnsafeBytes { source in
            guard let from = source.baseAddress else { return }
            buffer.baseAddress?.copyMemory(from: from + start, byteCount: count)
        }
        return count
    }
}
