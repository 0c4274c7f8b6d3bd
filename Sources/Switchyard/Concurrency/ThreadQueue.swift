#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Threads of the agent's own, outside Swift's cooperative pool, working through one FIFO queue of
/// closures. On a one-core gateway the cooperative pool has a single thread: a blocking call there
/// (an fsync on slow flash, hashing a 2 GiB image) would stop Bayeux, the outbox and dispatch with it.
/// Such work goes here instead: ``BlockingPool`` (two threads, for hashing and other long blocking
/// calls). A serial executor for durable storage can be built on it, one per agent (a process-wide
/// one serialised the fsyncs of every agent a test process runs at once).
final class ThreadQueue: @unchecked Sendable {
    // The queue and its lock live at fixed addresses (pthread objects must not move).
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var jobs: [() -> Void] = []
    private var head = 0

    /// Starts `threads` threads (unnamed: Glibc's module map does not export pthread_setname_np).
    init(threads: Int) {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
        for _ in 0..<threads {
            let box = Unmanaged.passRetained(self)
            var thread = pthread_t()
            let started = pthread_create(&thread, nil, { context in
                guard let context else { return nil }
                let queue = Unmanaged<ThreadQueue>.fromOpaque(context).takeRetainedValue()
                queue.work()
                return nil
            }, box.toOpaque())
            if started == 0 {
                pthread_detach(thread)
            } else {
                box.release()
            }
        }
    }

    /// Runs `job` on one of the threads, after the jobs queued before it.
    func submit(_ job: @escaping () -> Void) {
        pthread_mutex_lock(mutex)
        jobs.append(job)
        pthread_cond_signal(condition)
        pthread_mutex_unlock(mutex)
    }

    /// A thread's life: take the oldest job, run it, forever (the queues live as long as the process).
    private func work() {
        while true {
            pthread_mutex_lock(mutex)
            while head == jobs.count { pthread_cond_wait(condition, mutex) }
            let job = jobs[head]
            head += 1
            if head > 1024 && head * 2 > jobs.count {
                jobs.removeFirst(head)
                head = 0
            }
            pthread_mutex_unlock(mutex)
            job()
        }
    }
}

/// Two threads for long blocking calls (hashing an image, a large copy) that would otherwise hold a
/// thread of the cooperative pool for seconds.
enum BlockingPool {
    private static let queue = ThreadQueue(threads: 2)

    /// Runs `body` on a blocking-pool thread and returns its result to the caller's executor.
    static func run<T: Sendable, Failure: Error>(_ body: @escaping @Sendable () throws(Failure) -> T) async throws(Failure) -> T {
        let result: Result<T, Failure> = await withCheckedContinuation { continuation in
            queue.submit { continuation.resume(returning: Result(catching: body)) }
        }
        return try result.get()
    }
}
