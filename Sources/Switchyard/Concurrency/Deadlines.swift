import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Sleeps that end at a deadline or at once when cancelled, and then leave nothing behind.
///
/// Every handler run races its time limit (600 s by default). A cancelled `Task.sleep` stays
/// scheduled, with its task and continuation, until its deadline: a flood of short operations
/// held one sleeping task each for ten minutes (≈ 1 KB per operation, hundreds of MB in a flood).
/// And on Linux any pending `Task.sleep` wakes libdispatch's timer thread every second (measured
/// with strace on a program that only sleeps), so the long sleeps of an idle agent (the periodic
/// reconciliation, the handlers.d fallback check, the watchdog) wait here too. A cancelled sleep
/// is removed and resumed at once. One thread waits on a condition variable (monotonic clock) for
/// the earliest deadline, and wakes only then.
final class Deadlines: Sendable {
    /// The process's one timer thread.
    static let shared = Deadlines()

    private struct Sleeper {
        let deadline: UInt64
        let continuation: CheckedContinuation<Bool, Never>
    }

    private struct State {
        var sleepers: [UInt64: Sleeper] = [:]
        /// Sleeps cancelled before they were registered.
        var cancelledEarly: Set<UInt64> = []
        var next: UInt64 = 0
        /// The deadline the thread waits for (`.max`: none, it waits for a sleeper). A new sleeper
        /// wakes it only when it ends earlier; a cancelled one never does (the thread, woken at its
        /// deadline, finds nothing due and waits again): in a burst of operations, each of which
        /// races its time limit, the thread sleeps through.
        var armed: UInt64 = 0
        /// Times the thread looked at the sleepers, for tests.
        var rounds = 0
    }

    private let state = Mutex(State())
    private let signal = Signal()

    init() {
        startThread(named: "sy-deadlines") { [self] in work() }
    }

    /// Sleeps waiting (registered, not yet ended).
    var count: Int { state.withLock { $0.sleepers.count } }
    /// Times the thread has woken to look at the sleepers.
    var rounds: Int { state.withLock { $0.rounds } }

    /// Returns `true` once `duration` has passed, `false` as soon as the task is cancelled.
    func sleep(for duration: Duration) async -> Bool {
        let key = state.withLock { state -> UInt64 in
            state.next += 1
            return state.next
        }
        let (sum, overflow) = Self.now().addingReportingOverflow(Self.nanoseconds(duration))
        let deadline = overflow ? UInt64.max : sum
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let (cancelled, earlier) = state.withLock { state -> (Bool, Bool) in
                    if state.cancelledEarly.remove(key) != nil { return (true, false) }
                    state.sleepers[key] = Sleeper(deadline: deadline, continuation: continuation)
                    guard deadline < state.armed else { return (false, false) }
                    state.armed = deadline
                    return (false, true)
                }
                if cancelled { continuation.resume(returning: false) } else if earlier { signal.wake() }
            }
        } onCancel: {
            let sleeper = state.withLock { state -> Sleeper? in
                guard let sleeper = state.sleepers.removeValue(forKey: key) else {
                    state.cancelledEarly.insert(key)
                    return nil
                }
                return sleeper
            }
            sleeper?.continuation.resume(returning: false)
        }
    }

    /// The thread: resume the sleepers whose deadline passed, then wait for the earliest one left,
    /// else for the deadline it was armed for while still ahead (or for a new, earlier sleeper).
    private func work() {
        while true {
            let now = Self.now()
            let (due, armed) = state.withLock { state -> ([Sleeper], UInt64?) in
                var due: [Sleeper] = []
                var earliest: UInt64?
                for (key, sleeper) in state.sleepers {
                    if sleeper.deadline <= now {
                        due.append(sleeper)
                        state.sleepers[key] = nil
                    } else {
                        earliest = min(earliest ?? .max, sleeper.deadline)
                    }
                }
                // Set under the lock: a sleeper registered from here on compares with it, and one
                // that ends earlier sets the wake-up flag, which the wait below sees. With no sleeper
                // left (the last one was cancelled), the thread still waits for the deadline it was
                // armed for, if still ahead: the next operation's limit, later, then needs no wake-up.
                state.armed = earliest ?? (state.armed > now ? state.armed : .max)
                state.rounds += 1
                return (due, state.armed == .max ? nil : state.armed)
            }
            for sleeper in due { sleeper.continuation.resume(returning: true) }
            signal.wait(until: armed)
        }
    }

    private static func now() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) &* 1_000_000_000 &+ UInt64(time.tv_nsec)
    }

    private static func nanoseconds(_ duration: Duration) -> UInt64 {
        let (seconds, attoseconds) = duration.components
        guard seconds >= 0 else { return 0 }
        let whole = UInt64(seconds).multipliedReportingOverflow(by: 1_000_000_000)
        return whole.overflow ? .max : whole.partialValue.addingReportingOverflow(UInt64(attoseconds / 1_000_000_000)).partialValue
    }
}

/// A wake-up flag and a condition variable on the monotonic clock, for ``Deadlines``' thread.
private final class Signal: @unchecked Sendable {
    // pthread objects must not move: they live at fixed addresses.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var woken = false

    init() {
        pthread_mutex_init(mutex, nil)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(condition, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    func wake() {
        pthread_mutex_lock(mutex)
        woken = true
        pthread_cond_signal(condition)
        pthread_mutex_unlock(mutex)
    }

    /// Waits until woken or until `deadline` (monotonic nanoseconds; forever when `nil`).
    func wait(until deadline: UInt64?) {
        pthread_mutex_lock(mutex)
        if !woken {
            if let deadline {
                var time = timespec(tv_sec: Int(deadline / 1_000_000_000), tv_nsec: Int(deadline % 1_000_000_000))
                pthread_cond_timedwait(condition, mutex, &time)
            } else {
                pthread_cond_wait(condition, mutex)
            }
        }
        woken = false
        pthread_mutex_unlock(mutex)
    }
}
