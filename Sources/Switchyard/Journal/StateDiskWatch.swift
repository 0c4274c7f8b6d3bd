import Cumulocity
import JSONSupport
import Logging

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Notices when the state directory cannot be written (a full disk or quota), tells the platform,
/// and finds out when it can be written again.
///
/// While the disk is full nothing can be journalled or queued, so the alarm
/// `switchyard_StateDiskFull` (MAJOR) is sent directly, not through the outbox. Then a small file is
/// written and synced every `interval`; once that works the alarm is cleared and `onWritable` runs
/// (the dispatcher settles what it could not record, the reconciler takes on what stayed PENDING).
/// No timer runs while the disk is fine.
public actor StateDiskWatch {
    public static let alarmType = "switchyard_StateDiskFull"

    private let directory: String
    private let client: PlatformClient
    private let deviceID: String
    private let interval: Duration
    private let logger: Logger
    private var onWritable: @Sendable () async -> Void = {}
    private var probing: Task<Void, Never>?
    private let alarms: AgentAlarms

    public init(directory: String, client: PlatformClient, deviceID: String, interval: Duration, logger: Logger) {
        self.directory = directory
        self.client = client
        self.deviceID = deviceID
        self.interval = interval
        self.logger = logger
        self.alarms = AgentAlarms(client: client, device: deviceID, scope: .type(Self.alarmType))
    }

    public func setOnWritable(_ action: @escaping @Sendable () async -> Void) { onWritable = action }

    /// Whether the state directory is known to be full.
    public var isFull: Bool { probing != nil }

    /// A write in the state directory failed: when for lack of space, the alarm is raised (once) and
    /// the directory probed until it takes writes again.
    public func failed(_ error: FileSystemError) {
        guard error.isDiskFull, probing == nil else { return }
        logger.critical("the state directory is full: operations cannot be recorded until space is freed",
                        metadata: ["directory": "\(directory)", "error": "\(error)"])
        probing = Task { await self.probe() }
    }

    private func probe() async {
        await send(raise: true)
        while !Task.isCancelled {
            do { try await Task.sleep(for: interval) } catch { return }
            let directory = directory
            if await BlockingPool.run({ Self.writable(directory) }) { break }
        }
        guard !Task.isCancelled else { return }
        logger.notice("the state directory takes writes again", metadata: ["directory": "\(directory)"])
        probing = nil
        await send(raise: false)
        await onWritable()
    }

    /// Writes, syncs and removes a small file: what every journal append needs.
    private static func writable(_ directory: String) -> Bool {
        let path = directory + "/.space-probe"
        defer { unlink(path) }
        do {
            try FileSystem.writeAtomically(path, [UInt8](repeating: 0x20, count: 4096), mode: 0o600)
            return true
        } catch {
            return false
        }
    }

    private func send(raise: Bool) async {
        let alarm = AgentAlarms.Alarm(text: "The agent's state directory \(directory) is full: operations cannot be recorded or run",
                                      severity: "MAJOR")
        do {
            try await alarms.sync(raise ? [Self.alarmType: alarm] : [:])
        } catch {
            logger.warning("cannot \(raise ? "raise" : "clear") the \(Self.alarmType) alarm", metadata: ["error": "\(error)"])
        }
    }
}
