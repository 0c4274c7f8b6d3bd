import Cumulocity
import JSONSupport
import Logging
import ServiceLifecycle

/// Operation status updates, and the inventory updates, events and measurements handlers send,
/// on their way to the platform.
///
/// Each request is written to its own file in `outbox/` (atomically, fsynced) before it is sent,
/// and deleted only when the platform has acknowledged it. Updates are sent one at a time in the
/// order they were queued, so an operation's updates never overtake each other; a retryable
/// failure (network, 5xx, 429, 401) is retried with backoff, holding back the ones behind it.
/// An update the platform refuses outright (another 4xx) is logged with the answer and set aside
/// in `outbox/rejected/` for inspection, so one bad update cannot block all the others. A 2xx whose
/// body is not the platform's JSON (a captive portal, a proxy) is not an answer at all: it is
/// retried like a network failure. A delivered final status is acknowledged in the ``Journal``.
public actor Outbox: Service {
    /// One queued request. Status updates are `PUT /devicecontrol/operations/<id>`.
    struct Item {
        let sequence: UInt64
        let operationID: String?
        let method: String
        let path: String
        let accept: String
        let body: JSONValue
        var file: String

        var record: JSONValue {
            ["operationId": operationID.map(JSONValue.string) ?? .null, "method": .string(method), "path": .string(path),
             "accept": .string(accept), "body": body]
        }

        /// Reads a stored record; `nil` for anything else.
        init?(record: JSONValue, sequence: UInt64, file: String) {
            guard let method = record["method"]?.stringValue, let path = record["path"]?.stringValue,
                  let accept = record["accept"]?.stringValue, let body = record["body"] else { return nil }
            self.init(sequence: sequence, operationID: record["operationId"]?.stringValue, method: method, path: path,
                      accept: accept, body: body, file: file)
        }

        init(sequence: UInt64, operationID: String?, method: String, path: String, accept: String, body: JSONValue, file: String) {
            self.sequence = sequence
            self.operationID = operationID
            self.method = method
            self.path = path
            self.accept = accept
            self.body = body
            self.file = file
        }
    }

    private let directory: String
    private let client: PlatformClient
    private let backoff: Backoff
    private let logger: Logger
    private let journal: Journal?
    private var queue: [Item]
    private var nextSequence: UInt64
    private var wakeup: CheckedContinuation<Void, Never>?
    private var idleWaiters = Waiters()

    /// - Parameter journal: told when an operation's final status has been delivered.
    public init(directory: String, client: PlatformClient, backoff: Backoff = Backoff(), journal: Journal? = nil,
                logger: Logger) throws(FileSystemError) {
        try FileSystem.makeDirectories(directory + "/rejected", mode: 0o700)
        self.directory = directory
        self.journal = journal
        self.client = client
        self.backoff = backoff
        self.logger = logger
        var queue: [Item] = []
        var nextSequence: UInt64 = 1
        for name in try FileSystem.list(directory) ?? [] where name.hasSuffix(".json") {
            let file = directory + "/" + name
            guard let sequence = UInt64(name.dropLast(5)),
                  let bytes = try FileSystem.read(file), let record = try? JSONValue.parse(bytes),
                  let item = Item(record: record, sequence: sequence, file: file) else {
                logger.error("unreadable outbox entry set aside", metadata: ["file": "\(file)"])
                _ = Glibc.rename(file, directory + "/rejected/" + name)
                continue
            }
            queue.append(item)
            nextSequence = max(nextSequence, sequence + 1)
        }
        self.queue = queue.sorted { $0.sequence < $1.sequence }
        self.nextSequence = nextSequence
    }

    /// Queues a status update durably. When this returns, the update survives a crash.
    public func enqueue(operationID: String, _ update: JSONValue) throws(FileSystemError) {
        try enqueue(method: "PUT", path: "/devicecontrol/operations/" + percentEncoded(operationID),
                    accept: MediaType.operation, body: update, operationID: operationID)
    }

    /// Queues any platform request durably (inventory updates, events, measurements, alarms).
    public func enqueue(method: String, path: String, accept: String, body: JSONValue, operationID: String? = nil) throws(FileSystemError) {
        let sequence = nextSequence
        nextSequence += 1
        let name = String(repeating: "0", count: max(0, 16 - String(sequence).count)) + String(sequence) + ".json"
        let item = Item(sequence: sequence, operationID: operationID, method: method, path: path, accept: accept,
                        body: body, file: directory + "/" + name)
        try FileSystem.writeAtomically(item.file, item.record.encoded(), mode: 0o600)
        queue.append(item)
        wakeup?.resume()
        wakeup = nil
    }

    /// Whether a status update with this status is queued for the operation.
    public func hasUpdate(for operationID: String, status: String) -> Bool {
        queue.contains { $0.operationID == operationID && $0.method == "PUT" && $0.body["status"]?.stringValue == status }
    }

    /// Whether any status update is queued for the operation.
    public func hasUpdate(for operationID: String) -> Bool {
        queue.contains { $0.operationID == operationID && $0.method == "PUT" }
    }

    /// Updates not yet acknowledged.
    public var pendingCount: Int { queue.count }

    /// Returns at once: that it returns at all tells the watchdog the actor is not stuck.
    public func ping() {}

    /// Waits until every queued request has been acknowledged or set aside, or the task is cancelled.
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

    /// Sends queued updates until cancelled.
    public func run() async throws {
        var failures = 0
        while !Task.isCancelled {
            guard let item = queue.first else {
                idleWaiters.resumeAll()
                await withTaskCancellationHandler {
                    await withCheckedContinuation { wakeup = $0 }
                } onCancel: {
                    Task { await self.wake() }
                }
                continue
            }
            do {
                _ = try await client.send(item.method, item.path, body: item.body, accept: item.accept)
                if failures > 0 {
                    logger.notice("delivering again", metadata: ["after": "\(failures) failed attempts", "queued": "\(queue.count)"])
                }
                failures = 0
                remove(item)
                logger.debug("delivered", metadata: ["request": "\(item.method) \(item.path)", "operation": "\(item.operationID ?? "-")"])
                if let id = item.operationID, let status = item.body["status"]?.stringValue, OperationItem.finalStatuses.contains(status) {
                    await journal?.acknowledged(id)
                }
            } catch where error.isCancellation {
                return
            } catch where error.isRetryable {
                failures += 1
                let delay = backoff.delay(attempt: failures)
                // Once per streak: an outage of hours must not fill the log.
                logger.log(level: failures == 1 ? .warning : .debug, "not delivered; will retry", metadata: [
                    "operation": "\(item.operationID ?? "-")", "error": "\(error)", "retryIn": "\(delay.readable)", "queued": "\(queue.count)",
                ])
                do { try await Task.sleep(for: delay) } catch { return }
            } catch {
                logger.error("platform refused a queued request; set aside", metadata: [
                    "operation": "\(item.operationID ?? "-")", "error": "\(error)",
                ])
                let name = String(item.file.split(separator: "/").last ?? "")
                rename(item.file, to: directory + "/rejected/" + name)
                queue.removeFirst()
            }
        }
    }

    private func wake() {
        wakeup?.resume()
        wakeup = nil
    }

    private func remove(_ item: Item) {
        FileSystem.remove(item.file)
        FileSystem.syncDirectory(of: item.file)
        queue.removeFirst()
    }

    private nonisolated func rename(_ from: String, to: String) {
        _ = Glibc.rename(from, to)
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
