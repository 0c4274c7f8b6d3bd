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
/// An append-only file of JSON lines (`journal.jsonl` in the state directory). It is what makes
/// execution at-most-once: an operation id found here is never started again, however often it is
/// delivered, across restarts. And it is what lets the agent reconcile with the platform: a
/// finished operation the platform still shows as PENDING or EXECUTING gets its final status again
/// from here (``unacknowledged()``).
///
/// Durability: `accepted`, `started` and `finished` records are fsynced (three syncs per operation);
/// `acknowledged` is not (losing it only means the final status may be sent once more, which the
/// platform takes as it is). A record is written whole or not at all: a failed write (a full disk)
/// is cut off again, and when even that fails the next record starts on a new line, so a torn
/// record never swallows the one after it; a torn last line (a crash mid-write) is skipped when the
/// file is read. The file is compacted at open and whenever enough records have piled up while
/// running, to the unfinished and unacknowledged entries and the most recent finished ones.
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
    }

    private let path: String
    private let logger: Logger
    private let keepFinished: Int
    private var entries: [String: Entry]
    private var order: [String]
    private var fd: Int32
    /// The file's length up to the end of its last whole record.
    private var length: Int
    /// A write failed and could not be cut off: the next record starts with a newline.
    private var torn = false
    /// Records appended since the file was last compacted.
    private var appendedSinceCompaction = 0

    /// - Parameter keepFinished: how many acknowledged finished entries are kept for duplicate detection.
    public init(directory: String, keepFinished: Int = 2000, logger: Logger) throws(FileSystemError) {
        try FileSystem.makeDirectories(directory, mode: 0o700)
        let path = directory + "/journal.jsonl"
        self.path = path
        self.logger = logger
        self.keepFinished = keepFinished
        let (entries, order, damaged) = try Self.readRecords(path)
        if damaged > 0 {
            logger.warning("journal had unreadable lines (a crash mid-write); they were skipped",
                           metadata: ["file": "\(path)", "lines": "\(damaged)"])
        }
        let (kept, keptOrder) = Self.compacted(entries, order, keepFinished: keepFinished)
        do {
            (fd, length) = try Self.rewrite(path, kept, keptOrder)
        } catch where error.isDiskFull {
            // A full disk at start-up must not keep the agent from starting: append to the file as
            // it is (compacted next time), after a newline if its last record was cut short.
            logger.warning("cannot compact the journal: the disk is full; appending to it as it is",
                           metadata: ["file": "\(path)", "error": "\(error)"])
            (fd, length, torn) = try Self.openForAppending(path)
        }
        self.entries = kept
        self.order = keptOrder
    }

    /// Opens the file as it is for appending; `torn` when it does not end with a newline.
    private static func openForAppending(_ path: String) throws(FileSystemError) -> (Int32, Int, Bool) {
        let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw FileSystemError(operation: "open", path: path, code: errno) }
        let bytes = (try? FileSystem.read(path)) ?? nil
        return (fd, bytes?.count ?? 0, bytes.map { !$0.isEmpty && $0.last != UInt8(ascii: "\n") } ?? false)
    }

    deinit {
        if fd >= 0 { close(fd) }
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

    /// Ids of unfinished operations and of the `recentFinished` most recently finished ones.
    public func idsToKeep(recentFinished: Int) -> Set<String> {
        let finished = order.filter { entries[$0]?.stage == .finished }.suffix(recentFinished)
        return Set(order.filter { entries[$0]?.stage != .finished }).union(finished)
    }

    /// The size of the file, for housekeeping figures.
    public var fileSize: Int { length }

    /// Records that an operation was taken on. Returns `false` if it was already known (a duplicate).
    public func accept(_ id: String, operation: JSONValue, fragment: String?) throws(FileSystemError) -> Bool {
        guard entries[id] == nil else { return false }
        try append(["id": .string(id), "stage": "accepted", "operation": operation,
                    "fragment": fragment.map(JSONValue.string) ?? .null])
        entries[id] = Entry(id: id, stage: .accepted, operation: operation, fragment: fragment)
        order.append(id)
        return true
    }

    public func started(_ id: String) throws(FileSystemError) {
        try append(["id": .string(id), "stage": "started"])
        entries[id]?.stage = .started
    }

    /// Records the operation's end; `final` is the status update queued for the platform, kept until
    /// ``acknowledged(_:)`` so that it can be sent again if the platform never got it.
    public func finished(_ id: String, status: String, final: JSONValue? = nil) throws(FileSystemError) {
        try append(["id": .string(id), "stage": "finished", "status": .string(status), "final": final ?? .null])
        entries[id]?.stage = .finished
        entries[id]?.status = status
        entries[id]?.final = final
        entries[id]?.acknowledged = final.isNone
        entries[id]?.operation = .null  // the body is no longer needed
    }

    /// Records that the platform has the operation's final status (not fsynced: see the type's notes).
    public func acknowledged(_ id: String) {
        guard let entry = entries[id], entry.stage == .finished, !entry.acknowledged else { return }
        do {
            try append(["id": .string(id), "stage": "acknowledged"], sync: false)
        } catch {
            logger.debug("cannot record an acknowledgement; the final status may be sent again",
                         metadata: ["operation": "\(id)", "error": "\(error)"])
        }
        entries[id]?.acknowledged = true
        entries[id]?.final = nil
        compactIfDue()
    }

    private func append(_ record: JSONValue, sync: Bool = true) throws(FileSystemError) {
        var bytes = record.encoded() + [UInt8(ascii: "\n")]
        if torn { bytes.insert(UInt8(ascii: "\n"), at: 0) }
        do throws(FileSystemError) {
            try FileSystem.writeAll(fd, bytes, path: path)
            if sync, fsync(fd) != 0 { throw FileSystemError(operation: "fsync", path: path, code: errno) }
        } catch {
            // Cut the partial record off, so the next one does not glue to it (a file that already
            // ended in a torn record stays marked: the next record still needs its newline).
            if ftruncate(fd, off_t(length)) != 0 { torn = true }
            throw error
        }
        length += bytes.count
        torn = false
        appendedSinceCompaction += 1
    }

    /// Compacts the file while running once it holds many more records than live entries
    /// (amortised: one rewrite, two syncs, per thousands of operations).
    private func compactIfDue() {
        guard appendedSinceCompaction > max(1000, 2 * entries.count) else { return }
        let (kept, keptOrder) = Self.compacted(entries, order, keepFinished: keepFinished)
        do {
            let (newFD, newLength) = try Self.rewrite(path, kept, keptOrder)
            close(fd)
            fd = newFD
            length = newLength
            entries = kept
            order = keptOrder
            appendedSinceCompaction = 0
            torn = false
        } catch {
            // Retried at the next acknowledgement: appends to the old file go on meanwhile.
            logger.warning("cannot compact the journal", metadata: ["file": "\(path)", "error": "\(error)"])
            appendedSinceCompaction = 0
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

    /// Rewrites the file with the given entries, then opens it for appending.
    private static func rewrite(_ path: String, _ entries: [String: Entry], _ order: [String]) throws(FileSystemError) -> (Int32, Int) {
        var bytes: [UInt8] = []
        for id in order {
            guard let entry = entries[id] else { continue }
            let record: JSONValue = [
                "id": .string(id), "stage": .string(entry.stage.rawValue), "operation": entry.operation,
                "fragment": entry.fragment.map(JSONValue.string) ?? .null, "status": entry.status.map(JSONValue.string) ?? .null,
                "final": entry.final ?? JSONValue.null, "acknowledged": .bool(entry.acknowledged),
            ]
            bytes += record.encoded() + [UInt8(ascii: "\n")]
        }
        try FileSystem.writeAtomically(path, bytes, mode: 0o600)
        let fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC)
        guard fd >= 0 else { throw FileSystemError(operation: "open", path: path, code: errno) }
        return (fd, bytes.count)
    }

    /// A value that is present and not JSON `null` (JSONValue takes `nil` literals, so this is spelled out).
    private static func nonNull(_ value: JSONValue?) -> JSONValue? {
        switch value {
        case .none, .some(.null): return Optional<JSONValue>.none
        case .some(let value): return value
        }
    }

    private static func readRecords(_ path: String) throws(FileSystemError) -> ([String: Entry], [String], Int) {
        var entries: [String: Entry] = [:]
        var order: [String] = []
        var damaged = 0
        guard let bytes = try FileSystem.read(path) else { return ([:], [], 0) }
        for line in bytes.split(separator: UInt8(ascii: "\n")) where !line.isEmpty {
            guard let record = try? JSONValue.parse(line), let id = record["id"]?.stringValue,
                  let stageName = record["stage"]?.stringValue else {
                damaged += 1
                continue
            }
            if stageName == "acknowledged" {
                entries[id]?.acknowledged = true
                entries[id]?.final = nil
                continue
            }
            guard let stage = Stage(rawValue: stageName) else {
                damaged += 1
                continue
            }
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
        return (entries, order, damaged)
    }
}

extension Optional where Wrapped == JSONValue {
    /// Absent (not JSON `null`, which `== nil` would also match through `ExpressibleByNilLiteral`).
    var isNone: Bool {
        if case .none = self { return true }
        return false
    }
}
