import JSONSupport
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// An append-only file of JSON lines, written on the agent's ``StorageThread`` with group commit:
/// the records queued while one write and fsync run go out together in the next, so a burst of
/// operations shares its syncs instead of paying one each.
///
/// A record is *durable* (the caller waits until it has been fsynced) or *written* (the caller waits
/// until it is in the file: it survives a crash of the process, not a power cut). Records reach the
/// file in the order they were queued.
///
/// Torn writes: a batch that cannot be written whole (a full disk) is cut off again and every record
/// of it fails; when even the cut fails, the next batch starts on a new line, so a torn record never
/// swallows the one after it. A torn last line (a power cut mid-write) is skipped when the file is
/// read (``read(_:)``).
final class RecordLog: Sendable {
    /// What a record waits for.
    enum Wait { case written, durable }

    private struct Pending {
        var bytes: [UInt8]
        var durable: Bool
        var done: @Sendable (Result<Void, FileSystemError>) -> Void
        /// The whole file replaced by these bytes (a compaction): the records queued before it are in them.
        var replaces = false
    }

    private struct Queue {
        var pending: [Pending] = []
        var scheduled = false
    }

    /// The open file: touched on the storage thread only.
    private final class File: @unchecked Sendable {
        var fd: Int32
        /// The length up to the end of the last whole record.
        var length: Int
        /// A write failed and could not be cut off: the next record starts with a newline.
        var torn: Bool

        init(fd: Int32, length: Int, torn: Bool) {
            self.fd = fd
            self.length = length
            self.torn = torn
        }

        deinit { if fd >= 0 { close(fd) } }
    }

    let path: String
    private let thread: StorageThread
    private let queue = Mutex(Queue())
    private let file: File

    /// Opens `path` for appending, creating it (mode 0600) when it does not exist; `torn` when it
    /// does not end with a newline. Call on the storage thread or at start-up.
    init(path: String, thread: StorageThread) throws(FileSystemError) {
        let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw FileSystemError(operation: "open", path: path, code: errno) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            let code = errno
            close(fd)
            throw FileSystemError(operation: "stat", path: path, code: code)
        }
        var torn = false
        if info.st_size > 0 {
            var last: UInt8 = 0
            let reader = Glibc.open(path, O_RDONLY | O_CLOEXEC)
            if reader >= 0 {
                if pread(reader, &last, 1, off_t(info.st_size - 1)) == 1 { torn = last != UInt8(ascii: "\n") }
                close(reader)
            }
        }
        self.path = path
        self.thread = thread
        self.file = File(fd: fd, length: Int(info.st_size), torn: torn)
    }

    /// Reads the file's records; lines that are not JSON (a torn write) are counted, not returned.
    static func read(_ path: String) throws(FileSystemError) -> (records: [JSONValue], damaged: Int) {
        guard let bytes = try FileSystem.read(path) else { return ([], 0) }
        var records: [JSONValue] = []
        var damaged = 0
        for line in bytes.split(separator: UInt8(ascii: "\n")) where !line.isEmpty {
            if let record = try? JSONValue.parse(line), case .object = record {
                records.append(record)
            } else {
                damaged += 1
            }
        }
        return (records, damaged)
    }

    /// The file's length up to its last whole record (approximate while a write is under way).
    var length: Int { file.length }

    /// Queues one record; the returned ticket tells when it is written (or durable, as `wait` says).
    /// The record is queued before this returns, so records reach the file in the order of these calls.
    func append(_ record: JSONValue, wait: Wait) -> Ticket {
        submit(Self.lines([record]), durable: wait == .durable, replaces: false)
    }

    /// Queues `record` to be written (not synced) without waiting for it: for a record whose loss costs
    /// only a request sent once more (an acknowledgement). It is written in order with the others;
    /// `onFailure` is told if the write fails. The caller's task is not woken when it is done: in a
    /// burst that is one round trip to the storage thread less per record.
    func post(_ record: JSONValue, onFailure: @escaping @Sendable (FileSystemError) -> Void) {
        submit(Self.lines([record]), durable: false, replaces: false) { result in
            if case .failure(let error) = result { onFailure(error) }
        }
    }

    /// Queues the replacement of the whole file, atomically and durably, by `records` (a compaction).
    /// The records appended before this call must be among them; those appended after it follow in
    /// the new file.
    func replace(with records: [JSONValue]) -> Ticket {
        submit(Self.lines(records), durable: true, replaces: true)
    }

    /// Replaces the file at `path` by `records`, atomically and durably (two fsyncs, counted by
    /// `thread`): a compaction when the file is opened, before any ``RecordLog`` appends to it.
    static func rewrite(_ path: String, with records: [JSONValue], thread: StorageThread) throws(FileSystemError) {
        try FileSystem.writeAtomically(path, lines(records), mode: 0o600, sync: thread.sync)
    }

    /// Records as the file holds them: one JSON object a line.
    private static func lines(_ records: [JSONValue]) -> [UInt8] {
        var bytes: [UInt8] = []
        for record in records { bytes += record.encoded() + [UInt8(ascii: "\n")] }
        return bytes
    }

    private func submit(_ bytes: [UInt8], durable: Bool, replaces: Bool) -> Ticket {
        let ticket = Ticket()
        submit(bytes, durable: durable, replaces: replaces, done: ticket.complete)
        return ticket
    }

    private func submit(_ bytes: [UInt8], durable: Bool, replaces: Bool,
                        done: @escaping @Sendable (Result<Void, FileSystemError>) -> Void) {
        let pending = Pending(bytes: bytes, durable: durable, done: done, replaces: replaces)
        let schedule = queue.withLock { queue -> Bool in
            queue.pending.append(pending)
            if queue.scheduled { return false }
            queue.scheduled = true
            return true
        }
        if schedule { thread.queue.submit { self.flush() } }
    }

    /// The outcome of one queued record, awaited by the one who queued it.
    final class Ticket: Sendable {
        private struct State {
            var result: Result<Void, FileSystemError>?
            var waiter: CheckedContinuation<Result<Void, FileSystemError>, Never>?
        }

        private let state = Mutex(State())

        fileprivate func complete(_ result: Result<Void, FileSystemError>) {
            let waiter = state.withLock { state -> CheckedContinuation<Result<Void, FileSystemError>, Never>? in
                state.result = result
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume(returning: result)
        }

        /// Waits until the record is written (or durable); throws what the write or sync failed with.
        func value() async throws(FileSystemError) {
            let result: Result<Void, FileSystemError> = await withCheckedContinuation { continuation in
                let ready = state.withLock { state -> Result<Void, FileSystemError>? in
                    if state.result == nil { state.waiter = continuation }
                    return state.result
                }
                if let ready { continuation.resume(returning: ready) }
            }
            try result.get()
        }
    }

    /// On the storage thread: writes everything queued as one batch (one write, at most one fsync;
    /// a replacement in the batch drops the appends before it, which it contains).
    private func flush() {
        let batch = queue.withLock { queue -> [Pending] in
            let batch = queue.pending
            queue.pending = []
            queue.scheduled = false
            return batch
        }
        var appends: [Pending] = []
        for item in batch {
            guard item.replaces else {
                appends.append(item)
                continue
            }
            switch rewrite(item.bytes) {
            case .success:
                for earlier in appends { earlier.done(.success(())) }
                item.done(.success(()))
            case .failure(let error):
                // The old file stays: what was queued before goes on being appended to it.
                write(appends)
                item.done(.failure(error))
            }
            appends = []
        }
        write(appends)
    }

    /// Appends a batch: all written (and fsynced when one of them asks for it), or all failed and cut off.
    private func write(_ batch: [Pending]) {
        guard !batch.isEmpty else { return }
        var bytes: [UInt8] = file.torn ? [UInt8(ascii: "\n")] : []
        for item in batch { bytes += item.bytes }
        var result: Result<Void, FileSystemError> = .success(())
        do throws(FileSystemError) {
            try FileSystem.writeAll(file.fd, bytes, path: path)
            if batch.contains(where: \.durable), !thread.sync(file.fd) {
                throw FileSystemError(operation: "fsync", path: path, code: errno)
            }
            file.length += bytes.count
            file.torn = false
        } catch {
            // Cut the partial batch off, so the next one does not glue to it (a file that already
            // ended in a torn record stays marked: the next record still needs its newline).
            if ftruncate(file.fd, off_t(file.length)) != 0 { file.torn = true }
            result = .failure(error)
        }
        for item in batch { item.done(result) }
    }

    /// Writes `bytes` to a new file and renames it over the old one (two fsyncs), then appends to it.
    private func rewrite(_ bytes: [UInt8]) -> Result<Void, FileSystemError> {
        do throws(FileSystemError) {
            try FileSystem.writeAtomically(path, bytes, mode: 0o600, sync: thread.sync)
            let fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC)
            guard fd >= 0 else { throw FileSystemError(operation: "open", path: path, code: errno) }
            close(file.fd)
            file.fd = fd
            file.length = bytes.count
            file.torn = false
            return .success(())
        } catch {
            return .failure(error)
        }
    }
}
