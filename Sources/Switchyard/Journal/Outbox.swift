import Cumulocity
import JSONSupport
import Logging
import ServiceLifecycle

/// Operation status updates on their way to the platform.
///
/// Each update is written to its own file in `outbox/` (atomically, fsynced) before it is sent,
/// and deleted only when the platform has acknowledged it. Updates are sent one at a time in the
/// order they were queued, so an operation's updates never overtake each other; a retryable
/// failure (network, 5xx, 429, 401) is retried with backoff, holding back the ones behind it.
/// An update the platform refuses outright (another 4xx) is logged with the answer and set aside
/// in `outbox/rejected/` for inspection, so one bad update cannot block all the others.
public actor Outbox: Service {
    struct Item {
        let sequence: UInt64
        let operationID: String
        let update: JSONValue
        var file: String
    }

    private let directory: String
    private let client: PlatformClient
    private let backoff: Backoff
    private let logger: Logger
    private var queue: [Item]
    private var nextSequence: UInt64
    private var wakeup: CheckedContinuation<Void, Never>?
    private var idleWaiters: [CheckedContinuation<Void, Never>] = []

    public init(directory: String, client: PlatformClient, backoff: Backoff = Backoff(), logger: Logger) throws(FileSystemError) {
        try FileSystem.makeDirectories(directory + "/rejected", mode: 0o700)
        self.directory = directory
        self.client = client
        self.backoff = backoff
        self.logger = logger
        var queue: [Item] = []
        var nextSequence: UInt64 = 1
        for name in try FileSystem.list(directory) ?? [] where name.hasSuffix(".json") {
            let file = directory + "/" + name
            guard let sequence = UInt64(name.dropLast(5)),
                  let bytes = try FileSystem.read(file), let record = try? JSONValue.parse(bytes),
                  let id = record["operationId"]?.stringValue, let update = record["update"] else {
                logger.error("unreadable outbox entry set aside", metadata: ["file": "\(file)"])
                _ = Glibc.rename(file, directory + "/rejected/" + name)
                continue
            }
            queue.append(Item(sequence: sequence, operationID: id, update: update, file: file))
            nextSequence = max(nextSequence, sequence + 1)
        }
        self.queue = queue.sorted { $0.sequence < $1.sequence }
        self.nextSequence = nextSequence
    }

    /// Queues a status update durably. When this returns, the update survives a crash.
    public func enqueue(operationID: String, _ update: JSONValue) throws(FileSystemError) {
        let sequence = nextSequence
        nextSequence += 1
        let name = String(repeating: "0", count: max(0, 16 - String(sequence).count)) + String(sequence) + ".json"
        let file = directory + "/" + name
        try FileSystem.writeAtomically(file, JSONValue.object(["operationId": .string(operationID), "update": update]).encoded(), mode: 0o600)
        queue.append(Item(sequence: sequence, operationID: operationID, update: update, file: file))
        wakeup?.resume()
        wakeup = nil
    }

    /// Whether an update with this status is queued for the operation.
    public func hasUpdate(for operationID: String, status: String) -> Bool {
        queue.contains { $0.operationID == operationID && $0.update["status"]?.stringValue == status }
    }

    /// Updates not yet acknowledged.
    public var pendingCount: Int { queue.count }

    /// Waits until every queued update has been acknowledged or set aside.
    public func waitUntilEmpty() async {
        if queue.isEmpty { return }
        await withCheckedContinuation { idleWaiters.append($0) }
    }

    /// Sends queued updates until cancelled.
    public func run() async throws {
        var failures = 0
        while !Task.isCancelled {
            guard let item = queue.first else {
                for waiter in idleWaiters { waiter.resume() }
                idleWaiters.removeAll()
                await withTaskCancellationHandler {
                    await withCheckedContinuation { wakeup = $0 }
                } onCancel: {
                    Task { await self.wake() }
                }
                continue
            }
            do {
                try await client.updateOperation(id: item.operationID, item.update)
                failures = 0
                remove(item)
                logger.debug("status update delivered", metadata: ["operation": "\(item.operationID)",
                                                                   "status": "\(item.update["status"] ?? .null)"])
            } catch where error.isCancellation {
                return
            } catch where error.isRetryable {
                failures += 1
                let delay = backoff.delay(attempt: failures)
                logger.warning("status update not delivered; will retry", metadata: [
                    "operation": "\(item.operationID)", "error": "\(error)", "retryIn": "\(delay)", "queued": "\(queue.count)",
                ])
                do { try await Task.sleep(for: delay) } catch { return }
            } catch {
                logger.error("platform refused status update; set aside", metadata: [
                    "operation": "\(item.operationID)", "error": "\(error)",
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
