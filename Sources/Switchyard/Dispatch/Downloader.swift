import Cumulocity

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Downloads artifacts for handlers: streamed to a file, resumed with Range after an interruption,
/// with the tenant's credentials only for URLs on the tenant's host.
struct Downloader {
    let client: PlatformClient
    var attempts = 4
    var timeout: Duration = .seconds(3600)

    /// The scheme, host and port of a URL (`https://host:8443`), lower-cased.
    static func origin(_ url: String) -> String? {
        guard let schemeEnd = url.firstRange(of: "://") else { return nil }
        let rest = url[schemeEnd.upperBound...]
        let authority = rest.prefix { $0 != "/" && $0 != "?" && $0 != "#" }
        guard !authority.isEmpty, !authority.contains("@") else { return nil }
        return (url[..<schemeEnd.upperBound] + authority).lowercased()
    }

    func download(_ url: String, to path: String, maxBytes: Int64) async throws -> Int64 {
        guard let origin = Self.origin(url), origin.hasPrefix("http://") || origin.hasPrefix("https://") else {
            throw DownloadError(url: url, detail: "not an http(s) URL")
        }
        let fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw DownloadError(url: url, detail: "cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        // The tenant's credentials go to the tenant only; a configured artifact host gets its own token.
        let credentials: (any CredentialProvider)? =
            origin == Self.origin(client.baseURL) ? client.credentials : client.hostCredentials[origin]
        var refusedOnce = false
        var attempt = 0
        while true {
            attempt += 1
            var headers: [(name: String, value: String)] = [("Accept", "*/*")]
            let authorization = try await credentials?.authorization()
            if let authorization { headers.append(("Authorization", authorization)) }
            let offset = lseek(fd, 0, SEEK_END)
            do {
                let response = try await client.transport.download(
                    HTTPRequest(method: "GET", url: url, headers: headers, timeout: timeout),
                    into: fd, resumeFrom: Int64(max(0, offset)), maxBytes: maxBytes)
                if response.status == 401, let credentials, let authorization, !refusedOnce {
                    refusedOnce = true  // the token was refused: get a new one, once
                    await credentials.invalidate(authorization)
                    continue
                }
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
            } catch let error as TransportError where error.kind == .network || error.kind == .timeout {
                guard attempt < attempts else { throw DownloadError(url: url, detail: "\(error.detail) (after \(attempt) attempts)") }
                try await Task.sleep(for: .milliseconds(200 * attempt))
            } catch let error as TransportError {
                throw DownloadError(url: url, detail: error.detail)
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
