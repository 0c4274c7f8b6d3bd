import FoundationEssentials
import JSONSupport

/// Binaries: uploads, ranged downloads, and the faults that cut them.
extension Tenant {
    // MARK: Binaries


    /// Stores a file and returns its id (download it from `/inventory/binaries/<id>`).
    public func addBinary(_ bytes: [UInt8]) -> String {
        let id = newID()
        binaries[id] = bytes
        return id
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

    /// Replaces a binary's content; `false` when there is no such binary.
    func replaceBinary(_ id: String, with bytes: [UInt8]) -> Bool {
        guard binaries[id] != nil else { return false }
        binaries[id] = bytes
        return true
    }

    /// The content of a binary.
    public func binaryContent(_ id: String) -> [UInt8]? { binaries[id] }
}
