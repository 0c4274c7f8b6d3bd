import CCurl
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// One request in flight. Created on the caller's task, then touched only by the transport thread.
final class Transfer: @unchecked Sendable {
    let id: UInt64
    let easy: UnsafeMutableRawPointer
    let method: String
    let url: String
    let maxBody: Int
    private var headerList: UnsafeMutablePointer<curl_slist>?
    private let errorBuffer: UnsafeMutablePointer<CChar> = {
        let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
        buffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
        return buffer
    }()
    private var continuation: CheckedContinuation<HTTPResponse, any Error>?
    var body: [UInt8] = []
    var headers: [String: String] = [:]
    var overflowed = false
    var sink: FileSink?
    var sinkFailure: Int32 = 0
    let streams: Streams?
    let wake: @Sendable () -> Void
    /// The next byte of the streamed request body to send.
    var readOffset: Int64 = 0
    var streamBegun = false
    var streamProblem: String?

    init(id: UInt64, request: HTTPRequest, tls: TLSConfiguration, maxBody: Int, sink: FileSink?, streams: Streams?,
         wake: @escaping @Sendable () -> Void, continuation: CheckedContinuation<HTTPResponse, any Error>) throws(TransportError) {
        guard let easy = curl_easy_init() else {
            throw TransportError(.network, method: request.method, url: request.url, detail: "curl_easy_init failed")
        }
        self.id = id
        self.easy = easy
        self.method = request.method
        self.url = request.url
        self.maxBody = maxBody
        self.sink = sink
        self.streams = streams
        self.wake = wake
        self.continuation = continuation
        configure(request, tls: tls)
    }

    deinit {
        curl_easy_cleanup(easy)
        if let headerList { curl_slist_free_all(headerList) }
        errorBuffer.deallocate()
    }

    private func configure(_ request: HTTPRequest, tls: TLSConfiguration) {
        _ = sy_setopt_string(easy, CURLOPT_URL, request.url)
        _ = sy_setopt_long(easy, CURLOPT_NOSIGNAL, 1)
        _ = sy_setopt_long(easy, CURLOPT_TCP_KEEPALIVE, 1)
        _ = sy_setopt_long(easy, CURLOPT_TIMEOUT_MS, Int(request.timeout.milliseconds))
        _ = sy_setopt_long(easy, CURLOPT_CONNECTTIMEOUT_MS, Int(min(request.timeout, .seconds(15)).milliseconds))
        _ = sy_setopt_long(easy, CURLOPT_SSL_VERIFYPEER, tls.insecure ? 0 : 1)
        _ = sy_setopt_long(easy, CURLOPT_SSL_VERIFYHOST, tls.insecure ? 0 : 2)
        if let client = request.clientCertificate ?? tls.clientCertificate {
            _ = sy_setopt_string(easy, CURLOPT_SSLCERT, client.certificateFile)
            _ = sy_setopt_string(easy, CURLOPT_SSLCERTTYPE, "PEM")
            _ = sy_setopt_string(easy, CURLOPT_SSLKEY, client.keyFile)
            _ = sy_setopt_string(easy, CURLOPT_SSLKEYTYPE, "PEM")
        }
        if request.clientCertificate != nil {
            // A request naming its own certificate (a token request) gets a connection of its own,
            // so a rotated certificate is used at once.
            _ = sy_setopt_long(easy, CURLOPT_FRESH_CONNECT, 1)
            _ = sy_setopt_long(easy, CURLOPT_FORBID_REUSE, 1)
        }
        _ = sy_setopt_long(easy, CURLOPT_FOLLOWLOCATION, 0)
        if let caFile = tls.caFile { _ = sy_setopt_string(easy, CURLOPT_CAINFO, caFile) }
        _ = sy_setopt_string(easy, CURLOPT_ACCEPT_ENCODING, "")
        _ = sy_setopt_string(easy, CURLOPT_CUSTOMREQUEST, request.method)
        _ = sy_setopt_pointer(easy, CURLOPT_ERRORBUFFER, errorBuffer)

        let me = Unmanaged.passUnretained(self).toOpaque()
        if streams != nil {
            // A stall is noticed: under a byte a second for two minutes fails the transfer (time
            // paused on the sink does not count; time waiting on the source does).
            _ = sy_setopt_long(easy, CURLOPT_LOW_SPEED_LIMIT, 1)
            _ = sy_setopt_long(easy, CURLOPT_LOW_SPEED_TIME, 120)
        }
        if let source = streams?.source {
            configureUpload(source, context: me)
        } else if let body = request.body {
            _ = sy_setopt_off(easy, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(body.count))
            if body.isEmpty {
                _ = sy_setopt_string(easy, CURLOPT_COPYPOSTFIELDS, "")
            } else {
                body.withUnsafeBytes { _ = sy_setopt_pointer(easy, CURLOPT_COPYPOSTFIELDS, UnsafeMutableRawPointer(mutating: $0.baseAddress)) }
            }
        } else if request.method == "GET" {
            _ = sy_setopt_long(easy, CURLOPT_HTTPGET, 1)
        } else if request.method == "HEAD" {
            _ = sy_setopt_long(easy, CURLOPT_NOBODY, 1)
        }

        for header in request.headers + [("Expect", "")] {
            headerList = curl_slist_append(headerList, "\(header.0): \(header.1)")
        }
        _ = sy_setopt_slist(easy, CURLOPT_HTTPHEADER, headerList)

        _ = sy_setopt_callback(easy, CURLOPT_WRITEFUNCTION) { pointer, size, count, context in
            guard let pointer, let context else { return 0 }
            let transfer = Unmanaged<Transfer>.fromOpaque(context).takeUnretainedValue()
            let length = size * count
            // A 2xx body goes to the stream or the download's file when there is one; the rest to memory.
            if transfer.streams != nil || transfer.sink != nil, let status = transfer.successStatus {
                if let stream = transfer.streams?.sink {
                    return transfer.offer(UnsafeRawBufferPointer(start: pointer, count: length), to: stream, status: status)
                }
                return transfer.writeToSink(UnsafeRawPointer(pointer), length, status: status) ? length : 0
            }
            if transfer.body.count + length > transfer.maxBody {
                transfer.overflowed = true
                return 0
            }
            pointer.withMemoryRebound(to: UInt8.self, capacity: length) {
                transfer.body.append(contentsOf: UnsafeBufferPointer(start: $0, count: length))
            }
            return length
        }
        _ = sy_setopt_pointer(easy, CURLOPT_WRITEDATA, me)
        _ = sy_setopt_callback(easy, CURLOPT_HEADERFUNCTION) { pointer, size, count, context in
            guard let pointer, let context else { return 0 }
            let transfer = Unmanaged<Transfer>.fromOpaque(context).takeUnretainedValue()
            let length = size * count
            let line = pointer.withMemoryRebound(to: UInt8.self, capacity: length) {
                String(decoding: UnsafeBufferPointer(start: $0, count: length), as: UTF8.self)
            }
            transfer.takeHeaderLine(line)
            return length
        }
        _ = sy_setopt_pointer(easy, CURLOPT_HEADERDATA, me)
    }

    /// The request body comes from `source` as it arrives: read without blocking, paused while it has
    /// nothing, and read again from the start when libcurl must resend it on a new connection.
    private func configureUpload(_ source: any RequestBodySource, context: UnsafeMutableRawPointer) {
        _ = sy_setopt_long(easy, CURLOPT_POST, 1)
        _ = sy_setopt_off(easy, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(source.length ?? -1))
        _ = sy_setopt_callback(easy, CURLOPT_READFUNCTION) { pointer, size, count, context in
            guard let pointer, let context else { return Int(CURL_READFUNC_ABORT) }
            let transfer = Unmanaged<Transfer>.fromOpaque(context).takeUnretainedValue()
            guard let source = transfer.streams?.source else { return Int(CURL_READFUNC_ABORT) }
            switch source.read(at: transfer.readOffset, into: UnsafeMutableRawBufferPointer(start: pointer, count: size * count),
                               wake: transfer.wake) {
            case .bytes(let length):
                transfer.readOffset += Int64(length)
                return length
            case .end: return 0
            case .wait: return Int(CURL_READFUNC_PAUSE)
            case .failed(let reason):
                transfer.streamProblem = reason
                return Int(CURL_READFUNC_ABORT)
            }
        }
        _ = sy_setopt_pointer(easy, CURLOPT_READDATA, context)
        _ = sy_setopt_seek_callback(easy) { context, offset, origin in
            guard let context, origin == SEEK_SET, offset >= 0 else { return CURL_SEEKFUNC_CANTSEEK }
            Unmanaged<Transfer>.fromOpaque(context).takeUnretainedValue().readOffset = Int64(offset)
            return CURL_SEEKFUNC_OK
        }
        _ = sy_setopt_pointer(easy, CURLOPT_SEEKDATA, context)
    }

    /// The response's status when it is a 2xx one.
    var successStatus: Int? {
        var status = 0
        _ = sy_getinfo_long(easy, CURLINFO_RESPONSE_CODE, &status)
        return (200..<300).contains(status) ? status : nil
    }

    /// Hands body bytes to the stream's sink, telling it the head first; the write callback's answer.
    func offer(_ bytes: UnsafeRawBufferPointer, to stream: any ResponseBodySink, status: Int) -> Int {
        if !streamBegun {
            streamBegun = true
            stream.begin(status: status, headers: headers)
        }
        switch stream.offer(bytes, wake: wake) {
        case .taken: return bytes.count
        case .full: return Int(CURL_WRITEFUNC_PAUSE)
        case .gone:
            streamProblem = "the reader of the response went away"
            return 0
        }
    }

    /// Writes body bytes to the download's file; `false` stops the transfer (cap reached, write error).
    func writeToSink(_ bytes: UnsafeRawPointer, _ length: Int, status: Int) -> Bool {
        guard var sink else { return false }
        if !sink.started {
            sink.started = true
            if status != 206 && sink.offset > 0 {
                // The server sent the whole file: start again from nothing.
                _ = ftruncate(sink.fd, 0)
                _ = lseek(sink.fd, 0, SEEK_SET)
                sink.offset = 0
            }
        }
        guard sink.offset + Int64(length) <= sink.maxBytes else {
            overflowed = true
            self.sink = sink
            return false
        }
        var done = 0
        while done < length {
            let written = write(sink.fd, bytes + done, length - done)
            if written < 0 {
                if errno == EINTR { continue }
                sinkFailure = errno
                self.sink = sink
                return false
            }
            done += written
        }
        sink.offset += Int64(length)
        sink.writeBehind()
        self.sink = sink
        return true
    }

    func takeHeaderLine(_ line: String) {
        if line.hasPrefix("HTTP/") {
            headers.removeAll()  // a new response (after 100-continue or a redirect)
            return
        }
        guard let colon = line.firstIndex(of: ":") else { return }
        let name = line[..<colon].lowercased()
        let value = line[line.index(after: colon)...].trimmingCharacters(in: " \t\r\n")
        headers[name] = value
    }

    func error(_ code: TransportError.Code, _ detail: String, file: String = #fileID, line: Int = #line) -> TransportError {
        TransportError(code, method: method, url: url, detail: detail, file: file, line: line)
    }

    func result(_ code: CURLcode) -> Result<HTTPResponse, TransportError> {
        if code == CURLE_OK {
            var status = 0
            _ = sy_getinfo_long(easy, CURLINFO_RESPONSE_CODE, &status)
            return .success(HTTPResponse(status: status, headers: headers, body: body))
        }
        if overflowed {
            let limit = sink.map { "\($0.maxBytes)" } ?? "\(maxBody)"
            return .failure(error(.tooLarge, "response body larger than \(limit) bytes"))
        }
        if let streamProblem { return .failure(error(.cancelled, streamProblem)) }
        if sinkFailure != 0 { return .failure(error(.network, "cannot write the download: \(String(cString: strerror(sinkFailure)))")) }
        let detail = String(cString: errorBuffer)
        let text = detail.isEmpty ? String(cString: curl_easy_strerror(code)) : detail
        let kind: TransportError.Code = code == CURLE_OPERATION_TIMEDOUT ? .timeout : .network
        return .failure(error(kind, text))
    }

    func finish(_ result: Result<HTTPResponse, TransportError>) {
        guard let continuation else { return }
        self.continuation = nil
        continuation.resume(with: result.mapError { $0 as any Error })
    }
}
