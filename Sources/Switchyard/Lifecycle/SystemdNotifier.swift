public import Cumulocity
public import Logging

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// systemd's notify protocol (sd_notify(3)): newline-separated `KEY=value` assignments in one
/// datagram to the `AF_UNIX` socket `$NOTIFY_SOCKET` names (a path, or `@name` for the abstract
/// namespace). Used for `READY=1` (registered and subscribed), `STATUS=` (what the agent waits for),
/// `WATCHDOG=1` (see ``Watchdog``) and `STOPPING=1`. Without `$NOTIFY_SOCKET` there is no notifier.
public struct SystemdNotifier: Sendable {
    public let socketPath: String
    /// `$WATCHDOG_USEC` when it is meant for this process (`$WATCHDOG_PID` absent or ours).
    public let watchdogInterval: Duration?

    public init(socketPath: String, watchdogInterval: Duration? = nil) {
        self.socketPath = socketPath
        self.watchdogInterval = watchdogInterval
    }

    /// The notifier systemd asked for through the environment, if any.
    public static func fromEnvironment(_ environment: [String: String]) -> SystemdNotifier? {
        guard let socket = environment["NOTIFY_SOCKET"], socket.hasPrefix("/") || socket.hasPrefix("@") else { return nil }
        var interval: Duration?
        if let text = environment["WATCHDOG_USEC"], let micros = Int64(text), micros > 0,
           environment["WATCHDOG_PID"].map({ Int32($0) == getpid() }) ?? true {
            interval = .microseconds(micros)
        }
        return SystemdNotifier(socketPath: socket, watchdogInterval: interval)
    }

    /// Sends the assignments (`"READY=1"`, `"STATUS=…"`) as one datagram; a status is kept on one line.
    /// Never blocks (`MSG_DONTWAIT`): a notification that cannot go out at once is dropped, as the
    /// protocol allows. - Returns: whether it was sent.
    @discardableResult
    public func notify(_ assignments: [String]) -> Bool {
        let message = assignments.map { $0.split(whereSeparator: \.isNewline).joined(separator: " ") }.joined(separator: "\n")
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var path = Array(socketPath.utf8)
        let abstract = path.first == UInt8(ascii: "@")
        if abstract { path[0] = 0 }
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard path.count < capacity else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: path)
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + path.count + (abstract ? 0 : 1))
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        let sent = message.utf8CString.withUnsafeBufferPointer { bytes in
            withUnsafePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                    sendto(fd, bytes.baseAddress, bytes.count - 1, Int32(MSG_DONTWAIT) | Int32(MSG_NOSIGNAL), socketAddress, length)
                }
            }
        }
        return sent == message.utf8.count
    }

    public func status(_ text: String) { notify(["STATUS=" + text]) }
}

/// Sends `WATCHDOG=1` every half of systemd's `WatchdogSec` while the agent is healthy, and withholds
/// it while it is not, so systemd restarts an agent that stopped working instead of one that merely
/// crashed. Healthy means: this loop is scheduled at all (the task pool is not blocked), the probe
/// returns (the dispatcher and the outbox answer; an actor stuck in a call never does, and then this
/// loop waits with it and sends nothing), and no loop watched by ``Liveness`` missed its deadline.
public struct Watchdog: Sendable {
    let notifier: SystemdNotifier
    let interval: Duration
    let liveness: Liveness
    let probe: @Sendable () async -> Void
    let logger: Logger

    public init(notifier: SystemdNotifier, interval: Duration, liveness: Liveness,
                probe: @escaping @Sendable () async -> Void, logger: Logger) {
        self.notifier = notifier
        self.interval = interval
        self.liveness = liveness
        self.probe = probe
        self.logger = logger
    }

    /// Runs until cancelled.
    public func run() async {
        var withheld = false
        while !Task.isCancelled {
            await probe()
            let stalled = liveness.stalled()
            if stalled.isEmpty {
                notifier.notify(["WATCHDOG=1"])
                if withheld { logger.notice("all loops running again; watchdog notifications resumed") }
                withheld = false
            } else if !withheld {
                logger.error("withholding the watchdog notification: stalled \(stalled.joined(separator: ", ")); systemd will restart the agent if this lasts",
                             metadata: ["stalled": .array(stalled.map { .string($0) })])
                withheld = true
            }
            guard await Deadlines.shared.sleep(for: interval / 2) else { return }
        }
    }
}
