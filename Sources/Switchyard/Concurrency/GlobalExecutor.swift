@_spi(ExperimentalScheduling) @_spi(ExperimentalCustomExecutors) import _Concurrency
import CLinux

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Swift concurrency's global executor for the agent's process: one worker thread per CPU the
/// process may use, with timers of its own, in place of libdispatch's pool.
///
/// Why: on Linux, libdispatch's pool starts a monitor when its first worker thread starts
/// (`_dispatch_workq_init_once`): a timer that fires every second for the life of the process, to
/// see whether the pool's threads are blocked. An agent that has nothing to do woke once a second for
/// it (docs/performance.md, "Idle wake-ups"). This pool wakes only for work: a job, or the deadline
/// of a `Task.sleep`.
///
/// What it keeps of libdispatch's monitor: a job that blocks its thread (which the agent's rules
/// forbid, but a bug might do) would stop a one-thread pool for good. While the pool has work,
/// its own monitor looks once a second; when jobs wait and none started since the last look, it
/// adds a thread (at most ``maximumThreads``). While the pool is idle the monitor waits untimed.
///
/// Installed by `switchyard` at start (``install(environment:)``), before the first task is enqueued; the
/// runtime's hooks (`swift_task_enqueueGlobal_hook` and the delay and deadline ones) hand it every
/// job that would have gone to libdispatch. Jobs run in the order they arrive (priorities are not
/// kept apart: the agent's tasks all have the same one). `SWITCHYARD_EXECUTOR=dispatch` keeps
/// libdispatch's pool.
public enum GlobalExecutor {
    /// The process's pool, once ``install(environment:)`` succeeded.
    private(set) nonisolated(unsafe) static var shared: WorkerPool?

    /// Installs the pool as the global executor. Call it first thing in `main`, before any task
    /// exists. `false` when the hooks were taken already (by another library) or `SWITCHYARD_EXECUTOR`
    /// is `dispatch`.
    @discardableResult
    public static func install(environment: [String: String]) -> Bool {
        guard shared == nil, environment["SWITCHYARD_EXECUTOR"] != "dispatch" else { return false }
        let pool = WorkerPool(threads: Int(sy_cpu_count()))
        typealias Global = @convention(thin) (UnownedJob, @convention(thin) (UnownedJob) -> Void) -> Void
        typealias Delay = @convention(thin) (UInt64, UnownedJob, @convention(thin) (UInt64, UnownedJob) -> Void) -> Void
        typealias Deadline = @convention(thin) (Int64, Int64, Int64, Int64, Int32, UnownedJob,
                                                @convention(thin) (Int64, Int64, Int64, Int64, Int32, UnownedJob) -> Void) -> Void
        let global: Global = { job, _ in GlobalExecutor.shared?.submit(job, due: nil, global: true) }
        let delay: Delay = { nanoseconds, job, _ in GlobalExecutor.shared?.submit(job, due: WorkerPool.due(in: nanoseconds), global: true) }
        let deadline: Deadline = { seconds, nanoseconds, _, _, clock, job, _ in
            GlobalExecutor.shared?.submit(job, due: WorkerPool.due(seconds: seconds, nanoseconds: nanoseconds, clock: clock), global: true)
        }
        shared = pool
        let installed = sy_install_global_executor_hooks(unsafeBitCast(global, to: UnsafeMutableRawPointer.self),
                                                         unsafeBitCast(delay, to: UnsafeMutableRawPointer.self),
                                                         unsafeBitCast(deadline, to: UnsafeMutableRawPointer.self)) == 0
        guard installed else {
            shared = nil
            return false
        }
        // `Task.sleep` of a job run on the generic executor asks `Task.defaultExecutor`, which must
        // be the pool too (else libdispatch's timers, and its monitor, start after all).
        _createExecutors(factory: Factory.self)
        pool.start()
        return true
    }

    /// The runtime's executors: libdispatch's main executor as before (the main actor's jobs; the
    /// agent has none after start), the pool as the default one.
    private struct Factory: ExecutorFactory {
        static var mainExecutor: any MainExecutor { PlatformExecutorFactory.mainExecutor }
        static var defaultExecutor: any TaskExecutor { GlobalExecutor.shared ?? PlatformExecutorFactory.defaultExecutor }
    }
}

/// The pool behind ``GlobalExecutor``: a `TaskExecutor` and, so that `Task.sleep` comes back to its
/// timers, a `SchedulingExecutor` (an SPI of the runtime, hence internal).
final class WorkerPool: TaskExecutor, SchedulingExecutor, @unchecked Sendable {
    /// The pool's threads now (the first ones plus those its monitor added).
    var threads: Int { locked { threadCount } }
    /// Threads the monitor added because jobs waited while every thread was held.
    var addedThreads: Int { locked { threadCount - baseThreads } }
    /// Delayed jobs queued on the pool's timers so far.
    var timersQueued: UInt64 { locked { delayed } }
    /// Threads running a job now.
    var busyThreads: Int { locked { busy } }
    /// The ceiling of threads the monitor may add up to.
    let maximumThreads: Int

    // The state and its lock live at fixed addresses (pthread objects must not move).
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    /// Idle workers wait here for a job.
    private let work = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    /// The one worker that waits for the earliest timer waits here.
    private let timer = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    /// The monitor waits here.
    private let monitorCondition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    private var ready: [Queued] = []
    private var head = 0
    private var timers = TimerHeap<Queued>()
    private let baseThreads: Int
    private var threadCount = 0
    /// Workers waiting on `work`.
    private var idle = 0
    /// Workers running a job.
    private var busy = 0
    /// The deadline a worker waits for on `timer`, if one does.
    private var timekeeperDeadline: UInt64?
    /// Jobs started so far: the monitor's measure of progress.
    private var started: UInt64 = 0
    private var delayed: UInt64 = 0
    private var monitorWaitsUntimed = false

    init(threads: Int) {
        baseThreads = max(threads, 1)
        maximumThreads = max(baseThreads * 8, 16)
        pthread_mutex_init(mutex, nil)
        for condition in [work, timer, monitorCondition] {
            var attributes = pthread_condattr_t()
            pthread_condattr_init(&attributes)
            pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
            pthread_cond_init(condition, &attributes)
            pthread_condattr_destroy(&attributes)
        }
    }

    /// Starts the threads (``GlobalExecutor/install(environment:)`` does; tests start pools of their own).
    func start() {
        locked { threadCount = baseThreads }
        for _ in 0..<baseThreads { spawn { $0.workerLoop() } }
        spawn { $0.monitorLoop() }
    }

    func enqueue(_ job: consuming ExecutorJob) {
        submit(UnownedJob(job), due: nil, global: false)
    }

    // Since Swift 6.2 `Task.sleep` hands its wake-up job to a `SchedulingExecutor`, past the runtime's
    // hooks: the current task executor if it is one (a task preferring a pool), else
    // `Task.defaultExecutor`, which ``GlobalExecutor/install(environment:)`` makes this pool.

    func enqueue<C: Clock>(_ job: consuming ExecutorJob, after delay: C.Duration, tolerance: C.Duration?, clock: C) {
        guard let delay = delay as? Duration else {
            // A clock of another kind of duration: measure the delay by its own instants.
            Self.fallback(job, after: delay, tolerance: tolerance, clock: clock)
            return
        }
        submit(UnownedJob(job), due: Self.due(after: delay), global: true)
    }

    func enqueue<C: Clock>(_ job: consuming ExecutorJob, at instant: C.Instant, tolerance: C.Duration?, clock: C) {
        enqueue(job, after: clock.now.duration(to: instant), tolerance: tolerance, clock: clock)
    }

    /// Queues `job` to run now (`due` nil) or once the monotonic clock reaches `due` (nanoseconds).
    /// `global`: the job came as the global executor's (it runs on the generic executor, as
    /// libdispatch runs them), else as a task executor's (it runs with this pool as its task executor).
    func submit(_ job: UnownedJob, due: UInt64?, global: Bool) {
        let job = Queued(job: job, global: global)
        pthread_mutex_lock(mutex)
        if let due, due > Self.now() {
            timers.push(due: due, job: job)
            delayed &+= 1
            if let waiting = timekeeperDeadline {
                if due < waiting { pthread_cond_signal(timer) }
            } else if idle > 0 {
                pthread_cond_signal(work)
            }
        } else {
            let wasIdle = ready.count == head && busy == 0
            ready.append(job)
            if idle > 0 {
                pthread_cond_signal(work)
            } else if timekeeperDeadline != nil {
                pthread_cond_signal(timer)
            }
            if wasIdle && monitorWaitsUntimed { pthread_cond_signal(monitorCondition) }
        }
        pthread_mutex_unlock(mutex)
    }

    private func workerLoop() {
        let executor = asUnownedTaskExecutor()
        pthread_mutex_lock(mutex)
        while true {
            if let earliest = timers.earliest, case let now = Self.now(), earliest <= now {
                while let due = timers.earliest, due <= now, let job = timers.pop() { ready.append(job) }
                if monitorWaitsUntimed { pthread_cond_signal(monitorCondition) }
            }
            if head < ready.count {
                let job = ready[head]
                head += 1
                if head == ready.count {
                    ready.removeAll(keepingCapacity: ready.capacity <= 1024)
                    head = 0
                } else if idle > 0 {
                    pthread_cond_signal(work)
                }
                started &+= 1
                busy += 1
                pthread_mutex_unlock(mutex)
                if job.global {
                    job.job.runSynchronously(on: Self.genericExecutor)
                } else {
                    job.job.runSynchronously(on: executor)
                }
                pthread_mutex_lock(mutex)
                busy -= 1
            } else if let due = timers.earliest, timekeeperDeadline == nil {
                timekeeperDeadline = due
                var time = Self.waitTime(at: due)
                pthread_cond_timedwait(timer, mutex, &time)
                timekeeperDeadline = nil
            } else {
                idle += 1
                pthread_cond_wait(work, mutex)
                idle -= 1
            }
        }
    }

    /// Once a second while there is work: jobs waiting and none started since the last look means
    /// every thread is held; one more is added.
    private func monitorLoop() {
        pthread_mutex_lock(mutex)
        var seen = started
        while true {
            if ready.count == head && busy == 0 {
                monitorWaitsUntimed = true
                pthread_cond_wait(monitorCondition, mutex)
                monitorWaitsUntimed = false
                seen = started
                continue
            }
            var time = Self.waitTime(at: Self.due(in: 1_000_000_000))
            pthread_cond_timedwait(monitorCondition, mutex, &time)
            if ready.count > head && started == seen && busy == threadCount && threadCount < maximumThreads {
                threadCount += 1
                pthread_mutex_unlock(mutex)
                spawn { $0.workerLoop() }
                pthread_mutex_lock(mutex)
            }
            seen = started
        }
    }

    private func locked<T>(_ body: () -> T) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return body()
    }

    private func spawn(_ body: @escaping (WorkerPool) -> Void) {
        if !startThread(named: "sy-pool", { body(self) }) { locked { threadCount -= 1 } }
    }

    /// A job and how it came (``submit(_:due:global:)``).
    private struct Queued {
        let job: UnownedJob
        let global: Bool
    }

    /// The generic executor (no actor, no task executor), which the runtime can give up for an actor
    /// in place: a job run with a task executor would be enqueued anew at each hop to an actor and
    /// back (`swift_task_switch` switches in place only without one), a wake-up of the pool each time.
    /// Its representation is two null words (`UnownedSerialExecutor` is frozen).
    private static let genericExecutor = unsafeBitCast((0, 0), to: UnownedSerialExecutor.self)

    /// A clock whose durations are not `Duration`s (the agent has none): left to the platform's
    /// executor, which knows how to wait on it.
    private static func fallback<C: Clock>(_ job: consuming ExecutorJob, after delay: C.Duration, tolerance: C.Duration?, clock: C) {
        if let platform = PlatformExecutorFactory.defaultExecutor as? any SchedulingExecutor {
            platform.enqueue(job, after: delay, tolerance: tolerance, clock: clock)
        } else {
            PlatformExecutorFactory.defaultExecutor.enqueue(job)
        }
    }

    /// The monotonic clock's reading `delay` from now (negative delays are due now).
    static func due(after delay: Duration) -> UInt64 {
        let (seconds, attoseconds) = delay.components
        guard seconds >= 0 else { return 0 }
        let nanoseconds = UInt64(seconds).multipliedReportingOverflow(by: 1_000_000_000)
        let total = nanoseconds.partialValue.addingReportingOverflow(UInt64(max(attoseconds, 0) / 1_000_000_000))
        guard !nanoseconds.overflow, !total.overflow else { return .max }
        return due(in: total.partialValue)
    }

    /// The monotonic clock's reading `nanoseconds` from now (the end of time if that overflows).
    static func due(in nanoseconds: UInt64) -> UInt64 {
        let (due, overflow) = now().addingReportingOverflow(nanoseconds)
        return overflow ? .max : due
    }

    /// A reading of the monotonic clock as the conditions' timed waits take it.
    private static func waitTime(at due: UInt64) -> timespec {
        timespec(tv_sec: Int(due / 1_000_000_000), tv_nsec: Int(due % 1_000_000_000))
    }

    static func now() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) &* 1_000_000_000 &+ UInt64(time.tv_nsec)
    }

    /// A deadline on one of the runtime's clocks (1 continuous, 2 suspending), on the pool's clock.
    static func due(seconds: Int64, nanoseconds: Int64, clock: Int32) -> UInt64 {
        var nowSeconds: Int64 = 0
        var nowNanoseconds: Int64 = 0
        swiftGetTime(&nowSeconds, &nowNanoseconds, clock)
        let remaining = (seconds - nowSeconds).multipliedReportingOverflow(by: 1_000_000_000)
        guard !remaining.overflow else { return seconds > nowSeconds ? .max : 0 }
        let total = remaining.partialValue.addingReportingOverflow(nanoseconds - nowNanoseconds)
        guard !total.overflow else { return .max }
        guard total.partialValue > 0 else { return 0 }
        return due(in: UInt64(total.partialValue))
    }
}

/// The runtime's reading of its clocks, the same the deadline of a `Task.sleep` was computed on.
@_silgen_name("swift_get_time")
private func swiftGetTime(_ seconds: UnsafeMutablePointer<Int64>, _ nanoseconds: UnsafeMutablePointer<Int64>, _ clock: Int32)

/// Delayed jobs by deadline; equal deadlines in the order they were queued.
struct TimerHeap<Element> {
    private struct Entry {
        let due: UInt64
        let order: UInt64
        let job: Element
        func before(_ other: Entry) -> Bool { due != other.due ? due < other.due : order < other.order }
    }

    private var entries: [Entry] = []
    private var nextOrder: UInt64 = 0

    var earliest: UInt64? { entries.first?.due }

    mutating func push(due: UInt64, job: Element) {
        entries.append(Entry(due: due, order: nextOrder, job: job))
        nextOrder &+= 1
        var child = entries.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard entries[child].before(entries[parent]) else { break }
            entries.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> Element? {
        guard let first = entries.first else { return nil }
        let last = entries.removeLast()
        if !entries.isEmpty {
            entries[0] = last
            var parent = 0
            while true {
                let left = 2 * parent + 1, right = left + 1
                var smallest = parent
                if left < entries.count, entries[left].before(entries[smallest]) { smallest = left }
                if right < entries.count, entries[right].before(entries[smallest]) { smallest = right }
                guard smallest != parent else { break }
                entries.swapAt(parent, smallest)
                parent = smallest
            }
        }
        return first.job
    }
}
