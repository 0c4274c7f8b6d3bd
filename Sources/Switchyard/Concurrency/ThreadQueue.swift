import CLinux
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Starts a detached thread named `name` (`top -H`, `/proc/PID/task/*/comm`) that runs `body`;
/// `false` when the system refuses one.
@discardableResult
func startThread(named name: String, _ body: @escaping () -> Void) -> Bool {
    final class Start {
        let name: String
        let body: () -> Void
        init(name: String, body: @escaping () -> Void) { self.name = name; self.body = body }
    }
    let box = Unmanaged.passRetained(Start(name: name, body: body))
    var thread = pthread_t()
    let created = pthread_create(&thread, nil, { context in
        guard let context else { return nil }
        let start = Unmanaged<Start>.fromOpaque(context).takeRetainedValue()
        sy_set_thread_name(start.name)
        start.body()
        return nil
    }, box.toOpaque())
    guard created == 0 else {
        box.release()
        return false
    }
    pthread_detach(thread)
    return true
}

/// Threads of the agent's own, outside Swift's cooperative pool, working through one FIFO queue of
/// closures. On a one-core gateway the cooperative pool has a single thread: a blocking call there
/// (an fsync on slow flash, hashing a 2 GiB image) would stop Bayeux, the outbox and dispatch with it.
/// Such work goes here instead: ``BlockingPool`` (two threads, for hashing and other long blocking
/// calls) and each agent's ``StorageThread`` (one thread, for the journal's and the outbox's writes
/// and fsyncs).
final class ThreadQueue: @unchecked Sendable {
    // The queue and its lock live at fixed addresses (pthread objects must not move).
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    /// Queued jobs from `head` on; a taken job's slot is emptied at once, so that what its closure
    /// holds (a record's bytes, a set of ids) is freed when it has run, not when the array is trimmed.
    private var jobs: [(() -> Void)?] = []
    private var head = 0
    /// ``finish()`` was called: the threads end once the queue is empty.
    private var finishing = false

    /// The nice value of the threads (0: as the process; 10: background work that must not take the
    /// CPU from the agent's other threads on a one-core device).
    private let nice: Int32

    /// The name its threads carry (`top -H`, `/proc/PID/task/*/comm`).
    private let name: String

    /// Starts `threads` threads named `name`.
    init(threads: Int, nice: Int32 = 0, name: String) {
        self.nice = nice
        self.name = name
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
        for _ in 0..<threads {
            startThread(named: name) { [self] in
                // Per thread on Linux: the nice value of this thread only.
                if self.nice != 0 { _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), id_t(sy_gettid()), self.nice) }
                self.work()
            }
        }
    }

    /// Runs `body` on one of the threads and returns its result to the caller's executor.
    func run<T: Sendable, Failure: Error>(_ body: @escaping @Sendable () throws(Failure) -> T) async throws(Failure) -> T {
        let result: Result<T, Failure> = await withCheckedContinuation { continuation in
            submit { continuation.resume(returning: Result(catching: body)) }
        }
        return try result.get()
    }

    /// Runs `job` on one of the threads, after the jobs queued before it.
    func submit(_ job: @escaping () -> Void) {
        pthread_mutex_lock(mutex)
        jobs.append(job)
        pthread_cond_signal(condition)
        pthread_mutex_unlock(mutex)
    }

    /// Lets the threads end once the jobs queued so far have run (a job submitted later still runs,
    /// on the last thread to leave).
    func finish() {
        pthread_mutex_lock(mutex)
        finishing = true
        pthread_cond_broadcast(condition)
        pthread_mutex_unlock(mutex)
    }

    /// A thread's life: take the oldest job, run it, until ``finish()`` and an empty queue.
    private func work() {
        while true {
            pthread_mutex_lock(mutex)
            while head == jobs.count && !finishing { pthread_cond_wait(condition, mutex) }
            if head == jobs.count {
                pthread_mutex_unlock(mutex)
                return
            }
            let job = jobs[head]
            jobs[head] = nil
            head += 1
            if head == jobs.count {
                jobs.removeAll(keepingCapacity: jobs.capacity <= 1024)
                head = 0
            } else if head > 1024 && head * 2 > jobs.count {
                jobs.removeFirst(head)
                head = 0
            }
            pthread_mutex_unlock(mutex)
            job?()
        }
    }
}

/// The thread an agent's durable storage writes and syncs on (``RecordLog``), so that an fsync on
/// slow flash never holds a thread of the cooperative pool; and the count of those syncs, the cost
/// of durability (docs/architecture.md, "Durable state").
public final class StorageThread: Sendable {
    let queue = ThreadQueue(threads: 1, name: "sy-storage")
    private let syncCount = Atomic<Int>(0)

    public init() {}

    /// fsyncs done on this thread since it started.
    public var syncs: Int { syncCount.load(ordering: .relaxed) }

    /// fsyncs `fd`; counted.
    func sync(_ fd: Int32) -> Bool {
        syncCount.add(1, ordering: .relaxed)
        return fsync(fd) == 0
    }

    /// Returns once everything queued before the call has run (records posted without a wait included).
    func drain() async { await queue.run {} }

    /// Ends the thread once what was queued has been written.
    public func finish() { queue.finish() }

    deinit { queue.finish() }
}

/// Two threads for long blocking calls (hashing an image, a large copy) that would otherwise hold a
/// thread of the cooperative pool for seconds; at nice 10, so that on one CPU they yield to the
/// agent's other threads.
enum BlockingPool {
    private static let queue = ThreadQueue(threads: 2, nice: 10, name: "sy-blocking")

    /// Runs `body` on a blocking-pool thread and returns its result to the caller's executor.
    static func run<T: Sendable, Failure: Error>(_ body: @escaping @Sendable () throws(Failure) -> T) async throws(Failure) -> T {
        try await queue.run(body)
    }
}

/// The thread that appends to operation logs (plugins' output, the agent's notes in them), in the
/// order the appends were asked for: a write the kernel stalls (dirty-page throttling while a large
/// image is written) holds this thread, never one of the cooperative pool. What one run can queue is
/// bounded by the log's size limit.
enum LogWriter {
    private static let queue = ThreadQueue(threads: 1, name: "sy-log-writer")

    /// Appends `bytes` to the open file `fd`.
    static func append(_ bytes: [UInt8], to fd: Int32) {
        guard fd >= 0, !bytes.isEmpty else { return }
        queue.submit {
            var done = 0
            while done < bytes.count {
                let written = bytes.withUnsafeBytes { all in
                    let rest = UnsafeRawBufferPointer(rebasing: all[done...])
                    return write(fd, rest.baseAddress, rest.count)
                }
                if written < 0 && errno == EINTR { continue }
                guard written > 0 else { return }
                done += written
            }
        }
    }

    /// Appends one line to the file at `path` (created 0600), opened and closed on the writer's thread.
    static func append(line: String, to path: String) {
        let bytes = Array((line + "\n").utf8)
        queue.submit {
            let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
            guard fd >= 0 else { return }
            _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            close(fd)
        }
    }

    /// Closes `fd` once what was queued for it is written.
    static func closeFile(_ fd: Int32) {
        guard fd >= 0 else { return }
        queue.submit { _ = close(fd) }
    }

    /// Returns once every append asked for before it is in its file (a caller that must not wait
    /// long bounds it with ``withTimeLimit(_:deadlines:onTimeout:_:)``).
    static func flush() async {
        // Resumed once: by the writer when it gets here, or at once when the task is cancelled. The
        // waiter is an object: the writer may reach it after this call has returned.
        let waiter = FlushWaiter()
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                waiter.set(continuation)
                if Task.isCancelled { waiter.resume() } else { queue.submit { waiter.resume() } }
            }
        } onCancel: {
            waiter.resume()
        }
    }

    /// A continuation that is resumed at most once, by whichever side comes first.
    private final class FlushWaiter: Sendable {
        private let slot = Mutex<(continuation: CheckedContinuation<Void, Never>?, done: Bool)>((nil, false))

        func set(_ continuation: CheckedContinuation<Void, Never>) {
            let resumeNow = slot.withLock { state -> Bool in
                if state.done { return true }
                state.continuation = continuation
                return false
            }
            if resumeNow { continuation.resume() }
        }

        func resume() {
            slot.withLock { state -> CheckedContinuation<Void, Never>? in
                state.done = true
                return state.continuation.take()
            }?.resume()
        }
    }
}
