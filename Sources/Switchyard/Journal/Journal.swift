import JSONSupport
import Logging

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The durable record of which operations this agent has taken on, and how far each got.
///
/// An append-only file of JSON lines (`journal.jsonl` in the state directory), fsynced after every
/// record. It is what makes execution at-most-once: an operation id found here is never started
/// again, however often it is delivered, across restarts. At open, the file is compacted to the
/// unfinished entries and the most recent finished ones.
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
    }

    private let path: String
    private let logger: Logger
    private var entries: [String: Entry]
    private var order: [String]
    private let fd: Int32
    /// How many finished entries are kept for duplicate detection.

    public init(directory: String, keepFinished: Int = 2000, logger: Logger) throws(FileSystemError) {
        try FileSystem.makeDirectories(directory, mode: 0o700)
        let path = directory + "/journal.jsonl"
        self.path = path
        self.logger = logger
        let (entries, order, damaged) = try Self.readRecords(path)
        if damaged > 0 {
            logger.warning("journal had unreadable lines (a crash mid-write); they were skipped",
                           metadata: ["file": "\(path)", "lines": "\(damaged)"])
        }
        let (kept, keptOrder) = Self.compacted(entries, order, keepFinished: keepFinished)
        let fd = try Self.rewrite(path, kept, keptOrder)
        self.entries = kept
        self.order = keptOrder
        self.fd = fd
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

    /// Ids of unfinished operations and of the `recentFinished` most recently finished ones.
    public func idsToKeep(recentFinished: Int) -> Set<String> {
        let finished = order.filter { entries[$0]?.stage == .finished }.suffix(recentFinished)
        return Set(order.filter { entries[$0]?.stage != .finished }).union(finished)
    }

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

    public func finished(_ id: String, status: String) throws(FileSystemError) {
        try append(["id": .string(id), "stage": "finished", "status": .string(status)])
        entries[id]?.stage = .finished
        entries[id]?.status = status
        entries[id]?.operation = .null  // the body is no longer needed
    }

    private func append(_ record: JSONValue) throws(FileSystemError) {
        let bytes = record.encoded() + [UInt8(ascii: "\n")]
        try FileSystem.writeAll(fd, bytes, path: path)
        guard fsync(fd) == 0 else { throw FileSystemError(operation: "fsync", path: path, code: errno) }
    }

    /// The unfinished entries and the newest `keepFinished` finished ones.
    private static func compacted(_ entries: [String: Entry], _ order: [String], keepFinished: Int) -> ([String: Entry], [String]) {
        var entries = entries
        var order = order
        let finished = order.filter { entries[$0]?.stage == .finished }
        let dropped = Set(finished.dropLast(keepFinished))
        order.removeAll { dropped.contains($0) }
        for id in dropped { entries[id] = nil }
        return (entries, order)
    }

    /// Rewrites the file with the given entries, then opens it for appending.
    private static func rewrite(_ path: String, _ entries: [String: Entry], _ order: [String]) throws(FileSystemError) -> Int32 {
        var bytes: [UInt8] = []
        for id in order {
            guard let entry = entries[id] else { continue }
            let record: JSONValue = [
                "id": .string(id), "stage": .string(entry.stage.rawValue), "operation": entry.operation,
                "fragment": entry.fragment.map(JSONValue.string) ?? .null, "status": entry.status.map(JSONValue.string) ?? .null,
            ]
            bytes += record.encoded() + [UInt8(ascii: "\n")]
        }
        try FileSystem.writeAtomically(path, bytes, mode: 0o600)
        let fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC)
        guard fd >= 0 else { throw FileSystemError(operation: "open", path: path, code: errno) }
        return fd
    }

    private static func readRecords(_ path: String) throws(FileSystemError) -> ([String: Entry], [String], Int) {
        var entries: [String: Entry] = [:]
        var order: [String] = []
        var damaged = 0
        guard let bytes = try FileSystem.read(path) else { return ([:], [], 0) }
        for line in bytes.split(separator: UInt8(ascii: "\n")) where !line.isEmpty {
            guard let record = try? JSONValue.parse(line), let id = record["id"]?.stringValue,
                  let stage = record["stage"]?.stringValue.flatMap(Stage.init(rawValue:)) else {
                damaged += 1
                continue
            }
            if entries[id] == nil {
                order.append(id)
                entries[id] = Entry(id: id, stage: stage, operation: record["operation"] ?? .null,
                                    fragment: record["fragment"]?.stringValue, status: record["status"]?.stringValue)
            } else {
                entries[id]?.stage = stage
                if let status = record["status"]?.stringValue { entries[id]?.status = status }
                if stage == .finished { entries[id]?.operation = .null }
            }
        }
        return (entries, order, damaged)
    }
}
