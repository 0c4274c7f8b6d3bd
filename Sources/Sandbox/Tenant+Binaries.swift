import FoundationEssentials
import JSONSupport

/// A file as uploaded: its name, media type and content.
public struct StoredFile: Sendable {
    public var name: String
    public var type: String
    public var bytes: [UInt8]
}

/// Binaries: uploads, ranged downloads, and the faults that cut them.
extension Tenant {
    // MARK: Binaries


    /// Stores a file and returns its id (download it from `/inventory/binaries/<id>`).
    public func addBinary(_ bytes: [UInt8], name: String? = nil, type: String = "application/octet-stream", owner: String? = nil) -> String {
        let id = newID()
        binaries[id] = bytes
        var info: [String: JSONValue] = [
            "id": .string(id), "name": .string(name ?? "binary-\(id)"), "type": .string(type), "contentType": .string(type),
            "length": .int(Int64(bytes.count)), "c8y_IsBinary": [:], "lastUpdated": .string(Self.now()),
            "self": .string("/inventory/binaries/\(id)"),
        ]
        if let owner { info["owner"] = .string(owner) }
        binaryInfo[id] = .object(info)
        return id
    }

    /// The metadata of every stored file (the managed objects with `c8y_IsBinary`), oldest first.
    func binaryList() -> [JSONValue] {
        Self.oldestFirst(binaryInfo.values)
    }

    /// A stored file's metadata.
    public func binaryMetadata(_ id: String) -> JSONValue? { binaryInfo[id] }

    /// Removes a stored file; whether it existed.
    func deleteBinary(_ id: String) -> Bool {
        binaryInfo[id] = nil
        return binaries.removeValue(forKey: id) != nil
    }

    /// The next binary download sends only `bytes` bytes of its body and then drops the connection.
    public func cutNextDownload(after bytes: Int) {
        cutNextDownloadAfter = bytes
    }

    func binary(_ id: String, range: String?) -> (bytes: [UInt8], cutAfter: Int?)? {
        binaryRequests.append("\(id) \(range ?? "-")")
        guard let bytes = binaries[id] else { return nil }
        defer { cutNextDownloadAfter = nil }
        return (bytes, cutNextDownloadAfter)
    }


    public func setBinaryPace(_ pace: Duration?) { binaryPace = pace }

    func binaryDownload(started: Bool) { binaryDownloadsSending += started ? 1 : -1 }

    func uploadReceived(_ id: String, bytes: Int) { uploadProgress[id, default: 0] += bytes }

    /// Replaces a binary's content and returns its updated metadata; `nil` when there is no such binary.
    func replaceBinary(_ id: String, with bytes: [UInt8], contentType: String? = nil) -> JSONValue? {
        guard binaries[id] != nil else { return nil }
        binaries[id] = bytes
        var info = binaryInfo[id]?.objectValue ?? ["id": .string(id), "c8y_IsBinary": [:]]
        info["length"] = .int(Int64(bytes.count))
        info["lastUpdated"] = .string(Self.now())
        if let contentType { info["contentType"] = .string(contentType) }
        binaryInfo[id] = .object(info)
        return .object(info)
    }

    // MARK: Event binaries (one file per event)

    enum AttachResult { case attached(JSONValue), noEvent, exists }

    /// Attaches a file to an event (`replace`: only if it has one; otherwise only if it has none);
    /// the event gets a `c8y_IsBinary` fragment. Answers the platform's `eventBinary` shape.
    func attachBinary(toEvent id: String, _ file: StoredFile, replace: Bool) -> AttachResult {
        guard let index = events.firstIndex(where: { $0["id"]?.idValue == id }) else { return .noEvent }
        if (eventBinaries[id] != nil) != replace { return replace ? .noEvent : .exists }
        eventBinaries[id] = file
        events[index] = events[index].merging(["c8y_IsBinary": ["name": .string(file.name), "type": .string(file.type),
                                                                "length": .int(Int64(file.bytes.count))]])
        return .attached(["name": .string(file.name), "type": .string(file.type), "source": .string(id),
                          "self": .string("/event/events/\(id)/binaries")])
    }

    /// An event's file.
    public func eventBinary(_ id: String) -> StoredFile? { eventBinaries[id] }

    /// Removes an event's file and its `c8y_IsBinary` fragment; whether there was one.
    func detachBinary(fromEvent id: String) -> Bool {
        guard eventBinaries.removeValue(forKey: id) != nil else { return false }
        if let index = events.firstIndex(where: { $0["id"]?.idValue == id }), case .object(var members) = events[index] {
            members["c8y_IsBinary"] = nil
            events[index] = .object(members)
        }
        return true
    }

    /// The content of a binary.
    public func binaryContent(_ id: String) -> [UInt8]? { binaries[id] }
}
