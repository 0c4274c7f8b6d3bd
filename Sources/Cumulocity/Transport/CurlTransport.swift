import CCurl
import CLinux
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// An async HTTP client over libcurl's multi interface.
///
/// One thread drives all transfers with `curl_multi_poll`; requests are queued to it and their
/// continuations resumed from it. Connections are kept in the multi handle's cache and reused.
/// Cancelling the calling task aborts the transfer. Call ``shutdown()`` when done: it fails
/// what is in flight and ends the thread.
public final class CurlTransport: Sendable {
    private struct State: ~Copyable {
        var nextID: UInt64 = 0
        var pending: [Transfer] = []
        var live: [UInt64: Transfer] = [:]
        var cancelRequests: [UInt64] = []
        var wakeRequests: [UInt64] = []
        var cancelledEarly: Set<UInt64> = []
        var stopping = false
    }

    private let multi: MultiHandle
    private let state = Mutex(State())
    private let tls: TLSConfiguration
    /// The largest response body kept; a bigger one fails the request as `.tooLarge`.
    public let maxResponseBytes: Int

    /// Whether the transport thread runs at a lower priority (nice 10): one that carries bulk
    /// transfers, which must not take the CPU from the agent's other work on a one-core device.
    private let background: Bool

    public init(tls: TLSConfiguration = .init(), maxResponseBytes: Int = 16 << 20, background: Bool = false) throws(TransportError) {
        Self.globalInit
        self.background = background
        guard let handle = curl_multi_init() else {
            throw TransportError(.network, method: "-", url: "-", detail: "curl_multi_init failed")
        }
        self.multi = MultiHandle(raw: handle)
        self.tls = tls
        self.maxResponseBytes = maxResponseBytes
        _ = sy_multi_setopt_long(handle, CURLMOPT_MAXCONNECTS, 16)
        try startLoop()
    }

    private static let globalInit: Void = { _ = curl_global_init(Int(CURL_GLOBAL_DEFAULT)) }()

    /// Sends a request and waits for the whole response.
    /// - Throws: ``TransportError`` when no response arrived (the HTTP status is never an error here).
    public func send(_ request: HTTPRequest) async throws(TransportError) -> HTTPResponse {
        try await perform(request, sink: nil)
    }

    /// Sends a request and streams a 2xx response body into `sink` (an open file descriptor) instead
    /// of memory; the returned response has an empty body (error bodies are kept, up to the usual cap).
    /// With `resumeFrom` > 0 a `Range` request continues a partial file: a 206 answer is appended at the
    /// descriptor's position; a 200 answer (range ignored) truncates the file and writes from the start.
    /// - Throws: ``TransportError`` (`.tooLarge` past `maxBytes` written in total).
    public func download(_ request: HTTPRequest, into sink: Int32, resumeFrom offset: Int64, maxBytes: Int64) async throws(TransportError) -> HTTPResponse {
        var request = request
        if offset > 0 { request.headers.append(("Range", "bytes=\(offset)-")) }
        return try await perform(request, sink: FileSink(fd: sink, offset: offset, maxBytes: maxBytes))
    }

    /// Sends a request whose body is read from `body` as it arrives (its `body` property is ignored)
    /// and hands a 2xx response body to `sink` as it arrives; neither is held in memory. Returns when
    /// the exchange is over; the response's body is empty unless the status was not 2xx. The request's
    /// `timeout` bounds the whole exchange; besides, a transfer that moves under a byte a second for two
    /// minutes fails as stalled.
    public func stream(_ request: HTTPRequest, body: (any RequestBodySource)?, into sink: any ResponseBodySink) async throws(TransportError) -> HTTPResponse {
        try await perform(request, sink: nil, streams: Streams(source: body, sink: sink))
    }

    private func perform(_ request: HTTPRequest, sink: FileSink?, streams: Streams? = nil) async throws(TransportError) -> HTTPResponse {
        let id = state.withLock { s -> UInt64 in s.nextID += 1; return s.nextID }
        do {
            return try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<HTTPResponse, any Error>) in
                    do throws(TransportError) {
                        let wake: @Sendable () -> Void = { [weak self] in self?.wake(id) }
                        let transfer = try Transfer(id: id, request: request, tls: tls, maxBody: maxResponseBytes, sink: sink,
                                                    streams: streams, wake: wake, continuation: continuation)
                        submit(transfer)
                    } catch {
                        continuation.resume(throwing: error)
                    }
                }
            } onCancel: {
                cancel(id)
            }
        } catch let error as TransportError {
            throw error
        } catch {
            throw TransportError(.network, method: request.method, url: request.url, detail: "\(error)")
        }
    }

    /// Fails every transfer in flight and stops the transport's thread.
    public func shutdown() {
        state.withLock { $0.stopping = true }
        curl_multi_wakeup(multi.raw)
    }

    private func submit(_ transfer: Transfer) {
        let accepted = state.withLock { s -> Bool in
            if s.stopping || s.cancelledEarly.remove(transfer.id) != nil { return false }
            s.pending.append(transfer)
            s.live[transfer.id] = transfer
            return true
        }
        if accepted {
            curl_multi_wakeup(multi.raw)
        } else {
            transfer.finish(.failure(transfer.error(.cancelled, "cancelled before it was sent")))
        }
    }

    private func cancel(_ id: UInt64) {
        state.withLock { s in
            if s.live[id] != nil { s.cancelRequests.append(id) } else { s.cancelledEarly.insert(id) }
        }
        curl_multi_wakeup(multi.raw)
    }

    /// Resumes a transfer paused on its body source or sink.
    private func wake(_ id: UInt64) {
        state.withLock { $0.wakeRequests.append(id) }
        curl_multi_wakeup(multi.raw)
    }

    private func startLoop() throws(TransportError) {
        var thread = pthread_t()
        let context = Unmanaged.passRetained(self).toOpaque()
        let rc = pthread_create(&thread, nil, { raw in
            guard let raw else { return nil }
            sy_set_thread_name("sy-transport")
            Unmanaged<CurlTransport>.fromOpaque(raw).takeRetainedValue().runLoop()
            return nil
        }, context)
        guard rc == 0 else {
            Unmanaged<CurlTransport>.fromOpaque(context).release()
            throw TransportError(.network, method: "-", url: "-", detail: "cannot start transport thread (\(rc))")
        }
        pthread_detach(thread)
    }

    /// The transport thread: add queued transfers, drive libcurl, complete finished ones.
    private func runLoop() {
        // Per thread on Linux: the nice value of this thread only.
        if background { _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), id_t(sy_gettid()), 10) }
        var active: [UnsafeMutableRawPointer: Transfer] = [:]
        while true {
            let (adds, cancels, wakes, stopping) = state.withLock { s in
                defer { s.pending.removeAll(); s.cancelRequests.removeAll(); s.wakeRequests.removeAll() }
                return (s.pending, s.cancelRequests, s.wakeRequests, s.stopping)
            }
            for transfer in adds {
                curl_multi_add_handle(multi.raw, transfer.easy)
                active[transfer.easy] = transfer
            }
            for id in cancels {
                guard let (easy, transfer) = active.first(where: { $0.value.id == id }) else { continue }
                complete(transfer, easy: easy, active: &active, .failure(transfer.error(.cancelled, "cancelled")))
            }
            for id in Set(wakes) {
                // A transfer that ended since is simply not there any more.
                guard let easy = active.first(where: { $0.value.id == id })?.key else { continue }
                curl_easy_pause(easy, CURLPAUSE_CONT)
            }
            if stopping {
                for (easy, transfer) in active {
                    complete(transfer, easy: easy, active: &active, .failure(transfer.error(.shutdown, "transport shut down")))
                }
                curl_multi_cleanup(multi.raw)
                return
            }
            var running: Int32 = 0
            curl_multi_perform(multi.raw, &running)
            var left: Int32 = 0
            while let message = curl_multi_info_read(multi.raw, &left) {
                guard message.pointee.msg == CURLMSG_DONE, let easy = message.pointee.easy_handle,
                      let transfer = active[easy] else { continue }
                let code = sy_msg_result(message)
                complete(transfer, easy: easy, active: &active, transfer.result(code))
            }
            // libcurl shortens the wait to its own next timeout; every request of ours wakes it
            // (curl_multi_wakeup): the long wait only means no wake-ups while nothing happens.
            curl_multi_poll(multi.raw, nil, 0, 60_000, nil)
        }
    }

    private func complete(_ transfer: Transfer, easy: UnsafeMutableRawPointer,
                          active: inout [UnsafeMutableRawPointer: Transfer],
                          _ result: Result<HTTPResponse, TransportError>) {
        curl_multi_remove_handle(multi.raw, easy)
        active[easy] = nil
        state.withLock { _ = $0.live.removeValue(forKey: transfer.id) }
        transfer.finish(result)
    }
}

/// Where a download's body goes: a file descriptor, written from `offset`, at most `maxBytes` in all.
package struct FileSink: Sendable {
    let fd: Int32
    package var offset: Int64
    let maxBytes: Int64
    var started = false
    /// Where the writeback of the file has been started up to (see ``writeBehind()``).
    var writebackStarted: Int64 = -1

    package init(fd: Int32, offset: Int64, maxBytes: Int64) {
        self.fd = fd
        self.offset = offset
        self.maxBytes = maxBytes
    }

    /// The window of write-behind: dirty pages of a download are written back in pieces of this size.
    static let window: Int64 = 8 << 20

    /// Write-behind: once a window of the file is written, its writeback starts, and the window before
    /// it is waited for and dropped from the page cache. So a 1 GiB image never holds more than two
    /// windows of dirty pages: the final fsync is short, an fsync of another file (the journal) does
    /// not wait behind a gigabyte of writeback, and the image does not push the device's memory out.
    /// Runs on the bulk transport's thread; a failure only loses the optimisation.
    package mutating func writeBehind() {
        if writebackStarted < 0 { writebackStarted = offset - offset % Self.window }
        while offset - writebackStarted >= Self.window {
            let start = writebackStarted
            _ = sy_sync_file_range(fd, start, Self.window, UInt32(SY_SYNC_FILE_RANGE_WRITE))
            if start >= Self.window {
                let previous = start - Self.window
                _ = sy_sync_file_range(fd, previous, Self.window, UInt32(SY_SYNC_FILE_RANGE_WAIT_BEFORE | SY_SYNC_FILE_RANGE_WRITE
                                                                          | SY_SYNC_FILE_RANGE_WAIT_AFTER))
                _ = posix_fadvise(fd, off_t(previous), off_t(Self.window), POSIX_FADV_DONTNEED)
            }
            writebackStarted = start + Self.window
        }
    }
}

/// The two ends of a streamed exchange.
struct Streams: Sendable {
    let source: (any RequestBodySource)?
    let sink: any ResponseBodySink
}

/// The multi handle; used only from the transport thread (and `curl_multi_wakeup`, which is thread-safe).
private struct MultiHandle: @unchecked Sendable {
    let raw: UnsafeMutableRawPointer
}
