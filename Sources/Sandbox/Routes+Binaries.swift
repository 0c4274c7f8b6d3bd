import Cumulocity
import HTTPTypes
import Hummingbird
import JSONSupport
import MultipartKit
import NIOCore

/// Files as the platform stores them: `/inventory/binaries` (a managed object with `c8y_IsBinary`
/// per file; uploaded as multipart `object` + `file`, downloaded whole or by `Range`, replaced by
/// PUT) and one file per event under `/event/events/{id}/binaries` (multipart or a raw body).
/// Shapes: `binary` and `eventBinary` in `../shared/reference/c8y-oas.yml`.
extension Routes {
    /// The largest upload the sandbox keeps (it holds files in memory).
    static let uploadLimit = 256 << 20

    func registerBinaries(on router: Router<SandboxContext>) {
        let tenant = self.tenant
        router.post("/inventory/binaries") { request, context -> Response in
            let file: StoredFile
            switch try await Self.upload(request, defaultName: "file") {
            case .success(let value): file = value
            case .failure(let refusal): return refusal.response
            }
            let id = await tenant.addBinary(file.bytes, name: file.name, type: file.type, owner: context.principal.name)
            return Self.json(await tenant.binaryMetadata(id) ?? [:], status: 201, type: "application/vnd.com.nsn.cumulocity.managedobject+json")
        }
        router.get("/inventory/binaries") { request, _ -> Response in
            let query = request.uri.queryParameters
            let ids = query.get("ids").map { Set($0.split(separator: ",").map(String.init)) }
            let type = query.get("type"), owner = query.get("owner")
            let files = await tenant.binaryList().filter { info in
                (ids.map { info["id"]?.idValue.map($0.contains) ?? false } ?? true)
                    && (type.map { info["type"]?.stringValue == $0 } ?? true)
                    && (owner.map { info["owner"]?.stringValue == $0 } ?? true)
            }
            return Self.json(Self.collection(files, named: "managedObjects", query, path: "/inventory/binaries"),
                             type: "application/vnd.com.nsn.cumulocity.managedobjectcollection+json")
        }
        router.get("/inventory/binaries/{id}") { request, context -> Response in
            let id = context.parameters.get("id") ?? ""
            let range = request.headers[.range]
            guard let (bytes, cut) = await tenant.binary(id, range: range) else {
                return Self.error(404, "inventory/Not Found", "Binary \(id) not found")
            }
            let type = await tenant.binaryMetadata(id)?["contentType"]?.stringValue ?? "application/octet-stream"
            return await Self.download(bytes, type: type, range: range, cutAfter: cut, tenant: tenant)
        }
        // Replace a file: the raw body, counted as it arrives (tests watch a body stream in).
        router.put("/inventory/binaries/{id}") { request, context -> Response in
            let id = context.parameters.get("id") ?? ""
            guard let info = await tenant.binaryMetadata(id) else {
                return Self.error(404, "inventory/Not Found", "Binary \(id) not found")
            }
            if let refused = Self.refusedChange(of: info, named: "binary \(id)", by: context.principal) { return refused }
            var bytes: [UInt8] = []
            for try await buffer in request.body {
                bytes.append(contentsOf: buffer.readableBytesView)
                guard bytes.count <= Self.uploadLimit else { return Self.tooLarge }
                await tenant.uploadReceived(id, bytes: buffer.readableBytes)
            }
            let updated = await tenant.replaceBinary(id, with: bytes, contentType: request.headers[.contentType])
            return Self.json(updated ?? info, status: 201, type: "application/vnd.com.nsn.cumulocity.managedobject+json")
        }
        router.delete("/inventory/binaries/{id}") { _, context -> Response in
            let id = context.parameters.get("id") ?? ""
            guard let info = await tenant.binaryMetadata(id) else {
                return Self.error(404, "inventory/Not Found", "Binary \(id) not found")
            }
            if let refused = Self.refusedChange(of: info, named: "binary \(id)", by: context.principal) { return refused }
            _ = await tenant.deleteBinary(id)
            return Response(status: .noContent)
        }
        // Kept for older scripts: a raw body stored as a new binary.
        router.put("/sandbox/binaries") { request, _ -> Response in
            var request = request
            let buffer = try await request.collectBody(upTo: Self.uploadLimit)
            let id = await tenant.addBinary(Array(buffer.readableBytesView))
            return Self.json(["id": .string(id), "path": .string("/inventory/binaries/\(id)")])
        }

        // Event binaries: POST attaches (409 if the event has one), PUT replaces, GET reads, DELETE removes.
        for (method, replace) in [(HTTPRequest.Method.post, false), (.put, true)] {
            router.on(RouterPath("/event/events/{id}/binaries"), method: method) { request, context -> Response in
                let id = context.parameters.get("id") ?? ""
                let file: StoredFile
                switch try await Self.upload(request, defaultName: "event-\(id)") {
                case .success(let value): file = value
                case .failure(let refusal): return refusal.response
                }
                switch await tenant.attachBinary(toEvent: id, file, replace: replace) {
                case .attached(let answer): return Self.json(answer, status: 201)
                case .noEvent:
                    return Self.error(404, "event/Not Found",
                                      replace ? "Event \(id) has no attached file" : "Finding event from database failed : No event for gid '\(id)'!")
                case .exists: return Self.error(409, "event/Conflict", "Event \(id) already has an attached file; replace it with PUT")
                }
            }
        }
        router.get("/event/events/{id}/binaries") { request, context -> Response in
            let id = context.parameters.get("id") ?? ""
            guard let file = await tenant.eventBinary(id) else {
                return Self.error(404, "event/Not Found", "Event \(id) has no attached file")
            }
            return await Self.download(file.bytes, type: file.type, range: request.headers[.range], cutAfter: nil, tenant: tenant)
        }
        router.delete("/event/events/{id}/binaries") { _, context -> Response in
            let id = context.parameters.get("id") ?? ""
            guard await tenant.detachBinary(fromEvent: id) else {
                return Self.error(404, "event/Not Found", "Event \(id) has no attached file")
            }
            return Response(status: .noContent)
        }
    }

    static let tooLarge = error(413, "general/Payload Too Large", "the sandbox keeps files of up to \(uploadLimit >> 20) MiB")

    /// Reads an upload: `multipart/form-data` with a `file` part and an optional `object` part
    /// (`{"name", "type"}`), as the platform and `c8y-api` send it, or a raw body whose media type is
    /// the file's (a `filename` in `Content-Disposition` names it).
    static func upload(_ request: Request, defaultName: String) async throws -> Result<StoredFile, Refusal> {
        var request = request
        let contentType = request.headers[.contentType] ?? "application/octet-stream"
        let body: ByteBuffer
        do {
            body = try await request.collectBody(upTo: uploadLimit)
        } catch {
            return .failure(Refusal(tooLarge))
        }
        guard contentType.lowercased().hasPrefix("multipart/form-data") else {
            let disposition = request.headers.first { $0.name.canonicalName == "content-disposition" }?.value
            let name = disposition.flatMap { parameter("filename", in: $0) } ?? defaultName
            return .success(StoredFile(name: name, type: contentType, bytes: Array(body.readableBytesView)))
        }
        guard let boundary = parameter("boundary", in: contentType), !boundary.isEmpty else {
            return .failure(Refusal(error(400, "general/invalidBody", "multipart/form-data without a boundary")))
        }
        let parts: [Part]
        do {
            parts = try multipart(body, boundary: boundary)
        } catch let problem {
            return .failure(Refusal(error(400, "general/invalidBody", "the multipart body does not parse: \(problem)")))
        }
        guard let file = parts.first(where: { $0.name == "file" }) else {
            return .failure(Refusal(error(400, "general/invalidBody", "the multipart body has no part named \"file\"")))
        }
        var name = file.filename ?? defaultName
        var type = file.contentType ?? "application/octet-stream"
        if let object = parts.first(where: { $0.name == "object" }) {
            guard case .object(let info)? = try? JSONValue.parse(object.body) else {
                return .failure(Refusal(error(400, "general/invalidBody", "the \"object\" part is not a JSON object")))
            }
            name = info["name"]?.stringValue ?? name
            type = info["type"]?.stringValue ?? type
        }
        return .success(StoredFile(name: name, type: type, bytes: file.body))
    }

    /// An answer that ends a route early, as a `Result` failure.
    struct Refusal: Error {
        let response: Response
        init(_ response: Response) { self.response = response }
    }

    struct Part {
        var name: String?
        var filename: String?
        var contentType: String?
        var body: [UInt8] = []
    }

    /// The parts of a multipart body (MultipartKit's streaming parser; headers by their lower-cased name).
    static func multipart(_ body: ByteBuffer, boundary: String) throws -> [Part] {
        final class Collector {
            var parts: [Part] = []
            var current = Part()
        }
        let collector = Collector()
        let parser = MultipartParser(boundary: boundary)
        parser.onHeader = { name, value in
            switch name.lowercased() {
            case "content-disposition":
                collector.current.name = parameter("name", in: value)
                collector.current.filename = parameter("filename", in: value)
            case "content-type": collector.current.contentType = value
            default: break
            }
        }
        parser.onBody = { buffer in collector.current.body.append(contentsOf: buffer.readableBytesView) }
        parser.onPartComplete = {
            collector.parts.append(collector.current)
            collector.current = Part()
        }
        try parser.execute(body)
        return collector.parts
    }

    /// The value of `key=value` or `key="value"` in a header such as `form-data; name="file"`.
    static func parameter(_ key: String, in header: String) -> String? {
        for item in header.split(separator: ";").dropFirst() {
            let pair = item.split(separator: "=", maxSplits: 1)
            guard pair.count == 2, pair[0].trimmingCharacters(in: " \t\r\n").lowercased() == key else { continue }
            var value = pair[1].trimmingCharacters(in: " \t\r\n")
            if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") { value = String(value.dropFirst().dropLast()) }
            return value
        }
        return nil
    }

    /// A file's bytes, whole or the part a `Range: bytes=FROM-[TO]` header asks for (206, or 416 past
    /// the end), sent in 64 KiB pieces at the tenant's pace; `cutAfter` drops the connection after
    /// that many bytes (a fault).
    static func download(_ bytes: [UInt8], type: String, range: String?, cutAfter cut: Int?, tenant: Tenant) async -> Response {
        var start = 0, end = bytes.count
        var status = HTTPResponse.Status.ok
        var headers: HTTPFields = [.contentType: type, .acceptRanges: "bytes"]
        if let range, range.hasPrefix("bytes=") {
            let spec = range.dropFirst(6).split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
            if let from = spec.first.flatMap({ Int($0) }) {
                guard from < bytes.count else {
                    return Response(status: .rangeNotSatisfiable, headers: [.contentRange: "bytes */\(bytes.count)"])
                }
                start = from
                if spec.count == 2, let to = Int(spec[1]) { end = min(bytes.count, max(from, to) + 1) }
                status = .partialContent
                headers[.contentRange] = "bytes \(start)-\(end - 1)/\(bytes.count)"
            }
        }
        let body = bytes[start..<end]
        headers[.contentLength] = String(body.count)
        let pace = await tenant.binaryPace
        return Response(status: status, headers: headers, body: ResponseBody { writer in
            await tenant.binaryDownload(started: true)
            defer { Task { await tenant.binaryDownload(started: false) } }
            var offset = body.startIndex
            let last = cut.map { min(body.endIndex, body.startIndex + $0) } ?? body.endIndex
            while offset < last {
                let next = min(last, offset + 64 * 1024)
                try await writer.write(ByteBuffer(bytes: body[offset..<next]))
                offset = next
                if let pace, offset < last { try await Task.sleep(for: pace) }
            }
            if cut != nil { throw SandboxError(detail: "download cut by fault injection") }
            try await writer.finish(nil)
        })
    }
}
