import Cumulocity
import JSONSupport
import Logging
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Operation status updates, and the inventory updates, events, measurements and alarms handlers
/// send, on their way to the platform.
///
/// Each request is appended to `outbox/outbox.jsonl` (a ``RecordLog``) before it is sent; a record
/// that it was delivered follows once the platform has acknowledged it. Status updates are only
/// written, not fsynced: the journal holds an operation's final status durably until it is
/// acknowledged, and EXECUTING is reported again after a restart when the platform still says
/// PENDING. Every other request is fsynced (with group commit) before `enqueue` returns.
///
/// Up to `concurrency` requests are in flight at once. A request waits for every earlier one that
/// shares a key with it (``keys``): the same operation, the same resource updated, the same alarm
/// type of a device. So an operation's updates never overtake each other, and its final status never
/// overtakes what its handler sent before it; unrelated requests do not wait for each other.
///
/// A retryable failure (network, 5xx, 429, 401) pauses sending with backoff and then probes with
/// one request at a time until one gets through. A request the platform refuses outright (another
/// 4xx) is logged with the answer and set aside in `outbox/rejected/` for inspection, so one bad
/// request cannot block the others. A 2xx whose body is not the platform's JSON (a captive portal,
/// a proxy) is not an answer at all: it is retried like a network failure. A delivered final
/// status is acknowledged in the ``Journal``.
public actor Outbox: Service {
    /// One queued request, with the operation it was sent for.
    struct Item: Sendable {
        let sequence: UInt64
        let operationID: String?
        let request: PlatformRequest
        let keys: [String]

        init(sequence: UInt64, operationID: String?, request: PlatformRequest) {
            self.sequence = sequence
            self.operationID = operationID
            self.request = request
            self.keys = Outbox.keys(operationID: operationID, request: request)
        }

        var record: JSONValue {
            ["sequence": .int(Int64(sequence)), "operationId": operationID.map(JSONValue.string) ?? .null, "request": request.json]
        }

        /// Reads a stored request (`sequence` from the record unless given), also as version 0.2
        /// stored it (`method`, `path`, `body`); `nil` for anything else.
        init?(record: JSONValue, sequence: UInt64? = nil) {
            guard let sequence = sequence ?? record["sequence"]?.intValue.flatMap(UInt64.init(exactly:)) else { return nil }
            let request: PlatformRequest?
            if let stored = record["request"] {
                request = PlatformRequest(json: stored)
            } else if let method = record["method"]?.stringValue, let path = record["path"]?.stringValue, let body = record["body"] {
                request = PlatformRequest(method: method, path: path, body: body)
            } else {
                request = nil
            }
            guard let request else { return nil }
            self.init(sequence: sequence, operationID: record["operationId"]?.stringValue, request: request)
        }

        var isStatusUpdate: Bool { request.updatedOperation != nil }

        /// The name a set-aside request gets in `rejected/` (and a request of the older layout had in `outbox/`).
        var fileName: String {
            String(repeating: "0", count: max(0, 16 - String(sequence).count)) + String(sequence) + ".json"
        }
    }

    /// What a request must not overtake: the keys it shares with earlier requests.
    static func keys(operationID: String?, request: PlatformRequest) -> [String] {
        var keys: [String] = []
        if let operationID { keys.append("operation " + operationID) }
        if request.method == "PUT" { keys.append("PUT " + request.path) }
        if let alarm = request.alarm { keys.append(alarmKey(device: alarm.source, type: alarm.type)) }
        return keys
    }

    /// The key of a device's alarms of one type (a raise, then the clear that must follow it).
    static func alarmKey(device: String, type: String) -> String { "alarm \(device) \(type)" }

    private let directory: String
    private let client: PlatformClient
    private let backoff: Backoff
    private let logger: Logger
    private let journal: Journal?
    private let concurrency: Int
    private let log: RecordLog
    private var queue: [Item]
    private var inFlight: Set<UInt64> = []
    /// Queued requests whose record is not in the file yet: not sent before it is.
    private var writing: Set<UInt64> = []
    private var nextSequence: UInt64
    /// Retryable failures in a row; while there are any, one request at a time probes the platform.
    private var failures = 0
    private var pause: Duration?
    private var appendedSinceCompaction = 0
    private var wakeup: CheckedContinuation<Void, Never>?
    private var idleWaiters = Waiters()

    /// - Parameters:
    ///   - journal: told when an operation's final status has been delivered.
    ///   - concurrency: how many requests may be in flight at once.
    ///   - storage: the thread the file is written on (one per agent).
    public init(directory: String, client: PlatformClient, backoff: Backoff = Backoff(), journal: Journal? = nil,
                concurrency: Int = 8, storage: StorageThread = StorageThread(), logger: Logger) throws(FileSystemError) {
        try FileSystem.makeDirectories(directory + "/rejected", mode: 0o700)
        self.directory = directory
        self.journal = journal
        self.client = client
        self.backoff = backoff
        self.concurrency = max(1, concurrency)
        self.logger = logger
        let path = directory + "/outbox.jsonl"
        let (records, damaged) = try RecordLog.read(path)
        if damaged > 0 {
            logger.warning("outbox had unreadable lines (a crash mid-write); they were skipped",
                           metadata: ["file": "\(path)", "lines": "\(damaged)"])
        }
        var pending: [UInt64: Item] = [:]
        var seen = Set<UInt64>()
        for record in records {
            if let done = record["done"]?.intValue.flatMap(UInt64.init(exactly:)) {
                pending[done] = nil
                seen.insert(done)
            } else if let item = Item(record: record) {
                pending[item.sequence] = item
                seen.insert(item.sequence)
            }
        }
        // Requests left by a version that kept a file per request (older than any in the file, and
        // numbered alike: one taken over before a crash is in the file already).
        let legacy = Self.readLegacy(directory, logger: logger)
        let queue = (legacy.filter { !seen.contains($0.sequence) } + pending.values).sorted { $0.sequence < $1.sequence }
        // Numbers only grow, also past the requests set aside (their file names sort by age).
        let setAside = ((try? FileSystem.list(directory + "/rejected")) ?? []).compactMap { UInt64($0.dropLast(5)) }
        nextSequence = (seen.union(legacy.map(\.sequence)).union(setAside).max() ?? 0) + 1
        do {
            try RecordLog.rewrite(path, with: queue.map(\.record), thread: storage)
            for item in legacy { FileSystem.remove(directory + "/" + item.fileName) }
        } catch where error.isDiskFull && legacy.isEmpty {
            logger.warning("cannot compact the outbox: the disk is full; appending to it as it is",
                           metadata: ["file": "\(path)", "error": "\(error)"])
        }
        self.log = try RecordLog(path: path, thread: storage)
        self.queue = queue
    }

    /// The requests of the older layout, one file each (`outbox/0000000000000001.json`), in order;
    /// an unreadable one is set aside.
    private static func readLegacy(_ directory: String, logger: Logger) -> [Item] {
        var items: [Item] = []
        for name in (try? FileSystem.list(directory)) ?? [] where name.hasSuffix(".json") {
            let file = directory + "/" + name
            guard let sequence = UInt64(name.dropLast(5)), let bytes = try? FileSystem.read(file),
                  let record = try? JSONValue.parse(bytes), let item = Item(record: record, sequence: sequence) else {
                logger.error("unreadable outbox entry set aside", metadata: ["file": "\(file)"])
                _ = Glibc.rename(file, directory + "/rejected/" + name)
                continue
            }
            items.append(item)
        }
        return items.sorted { $0.sequence < $1.sequence }
    }

    /// Queues an operation's status update. When this returns it is in the file (the journal keeps
    /// the final status durably; see the type's notes).
    public func enqueue(operationID: String, _ update: JSONValue) async throws(FileSystemError) {
        try await enqueue(.updateOperation(id: operationID, update: update), for: operationID)
    }

    /// Queues a platform request (inventory updates, events, measurements, alarms) sent for an
    /// operation, or for none; when this returns it survives a power cut (a status update: a crash
    /// of the agent).
    public func enqueue(_ request: PlatformRequest, for operationID: String? = nil) async throws(FileSystemError) {
        let item = Item(sequence: nextSequence, operationID: operationID, request: request)
        nextSequence += 1
        // Queued in memory first, so that a compaction under way includes it; sent only once written.
        queue.append(item)
        writing.insert(item.sequence)
        defer { writing.remove(item.sequence) }
        appendedSinceCompaction += 1
        do {
            try await log.append(item.record, wait: item.isStatusUpdate ? .written : .durable).value()
        } catch {
            queue.removeAll { $0.sequence == item.sequence }
            resumeWaiters()
            throw error
        }
        wake()
    }

    /// Whether a status update with this status is queued for the operation.
    public func hasUpdate(for operationID: String, status: String) -> Bool {
        queue.contains { $0.request.updatedOperation == operationID && $0.request.body?["status"]?.stringValue == status }
    }

    /// Whether any status update is queued for the operation.
    public func hasUpdate(for operationID: String) -> Bool {
        queue.contains { $0.request.updatedOperation == operationID }
    }

    /// Requests not yet delivered or set aside.
    public var pendingCount: Int { queue.count }

    /// The queued requests in order, with their numbers and the operation each was sent for.
    func queuedRequests() -> [(sequence: UInt64, operationID: String?, request: PlatformRequest)] {
        queue.map { ($0.sequence, $0.operationID, $0.request) }
    }

    /// Returns at once: that it returns at all tells the watchdog the actor is not stuck.
    public func ping() {}

    /// Waits until every queued request has been delivered or set aside, or the task is cancelled.
    public func waitUntilEmpty() async {
        if queue.isEmpty { return }
        let key = idleWaiters.newKey()
        await withTaskCancellationHandler {
            await withCheckedContinuation { idleWaiters.add($0, key: key) }
        } onCancel: {
            Task { await self.releaseWaiter(key) }
        }
    }

    private func releaseWaiter(_ key: UInt64) {
        idleWaiters.resume(key)
    }

    /// Resumes the waiters whose condition holds now.
    private func resumeWaiters() {
        if queue.isEmpty { idleWaiters.resumeAll() }
    }

    /// Sends queued requests until cancelled.
    public func run() async throws {
        await withDiscardingTaskGroup { group in
            while !Task.isCancelled {
                if let delay = pause {
                    do { try await Task.sleep(for: delay) } catch { break }
                    pause = nil
                    continue
                }
                let ready = readyItems()
                if ready.isEmpty {
                    await withTaskCancellationHandler {
                        await withCheckedContinuation { wakeup = $0 }
                    } onCancel: {
                        Task { await self.wake() }
                    }
                    continue
                }
                for item in ready {
                    inFlight.insert(item.sequence)
                    group.addTask { await self.deliver(item) }
                }
            }
            group.cancelAll()
        }
    }

    /// The requests that may go now: in queue order, not in flight, sharing no key with an earlier
    /// request still queued, as many as the free places allow (one while the platform fails).
    private func readyItems() -> [Item] {
        let limit = failures > 0 ? 1 : concurrency
        var free = limit - inFlight.count
        guard free > 0 else { return [] }
        var ready: [Item] = []
        var held = Set<String>()
        for item in queue {
            let blocked = inFlight.contains(item.sequence) || writing.contains(item.sequence) || item.keys.contains(where: held.contains)
            held.formUnion(item.keys)
            if blocked { continue }
            ready.append(item)
            free -= 1
            if free == 0 { break }
        }
        return ready
    }

    private func deliver(_ item: Item) async {
        do {
            try await client.send(item.request)
            if failures > 0 {
                logger.notice("delivering again", metadata: ["after": "\(failures) failed attempts", "queued": "\(queue.count)"])
            }
            failures = 0
            logger.debug("delivered", metadata: ["request": "\(item.request.method) \(item.request.path)", "operation": "\(item.operationID ?? "-")"])
            // A delivered final status is recorded in the journal before the request leaves the queue:
            // a reconciliation in between (whose platform query may predate the delivery) then sees
            // the update still queued or the operation acknowledged, never neither, and does not send
            // the final status a second time.
            if let id = item.request.updatedOperation, let status = item.request.body?["status"]?.stringValue,
               OperationItem.finalStatuses.contains(status) {
                await journal?.acknowledged(id)
            }
            await remove(item)
        } catch where error.isCancellation {
            inFlight.remove(item.sequence)
            return
        } catch where error.isRetryable {
            inFlight.remove(item.sequence)
            if pause == nil {
                failures += 1
                let delay = backoff.delay(attempt: failures)
                pause = delay
                // Once per streak: an outage of hours must not fill the log.
                logger.log(level: failures == 1 ? .warning : .debug, "not delivered; will retry", metadata: [
                    "operation": "\(item.operationID ?? "-")", "error": "\(error)", "retryIn": "\(delay.readable)", "queued": "\(queue.count)",
                ])
            }
        } catch {
            logger.error("platform refused a queued request; set aside", metadata: [
                "operation": "\(item.operationID ?? "-")", "request": "\(item.request.method) \(item.request.path)", "error": "\(error)",
            ])
            try? FileSystem.writeAtomically(directory + "/rejected/" + item.fileName, item.record.encoded(), mode: 0o600, durable: false)
            await remove(item)
        }
        wake()
    }

    /// Forgets a delivered (or set-aside) request and records that in the file (written, not synced:
    /// after a power cut it may be sent once more).
    private func remove(_ item: Item) async {
        queue.removeAll { $0.sequence == item.sequence }
        inFlight.remove(item.sequence)
        resumeWaiters()
        appendedSinceCompaction += 1
        let (logger, request) = (self.logger, "\(item.request.method) \(item.request.path)")
        log.post(["done": .int(Int64(item.sequence))]) { error in
            logger.debug("cannot record a delivery; the request may be sent again after a restart",
                         metadata: ["request": "\(request)", "error": "\(error)"])
        }
        await compactIfDue()
    }

    /// Rewrites the file with the queued requests once it holds many more records than that.
    private func compactIfDue() async {
        guard appendedSinceCompaction > max(1000, 4 * queue.count) else { return }
        appendedSinceCompaction = 0
        do {
            try await log.replace(with: queue.map(\.record)).value()
        } catch {
            logger.warning("cannot compact the outbox", metadata: ["file": "\(log.path)", "error": "\(error)"])
        }
    }

    private func wake() {
        wakeup?.resume()
        wakeup = nil
    }
}
