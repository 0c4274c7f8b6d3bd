import JSONSupport

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// What the benchmark (`switchyard-bench`) reads off the tenant: when each operation was created and
/// when each status update arrived, and when each Bayeux subscription was made, on the wall clock
/// (nanoseconds since the epoch, comparable across processes); and a wait for an operation's end
/// that needs no polling.
extension Tenant {
    /// The wall clock in nanoseconds since the epoch.
    public static func wallClock() -> Int64 {
        var time = timespec()
        clock_gettime(CLOCK_REALTIME, &time)
        return Int64(time.tv_sec) * 1_000_000_000 + Int64(time.tv_nsec)
    }

    /// `{"statuses": [{"status", "at"}]}` for an operation, PENDING (its creation) first.
    public func timeline(of id: String) -> JSONValue? {
        guard let entries = timelines[id] else { return nil }
        return ["statuses": .array(entries.map { ["status": .string($0.status), "at": .int($0.at)] })]
    }

    /// When each subscription was made, oldest first.
    public var subscriptionTimes: [Int64] { subscriptions }

    func recordStatus(_ id: String, _ status: String) {
        timelines[id, default: []].append((status, Self.wallClock()))
        guard status == "SUCCESSFUL" || status == "FAILED" else { return }
        for key in endWaiters.keys where endWaiters[key]?.id == id {
            endWaiters.removeValue(forKey: key)?.continuation.resume(returning: true)
        }
    }

    func recordSubscription() { subscriptions.append(Self.wallClock()) }

    /// Waits until the operation is SUCCESSFUL or FAILED (`true`), or `timeout` passes (`false`).
    public func waitForEnd(of id: String, timeout: Duration) async -> Bool {
        if let status = operations[id]?["status"]?.stringValue, status == "SUCCESSFUL" || status == "FAILED" { return true }
        guard operations[id] != nil else { return false }
        nextEndWaiter += 1
        let key = nextEndWaiter
        let timer = Task { [weak self] in
            try await Task.sleep(for: timeout)
            await self?.endWait(key, ended: false)
        }
        let ended = await withCheckedContinuation { endWaiters[key] = (id, $0) }
        timer.cancel()
        return ended
    }

    private func endWait(_ key: Int, ended: Bool) {
        endWaiters.removeValue(forKey: key)?.continuation.resume(returning: ended)
    }
}
