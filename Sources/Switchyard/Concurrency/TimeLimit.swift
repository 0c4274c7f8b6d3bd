/// Runs `work`, giving up after `limit`: then `onTimeout` runs (say, to stop a process group the
/// work waits for), `work` is cancelled (and awaited) and the result is `nil`. `work` should respond
/// to cancellation promptly; the call returns only once it has ended.
func withTimeLimit<T: Sendable>(_ limit: Duration, deadlines: Deadlines = .shared,
                                onTimeout: @escaping @Sendable () async -> Void = {},
                                _ work: @escaping @Sendable () async -> T) async -> T? {
    await withTaskGroup(of: RaceFinish<T>.self) { group in
        group.addTask { .done(await work()) }
        group.addTask {
            // Not Task.sleep: a cancelled one stays scheduled, with its task, until its deadline.
            await deadlines.sleep(for: limit) ? .timedOut : .cancelled
        }
        var result: T?
        while let finish = await group.next() {
            switch finish {
            case .done(let value): result = value
            case .timedOut:
                result = nil
                await onTimeout()
            case .cancelled: continue
            }
            break
        }
        group.cancelAll()
        return result
    }
}

enum RaceFinish<T: Sendable>: Sendable { case done(T), timedOut, cancelled }

/// Continuations waiting for a condition inside an actor, each removable when its task is cancelled.
struct Waiters {
    private var next: UInt64 = 0
    private var waiting: [UInt64: CheckedContinuation<Void, Never>] = [:]

    /// Registers a continuation and returns its key (for ``resume(_:)`` on cancellation).
    mutating func add(_ continuation: CheckedContinuation<Void, Never>, key: UInt64) {
        waiting[key] = continuation
    }

    /// A fresh key for a waiter about to be added.
    mutating func newKey() -> UInt64 {
        next += 1
        return next
    }

    /// Resumes one waiter (its task was cancelled).
    mutating func resume(_ key: UInt64) {
        waiting.removeValue(forKey: key)?.resume()
    }

    /// Resumes every waiter (the condition holds).
    mutating func resumeAll() {
        for waiter in waiting.values { waiter.resume() }
        waiting.removeAll()
    }
}
