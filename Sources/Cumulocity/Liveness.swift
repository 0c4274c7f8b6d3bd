import Synchronization

/// Long-running loops that promise to report again before a deadline: a loop that does not (stuck
/// in a call that never returns, or never scheduled again) is *stalled*, which a supervisor such as
/// systemd's watchdog must hear about. A loop waiting by design (a long-poll, a backoff) promises a
/// deadline past its wait, so waiting is never mistaken for a stall.
public final class Liveness: Sendable {
    private let deadlines = Mutex<[String: ContinuousClock.Instant]>([:])

    public init() {}

    /// The loop `name` will report again within `within`, or count as stalled.
    public func beat(_ name: String, within: Duration) {
        let deadline = ContinuousClock.now + within
        deadlines.withLock { $0[name] = deadline }
    }

    /// The loop ended on purpose; it is no longer watched.
    public func retire(_ name: String) {
        _ = deadlines.withLock { $0.removeValue(forKey: name) }
    }

    /// The loops whose deadline has passed, by name.
    public func stalled(at now: ContinuousClock.Instant = .now) -> [String] {
        deadlines.withLock { $0.filter { $0.value < now }.keys.sorted() }
    }
}

/// When each device last sent something the platform counts for its availability (an event, a
/// measurement, an alarm, or an update of its own managed object: device-management reference,
/// "Device availability"), so a heartbeat goes out only when nothing else did.
public final class DeviceActivity: Sendable {
    private let last = Mutex<[String: ContinuousClock.Instant]>([:])

    public init() {}

    public func record(_ device: String, at instant: ContinuousClock.Instant = .now) {
        last.withLock { $0[device] = instant }
    }

    /// When `device` last sent something, if it did since the agent started.
    public func lastMessage(of device: String) -> ContinuousClock.Instant? {
        last.withLock { $0[device] }
    }
}
