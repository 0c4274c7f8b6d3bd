import Cumulocity

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Downloads artifacts for handlers: streamed to a file (``PlatformClient/download(_:into:resumeFrom:maxBytes:timeout:)``,
/// which picks the credentials), resumed with Range after an interruption, synced off the cooperative pool.
struct Downloader {
    let client: PlatformClient
    var attempts = 4
    var timeout: Duration = .seconds(3600)

    func download(_ url: String, to path: String, maxBytes: Int64) async throws -> Int64 {
        guard PlatformClient.origin(of: url) != nil else {
            throw DownloadError(url: url, detail: "not an http(s) URL")
        }
        let fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw DownloadError(url: url, detail: "cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var attempt = 0
        while true {
            attempt += 1
            let offset = lseek(fd, 0, SEEK_END)
            do {
                let response = try await client.download(url, into: fd, resumeFrom: Int64(max(0, offset)), maxBytes: maxBytes,
                                                         timeout: timeout)
                if response.status == 416 && offset > 0 {
                    _ = ftruncate(fd, 0)  // the partial file does not fit what the server has: start over
                    continue
                }
                guard (200..<300).contains(response.status) else {
                    _ = ftruncate(fd, 0)
                    throw DownloadError(url: url, detail: "HTTP \(response.status): \(JSONValue.excerpt(response.body))")
                }
                // Syncing a 1 GiB image takes seconds on flash: not on the cooperative pool.
                let synced = await BlockingPool.run { () -> Int32 in fsync(fd) == 0 ? 0 : errno }
                guard synced == 0 else { throw DownloadError(url: url, detail: "fsync failed: \(String(cString: strerror(synced)))") }
                return Int64(lseek(fd, 0, SEEK_END))
            } catch let error as PlatformError where error.transport?.code == .network || error.transport?.code == .timeout {
                guard attempt < attempts else { throw DownloadError(url: url, detail: "\(error.detail) (after \(attempt) attempts)") }
                try await Task.sleep(for: .milliseconds(200 * attempt))
            } catch let error as PlatformError {
                throw DownloadError(url: url, detail: error.code == .credentials ? error.description : error.detail)
            }
        }
    }
}

/// A download that did not complete.
struct DownloadError: Error, CustomStringConvertible {
    let url: String
    let detail: String
    var description: String { "download of \(url) failed: \(detail)" }
}

import JSONSupport

/// Downloads an artifact exactly as handlers do (for the workbench's benchmark).
package func downloadArtifact(client: PlatformClient, url: String, to path: String, maxBytes: Int64) async throws -> Int64 {
    try await Downloader(client: client).download(url, to: path, maxBytes: maxBytes)
}
