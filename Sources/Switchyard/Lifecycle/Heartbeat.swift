import Cumulocity
import Logging

/// Keeps devices with a required interval (`device.requiredInterval`, a child's `requiredInterval`)
/// marked available while the platform is reachable: what the agent sends anyway (events,
/// measurements, alarms, inventory updates) counts; when nothing went out for a device within half
/// its interval, an empty update of its managed object does (the "ping" of the device-management
/// reference, "Device availability"). Operation status updates do not count for the platform, so
/// they do not here either.
struct Heartbeat {
    struct Device: Sendable {
        let id: String
        let interval: Duration
    }

    let client: PlatformClient
    /// Devices with a positive interval (≤ 0 is maintenance: nothing to keep up).
    let devices: [Device]
    /// Quiet time after which a heartbeat goes out; half the interval when `nil` (tests shorten it).
    let quietOverride: Duration?
    let logger: Logger

    init(client: PlatformClient, devices: [(id: String, minutes: Int?)], quietOverride: Duration?, logger: Logger) {
        self.client = client
        self.devices = devices.compactMap { device in
            guard let minutes = device.minutes, minutes > 0 else { return nil }
            return Device(id: device.id, interval: .seconds(minutes * 60))
        }
        self.quietOverride = quietOverride
        self.logger = logger
    }

    func quiet(_ device: Device) -> Duration { quietOverride ?? device.interval / 2 }

    /// The devices that sent nothing for their quiet time (counted from `started` for one that has
    /// sent nothing since the agent started).
    func due(at now: ContinuousClock.Instant, startedAt started: ContinuousClock.Instant) -> [Device] {
        devices.filter { now - (client.activity.lastMessage(of: $0.id) ?? started) >= quiet($0) }
    }

    /// Runs until cancelled.
    func run() async {
        let started = ContinuousClock.now
        let tick = min(devices.map { quiet($0) / 4 }.min() ?? .seconds(60), .seconds(60))
        var failing = Set<String>()
        while !Task.isCancelled {
            for device in due(at: .now, startedAt: started) {
                do {
                    try await client.updateManagedObject(id: device.id, fragments: [:])
                    if failing.remove(device.id) != nil { logger.info("heartbeat sent again", metadata: ["device": "\(device.id)"]) }
                } catch where error.isCancellation {
                    return
                } catch {
                    // Unreachable now: the next tick tries again; said once, not every tick.
                    if failing.insert(device.id).inserted {
                        logger.warning("cannot send the availability heartbeat; retrying", metadata: ["device": "\(device.id)", "error": "\(error)"])
                    }
                }
            }
            // On the timer thread: a pending Task.sleep wakes the process every second on Linux.
            guard await Deadlines.shared.sleep(for: tick) else { return }
        }
    }
}
