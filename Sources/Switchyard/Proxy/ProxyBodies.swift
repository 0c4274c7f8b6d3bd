import Cumulocity

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// State behind a lock, with waiting until a condition on it holds. For the proxy's connection
/// threads (libmicrohttpd's, which may block), never for Swift tasks.
final class Monitor<State>: @unchecked Sendable {
    private var state: State
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    init(_ state: State) {
        self.state = state
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        condition.deallocate()
    }

    /// Changes the state and wakes every waiter to look again.
    func withLock<Result, Failure: Error>(_ body: (inout State) throws(Failure) -> Result) throws(Failure) -> Result {
        pthread_mutex_lock(mutex)
        defer {
            pthread_cond_broadcast(condition)
            pthread_mutex_unlock(mutex)
        }
        return try body(&state)
    }

    /// Blocks until `ready` gives a value.
    func wait<Result>(until ready: (inout State) -> Result?) -> Result {
        pthread_mutex_lock(mutex)
        defer {
            pthread_cond_broadcast(condition)
            pthread_mutex_unlock(mutex)
        }
        while true {
            if let result = ready(&state) { return result }
            pthread_cond_wait(condition, mutex)
        }
    }
}

/// Why an upload could not be kept.
enum SpoolError: Error, CustomStringConvertible {
    case tooLarge(limit: Int64)
    case storage(path: String, errno: Int32)

    var description: String {
        switch self {
        case .tooLarge(let limit): "request body larger than \(limit) bytes"
        case .storage(let path, let code): "cannot keep the request body in \(path): \(String(cString: strerror(code)))"
        }
    }
}

/// A plugin's request body as it arrives through the proxy, sent on to the tenant at the same time
/// (``RequestBodySource``) and kept until the exchange ends, so a 401 can send it once more.
/// The first 64 KiB stay in memory, the rest goes to an unlinked file in the state directory (not
/// `/tmp`, which is memory on many devices).
final class UploadSpool: RequestBodySource, @unchecked Sendable {
    static let inMemory = 64 << 10

    private struct State {
        var head: [UInt8] = []
        var file: Int32 = -1
        var received: Int64 = 0
        var complete = false
        var failure: String?
        var waiting: [@Sendable () -> Void] = []
    }

    let length: Int64?
    let directory: String
    let limit: Int64
    private let state = Monitor(State())

    /// `length`: the announced `Content-Length`, or `nil` (chunked).
    init(length: Int64?, directory: String, limit: Int64) {
        self.length = length
        self.directory = directory
        self.limit = limit
    }

    deinit {
        state.withLock { if $0.file >= 0 { close($0.file) } }
    }

    /// How many bytes have arrived so far.
    var received: Int64 { state.withLock { $0.received } }

    /// Keeps the next bytes of the body (on the connection's thread).
    func append(_ bytes: UnsafeRawBufferPointer) throws(SpoolError) {
        let waiting = try state.withLock { (s: inout State) throws(SpoolError) -> [@Sendable () -> Void] in
            guard s.received + Int64(bytes.count) <= limit else { throw .tooLarge(limit: limit) }
            var rest = bytes
            if s.head.count < Self.inMemory {
                let taken = min(rest.count, Self.inMemory - s.head.count)
                s.head.append(contentsOf: rest.prefix(taken))
                rest = UnsafeRawBufferPointer(rebasing: rest.dropFirst(taken))
            }
            if !rest.isEmpty {
                if s.file < 0 { s.file = try openUnlinkedFile() }
                var offset = s.received + Int64(bytes.count - rest.count) - Int64(Self.inMemory)
                while !rest.isEmpty {
                    let written = pwrite(s.file, rest.baseAddress, rest.count, off_t(offset))
                    if written < 0 {
                        if errno == EINTR { continue }
                        throw .storage(path: directory, errno: errno)
                    }
                    rest = UnsafeRawBufferPointer(rebasing: rest.dropFirst(written))
                    offset += Int64(written)
                }
            }
            s.received += Int64(bytes.count)
            defer { s.waiting = [] }
            return s.waiting
        }
        waiting.forEach { $0() }
    }

    /// The body is complete.
    func finish() { end(failure: nil) }

    /// The body will not be complete: readers stop with `reason`.
    func fail(_ reason: String) { end(failure: reason) }

    private func end(failure: String?) {
        let waiting = state.withLock { s -> [@Sendable () -> Void] in
            guard !s.complete && s.failure == nil else { return [] }
            if let failure { s.failure = failure } else { s.complete = true }
            defer { s.waiting = [] }
            return s.waiting
        }
        waiting.forEach { $0() }
    }

    func read(at offset: Int64, into buffer: UnsafeMutableRawBufferPointer, wake: @escaping @Sendable () -> Void) -> BodyRead {
        state.withLock { s in
            if let failure = s.failure { return .failed(failure) }
            guard offset < s.received else {
                if s.complete { return .end }
                s.waiting.append(wake)
                return .wait
            }
            let count = Int(min(Int64(buffer.count), s.received - offset))
            if offset < Int64(s.head.count) {
                let taken = min(count, s.head.count - Int(offset))
                s.head.withUnsafeBytes { head in buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: head[Int(offset)..<Int(offset) + taken])) }
                return .bytes(taken)
            }
            while true {
                let got = pread(s.file, buffer.baseAddress, count, off_t(offset - Int64(Self.inMemory)))
                if got < 0 && errno == EINTR { continue }
                guard got > 0 else { return .failed("cannot read the kept request body: \(String(cString: strerror(errno)))") }
                return .bytes(got)
            }
        }
    }

    private func openUnlinkedFile() throws(SpoolError) -> Int32 {
        var template = Array((directory + "/proxy-upload-XXXXXX").utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { name in name.baseAddress.map { mkstemp($0) } ?? -1 }
        guard fd >= 0 else { throw .storage(path: directory, errno: errno) }
        _ = template.withUnsafeBufferPointer { name in name.baseAddress.map { unlink($0) } }
        return fd
    }
}

/// The tenant's answer on its way to the plugin: its head as soon as it is known, then a 2xx body
/// through a bounded buffer (``ResponseBodySink``), read by the connection's thread. While the
/// buffer is full the transfer pauses, so a slow plugin costs no memory.
final class ProxyAnswer: ResponseBodySink, @unchecked Sendable {
    static let capacity = 256 << 10

    enum Head {
        /// A 2xx answer whose body follows through ``read(into:)``.
        case streaming(status: Int, headers: [String: String])
        /// The whole exchange is over: a bodiless or non-2xx answer, or no answer at all.
        case complete(Result<HTTPResponse, PlatformError>)
    }

    enum Read: Equatable {
        case bytes(Int)
        case end
        case failed(String)
    }

    private struct State {
        var head: (status: Int, headers: [String: String])?
        var buffer: [UInt8] = []
        var start = 0
        var outcome: Result<HTTPResponse, PlatformError>?
        var gone = false
        var wake: (@Sendable () -> Void)?

        var buffered: Int { buffer.count - start }
    }

    private let state = Monitor(State())

    func begin(status: Int, headers: [String: String]) {
        state.withLock { $0.head = (status, headers) }
    }

    func offer(_ bytes: UnsafeRawBufferPointer, wake: @escaping @Sendable () -> Void) -> BodyOffer {
        state.withLock { s in
            if s.gone { return .gone }
            guard s.buffered < Self.capacity else {
                s.wake = wake
                return .full
            }
            if s.start > Self.capacity {
                s.buffer.removeFirst(s.start)
                s.start = 0
            }
            s.buffer.append(contentsOf: bytes)
            return .taken
        }
    }

    /// The exchange is over (on the task that ran it).
    func finish(_ outcome: Result<HTTPResponse, PlatformError>) {
        state.withLock { s in if s.outcome == nil { s.outcome = outcome } }
    }

    /// Blocks until the answer's head is known.
    func waitForHead() -> Head {
        state.wait { s in
            if let head = s.head { return .streaming(status: head.status, headers: head.headers) }
            return s.outcome.map { .complete($0) }
        }
    }

    /// Blocks until body bytes, the end or a failure are there.
    func read(into buffer: UnsafeMutableRawBufferPointer) -> Read {
        let (result, wake) = state.wait { s -> (Read, (@Sendable () -> Void)?)? in
            if s.buffered > 0 {
                let count = min(buffer.count, s.buffered)
                s.buffer.withUnsafeBytes { bytes in buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[s.start..<s.start + count])) }
                s.start += count
                var wake: (@Sendable () -> Void)?
                if s.buffered <= Self.capacity / 2 {
                    wake = s.wake
                    s.wake = nil
                }
                return (.bytes(count), wake)
            }
            switch s.outcome {
            case .success?: return (.end, nil)
            case .failure(let error)?: return (.failed(error.detail), nil)
            case nil: return nil
            }
        }
        wake?()
        return result
    }

    /// The plugin is gone, or the proxy stops: the transfer stops at its next bytes (woken if it
    /// waits for room), and a thread waiting here is answered now rather than when the transfer ends
    /// (which may need a Swift task to run: not something to wait for while the proxy shuts down).
    func abandon(_ reason: String) {
        let wake = state.withLock { s -> (@Sendable () -> Void)? in
            s.gone = true
            if s.outcome == nil {
                s.outcome = .failure(.transport("proxy", "-", TransportError(.cancelled, method: "proxy", url: "-", detail: reason)))
            }
            defer { s.wake = nil }
            return s.wake
        }
        wake?()
    }
}
