/// A request body the transport sends while it is still arriving (the plugin proxy's uploads).
///
/// The transport's thread reads it and must never block: when no bytes are there yet the source
/// answers `.wait`, keeps `wake` and calls it once more bytes (or the end) arrive. A source can be
/// read again from any offset, so a request refused with 401 can be sent once more.
public protocol RequestBodySource: AnyObject, Sendable {
    /// The body's length when known in advance (sent as `Content-Length`); `nil` sends it chunked.
    var length: Int64? { get }
    /// Copies up to `buffer.count` bytes from `offset` into `buffer`.
    func read(at offset: Int64, into buffer: UnsafeMutableRawBufferPointer, wake: @escaping @Sendable () -> Void) -> BodyRead
}

public enum BodyRead: Sendable, Equatable {
    /// This many bytes were copied (more than zero).
    case bytes(Int)
    /// Nothing yet: `wake` will be called.
    case wait
    /// The body is complete.
    case end
    /// The body cannot be completed (the sender left, the spool is full): the request is abandoned.
    case failed(String)
}

/// Where a 2xx response body goes as it arrives, instead of memory (the plugin proxy's downloads).
/// Other statuses keep their (small) body in the response as usual, so a 401 can still be retried.
///
/// Called on the transport's thread, which must never block: a full sink answers `.full`, keeps
/// `wake` and calls it when there is room again; the same bytes are offered again then.
public protocol ResponseBodySink: AnyObject, Sendable {
    /// The status and headers (names lower-cased), once, before the first bytes.
    func begin(status: Int, headers: [String: String])
    /// Takes all of `bytes` or none of them.
    func offer(_ bytes: UnsafeRawBufferPointer, wake: @escaping @Sendable () -> Void) -> BodyOffer
}

public enum BodyOffer: Sendable, Equatable {
    case taken
    /// No room: `wake` will be called.
    case full
    /// The reader went away: the transfer is stopped.
    case gone
}
