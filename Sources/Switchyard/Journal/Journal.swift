import JSONSupport
import Logging

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The durable record of which operations this agent has taken on, how far each got, and the final
/// status of each until the platform has acknowledged it.
///
/// An append-only file of JSON lines (`journal.jsonl` in the state directory), written through a
/// ``RecordLog`` on the agent's ``StorageThread``. It is what makes execution at-most-once: an
/// operation id found here is never started again, however often it is delivered, across restarts
/// (within its window: the unfinished and unacknowledged entries and the newest `keepFinished`
/// finished ones). And it is what lets the agent reconcile with the platform: a finished operation
/// the platform still shows as PENDING or EXECUTING gets its final status again from here
/// (``unacknowledged()``).
///
/// Durability, two fsyncs per operation (shared by the operations of a burst through group commit):
/// - `started` is fsynced before the handler runs: a run that got that far is never run again.
/// - `finished` is fsynced before its final status is queued in the ``Outbox``: from here on the
///   final status survives a power cut until the platform acknowledges it; the outbox need not sync it.
/// - `accepted` and `acknowledged` are only written (they survive a crash of the agent, not a power
///   cut). Losing `accepted` leaves the operation PENDING on the platform, so the next start takes
///   it again; losing `acknowledged` means the final status may be sent once more, which the platform
///   takes as it is.
///
/// The in-memory state changes before a record is queued, and is put back when the write fails, so
/// a compaction (which writes the memory) always contains every record queued before it. The file
/// is compacted at open and whenever enough records have piled up while running.
public actor Journal {
    /// How far an operation got.
    public enum Stage: String, Sendable, Codable {
        /// Recorded, not yet started (waiting for a free slot).
        case accepted
        /// The handler was started: running it again would not be at-most-once.
        case started
        /// A final status was queued in the outbox.
        case finished
    }

    public struct Entry: Sendable {
        public let id: String
        public var stage: Stage
        public var operation: JSONValue
        public var fragment: String?
        public var status: String?
        /// The final status update as queued (`status`, `failureReason`, result fragments), kept until acknowledged.
        public var final: JSONValue?
        /// Whether the platform has acknowledged the final status.
        public var acknowledged = false

        /// The entry as one record (a compacted file holds one per entry).
        var record: JSONValue {
            ["id": .string(id), "stage": .string(stage.rawValue), "operation": operation,
             "fragment": fragment.map(JSONValue.string) ?? .null, "status": status.map(JSONValue.string) ?? .null,
             "final": final ?? JSONValue.null, "acknowledged": .bool(acknowledged)]
        }
    }

    private let logger: Logger
    private let keepFinished: Int
    private var entries: [String: Entry]
    private var order: [String]
    private var log: RecordLog
    /// Records appended since the file was last compacted.
    private var appendedSinceCompaction = 0

    /// - Parameters:
    ///   - keepFinished: how many acknowledged finished entries are kept for duplicate detection.
    ///   - storage: the thread the file is written on (one per agent).
    public init(directory: String, keepFinished: Int = 2000, storage: StorageThread = StorageThread(),
                logger: Logger) throws(FileSystemError) {
        try FileSystem.makeDirectories(directory, mode: 0o700)
        let path = directory + "/journal.jsonl"
        self.logger = logger
        self.keepFinished = keepFinished
        let (records, damaged) = try RecordLog.read(path)
        if damaged > 0 {
            logger.warning("journal had unreadable lines (a crash mid-write); they were skipped",
                           metadata: ["file": "\(path)", "lines": "\(damaged)"])
        }
        let (entries, order) = Self.entries(from: records)
        let (kept, keptOrder) = Self.compacted(entries, order, keepFinished: keepFinished)
        do {
            try RecordLog.rewrite(path, with: keptOrder.compactMap { kept[$0]?.record }, thread: storage)
        } catch where error.isDiskFull {
            // A full disk at start-up must not keep the agent from starting: append to the file as
            // it is (compacted next time), after a newline if its last record was cut short.
            logger.warning("cannot compact the journal: the disk is full; appending to it as it is",
                           metadata: ["file": "\(path)", "error": "\(error)"])
        }
        self.log = try RecordLog(path: path, thread: storage)
        self.entries = kept
        self.order = keptOrder
    }

    /// The entry of an operation, if this agent has taken it on.
    public func entry(_ id: String) -> Entry? { entries[id] }

    /// Entries not finished, oldest first: the previous run's unfinished business at start-up.
    public func unfinished() -> [Entry] {
        order.compactMap { entries[$0] }.filter { $0.stage != .finished }
    }

    /// Finished entries whose final status the platform has not acknowledged, oldest first.
    public func unacknowledged() -> [Entry] {
        order.compactMap { entries[$0] }.filter { $0.stage == .finished && !$0.acknowledged }
    }

    /// Of `ids`, the finished operations (and those unknown here: finished long ago and compacted
    /// away), each with whether it is among the `recentFinished` finished ones taken on last. Reads
    /// the newest entries only, however long the journal.
    public func finished(among ids: [String], recentFinished: Int) -> [(id: String, recent: Bool)] {
        var recent: Set<String> = []
        for id in order.reversed() {
            guard recent.count < recentFinished else { break }
            if entries[id]?.stage == .finished { recent.insert(id) }
        }
        return ids.compactMap { id in
            guard let entry = entries[id] else { return (id, false) }
            return entry.stage == .finished ? (id, recent.contains(id)) : nil
        }
    }

    /// The size of the file, for housekeeping figures.
    public var fileSize: Int { log.length }

    /// Records that an operation was taken on (written, not fsynced). Returns `false` if it was
    /// already known (a duplicate).
    public func accept(_ id: String, operation: JSONValue, fragment: String?) async throws(FileSystemError) -> Bool {
        guard entries[id] == nil else { return false }
        entries[id] = Entry(id: id, stage: .accepted, operation: operation, fragment: fragment)
        order.append(id)
        do {
            try await append(["id": .string(id), "stage": "accepted", "operation": operation,
                              "fragment": fragment.map(JSONValue.string) ?? .null], wait: .written)
        } catch {
            entries[id] = nil
            order.removeAll { $0 == id }
            throw error
        }
        return true
    }

    /// Records that the operation's handler starts (fsynced: once this returns, it never runs again).
    public func started(_ id: String) async throws(FileSystemError) {
        let before = entries[id]
        entries[id]?.stage = .started
        do {
            try await append(["id": .string(id), "stage": "started"], wait: .durable)
        } catch {
            if let before, entries[id] != nil { entries[id] = before }
            throw error
        }
    }

    /// Records the operation's end (fsynced); `final` is the status update queued for the platform,
    /// kept until ``acknowledged(_:)`` so that it can be sent again if the platform never got it.
    public func finished(_ id: String, status: String, final: JSONValue? = nil) async throws(FileSystemError) {
        let before = entries[id]
        entries[id]?.stage = .finished
        entries[id]?.status = status
        entries[id]?.final = final
        entries[id]?.acknowledged = final.isNone
        entries[id]?.operation = .null  // the body is no longer needed
        do {
            try await append(["id": .string(id), "stage": "finished", "status": .string(status), "final": final ?? .null],
                             wait: .durable)
        } catch {
            if let before, entries[id] != nil { entries[id] = before }
            throw error
        }
    }

    /// Records that the platform has the operation's final status (not fsynced: see the type's notes;
    /// not waited for either: its loss costs only the final status sent once more).
    public func acknowledged(_ id: String) async {
        guard let entry = entries[id], entry.stage == .finished, !entry.acknowledged else { return }
        entries[id]?.acknowledged = true
        entries[id]?.final = nil
        appendedSinceCompaction += 1
        let logger = self.logger
        log.post(["id": .string(id), "stage": "acknowledged"]) { error in
            logger.debug("cannot record an acknowledgement; the final status may be sent again",
                         metadata: ["operation": "\(id)", "error": "\(error)"])
        }
        await compactIfDue()
    }

    private func append(_ record: JSONValue, wait: RecordLog.Wait) async throws(FileSystemError) {
        appendedSinceCompaction += 1
        try await log.append(record, wait: wait).value()
    }

    /// Compacts the file while running once it holds many more records than live entries
    /// (amortised: one rewrite, two syncs, per thousands of operations).
    private func compactIfDue() async {
        guard appendedSinceCompaction > max(1000, 2 * entries.count) else { return }
        (entries, order) = Self.compacted(entries, order, keepFinished: keepFinished)
        appendedSinceCompaction = 0
        do {
            try await log.replace(with: order.compactMap { entries[$0]?.record }).value()
        } catch {
            // Retried once enough records have piled up again: appends to the old file go on meanwhile.
            logger.warning("cannot compact the journal", metadata: ["file": "\(log.path)", "error": "\(error)"])
        }
    }

    /// The unfinished and unacknowledged entries and the newest `keepFinished` finished ones.
    private static func compacted(_ entries: [String: Entry], _ order: [String], keepFinished: Int) -> ([String: Entry], [String]) {
        var entries = entries
        var order = order
        let finished = order.filter { entries[$0]?.stage == .finished && entries[$0]?.acknowledged == true }
        let dropped = Set(finished.dropLast(keepFinished))
        order.removeAll { dropped.contains($0) }
        for id in dropped { entries[id] = nil }
        return (entries, order)
    }

    /// A value that is present and not JSON `null` (JSONValue takes `nil` literals, so this is spelled out).
    private static func nonNull(_ value: JSONValue?) -> JSONValue? {
        switch value {
        case .none, .some(.null): return Optional<JSONValue>.none
        case .some(let value): return value
        }
    }

    /// Replays the records (in file order) into entries; records of unknown stages are ignored.
    private static func entries(from records: [JSONValue]) -> ([String: Entry], [String]) {
        var entries: [String: Entry] = [:]
        var order: [String] = []
        for record in records {
            guard let id = record["id"]?.stringValue, let stageName = record["stage"]?.stringValue else { continue }
            if stageName == "acknowledged" {
                entries[id]?.acknowledged = true
                entries[id]?.final = nil
                continue
            }
            guard let stage = Stage(rawValue: stageName) else { continue }
            let final = Self.nonNull(record["final"])
            if entries[id] == nil {
                order.append(id)
                // A compacted entry carries its acknowledgement; a record from before finals were kept counts as acknowledged.
                let acknowledged = record["acknowledged"]?.boolValue ?? (stage == .finished && final.isNone)
                entries[id] = Entry(id: id, stage: stage, operation: stage == .finished ? .null : record["operation"] ?? .null,
                                    fragment: record["fragment"]?.stringValue, status: record["status"]?.stringValue,
                                    final: acknowledged ? nil : final, acknowledged: acknowledged)
            } else {
                entries[id]?.stage = stage
                if let status = record["status"]?.stringValue { entries[id]?.status = status }
                if stage == .finished {
                    entries[id]?.operation = .null
                    entries[id]?.final = final
                    entries[id]?.acknowledged = final.isNone
                }
            }
        }
        return (entries, order)
    }
}

extension Optional where Wrapped == JSONValue {
    /// Absent (not JSON `null`, which `== nil` would also match through `ExpressibleByNilLiteral`).
    var isNone: Bool {
        if case .none = self { return true }
        return false
    }
}
