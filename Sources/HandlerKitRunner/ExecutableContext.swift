public import HandlerKit
import Cumulocity
import Dispatch
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The ``HandlerContext`` of a handler running as an executable plugin (``HandlerRunner``): what the
/// agent does in-process is done here through directives, the state directory and the plugin proxy.
final class ExecutableContext: HandlerContext, @unchecked Sendable {
    let phase: Phase
    let stateDirectory: String
    private let output: DirectiveWriter
    private let environment: [String: String]
    /// The agent's plugin proxy (`SWITCHYARD_PROXY_URL` and its secret), if this run has one.
    private let proxySettings: (url: String, secret: String)?
    /// The tenant through the proxy, made at the first request (libcurl's start-up and its thread
    /// cost milliseconds a handler that never calls the tenant should not pay).
    private let clients = Mutex<PlatformClient?>(nil)
    /// The tenant's own URL, to tell its URLs from others' and to give back URLs the platform knows.
    private let tenantURL: String

    init(environment: [String: String], output: DirectiveWriter, phase: Phase) {
        self.environment = environment
        self.output = output
        self.phase = phase
        stateDirectory = environment["SWITCHYARD_STATE_DIR"] ?? "."
        tenantURL = environment["SWITCHYARD_C8Y_URL"] ?? ""
        if let url = environment["SWITCHYARD_PROXY_URL"], let secret = environment["SWITCHYARD_PROXY_SECRET"] {
            proxySettings = (url, secret)
        } else {
            proxySettings = nil
        }
    }

    /// The proxy's client, made once; `nil` without a proxy.
    private var proxy: PlatformClient? {
        get throws(RunnerError) {
            guard let proxySettings else { return nil }
            return try clients.withLock { (client: inout PlatformClient?) throws(RunnerError) -> PlatformClient in
                if let client { return client }
                do {
                    let made = PlatformClient(baseURL: proxySettings.url, transport: try CurlTransport(),
                                              credentials: ProxySecret(secret: proxySettings.secret), authorizationHeader: "X-Switchyard-Secret")
                    client = made
                    return made
                } catch {
                    throw RunnerError("cannot start a transfer: \(error)")
                }
            }
        }
    }

    // MARK: Directives

    func log(_ message: String) async { output.log(message) }

    func updateInventory(_ fragments: [String: JSONValue]) async throws {
        output.directive("inventory", ["fragments": .object(fragments)])
    }

    func sendEvent(type: String, text: String, fragments: [String: JSONValue]) async throws {
        output.directive("event", ["type": .string(type), "text": .string(text), "fragments": .object(fragments)])
    }

    func sendMeasurement(type: String, fragments: [String: JSONValue]) async throws {
        output.directive("measurement", ["type": .string(type), "fragments": .object(fragments)])
    }

    func raiseAlarm(type: String, severity: AlarmSeverity, text: String) async throws {
        output.directive("alarm", ["type": .string(type), "severity": .string(severity.rawValue), "text": .string(text)])
    }

    func clearAlarm(type: String) async throws {
        output.directive("clear-alarm", ["type": .string(type)])
    }

    // MARK: State, as the agent keeps it for compiled handlers

    func saveState(_ value: String, forKey key: String) async throws {
        let path = statePath(key)
        try await blocking { () throws(RunnerError) in try writeDurably(path, Array(value.utf8)) }
    }

    func loadState(forKey key: String) async -> String? {
        readFileBytes(statePath(key)).map { String(decoding: $0, as: UTF8.self) }
    }

    private func statePath(_ key: String) -> String {
        stateDirectory + "/state." + String(key.map { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" ? $0 : "_" })
    }

    // MARK: Work in this process

    func blocking<T: Sendable, Failure: Error>(_ work: @escaping @Sendable () throws(Failure) -> T) async throws(Failure) -> T {
        let result: Result<T, Failure> = await withCheckedContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(returning: Result(catching: work)) }
        }
        return try result.get()
    }

    func sha256(ofFile path: String) async throws -> String {
        try await blocking { () throws(DigestError) in try sha256Hex(ofFile: path) }
    }

    func runCommand(_ argv: [String], input: [UInt8]?, environment: [String: String], timeout: Duration,
                    logging: CommandLogging) async -> CommandResult {
        await CommandRunner.run(argv, input: input, environment: environment.merging(proxyVariables) { own, _ in own },
                                timeout: timeout, directory: stateDirectory, logging: logging, log: output)
    }

    /// A handler's commands reach the tenant through the proxy too, as in-process.
    private var proxyVariables: [String: String] {
        environment.filter { $0.key == "SWITCHYARD_PROXY_URL" || $0.key == "SWITCHYARD_PROXY_SECRET" }
    }

    func runStep(_ step: String, fragment: String, payload: JSONValue, phase: Phase) async -> Outcome {
        .failed("the \(step) step (\(fragment)) needs the agent's handlers: a handler running as an executable cannot run steps")
    }

    // MARK: The tenant, through the proxy

    private func requireProxy(_ what: String) throws(RunnerError) -> PlatformClient {
        guard let proxy = try proxy else {
            throw RunnerError("\(what) needs the agent's plugin proxy (SWITCHYARD_PROXY_URL), which this run does not have")
        }
        return proxy
    }

    /// The URL through the proxy for one of the tenant's, else the URL itself.
    private func proxied(_ url: String) -> String {
        guard let proxySettings, !tenantURL.isEmpty, PlatformClient.origin(of: url) == PlatformClient.origin(of: tenantURL),
              let path = URLPath.pathAndQuery(of: url) else { return url }
        return withoutTrailingSlash(proxySettings.url) + path
    }

    /// A URL the proxy answered with, as the platform knows it.
    private func unproxied(_ url: String) -> String {
        guard let base = proxySettings.map({ withoutTrailingSlash($0.url) }), url.hasPrefix(base), !tenantURL.isEmpty else { return url }
        return withoutTrailingSlash(tenantURL) + url.dropFirst(base.count)
    }

    func download(_ url: String, to path: String, maxBytes: Int64) async throws -> Int64 {
        let target = proxied(url)
        let client = try proxy ?? directClient()
        let fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw RunnerError("cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var attempt = 0
        while true {
            attempt += 1
            let offset = Int64(max(0, lseek(fd, 0, SEEK_END)))
            do {
                let response = try await client.download(target, into: fd, resumeFrom: offset, maxBytes: maxBytes, timeout: .seconds(3600))
                if response.status == 416 && offset > 0 { _ = ftruncate(fd, 0); continue }
                guard (200..<300).contains(response.status) else {
                    _ = ftruncate(fd, 0)
                    throw RunnerError("download of \(url) failed: HTTP \(response.status): \(JSONValue.excerpt(response.body))")
                }
                let synced = await blocking { () -> Int32 in fsync(fd) == 0 ? 0 : errno }
                guard synced == 0 else { throw RunnerError("download of \(url) failed: fsync: \(String(cString: strerror(synced)))") }
                return Int64(lseek(fd, 0, SEEK_END))
            } catch let error as PlatformError where error.transport != nil && attempt < 4 && error.isRetryable {
                try await Task.sleep(for: .milliseconds(200 * attempt))
            } catch let error as PlatformError {
                throw RunnerError("download of \(url) failed: \(error.detail)")
            }
        }
    }

    private func directClient() throws(RunnerError) -> PlatformClient {
        do {
            return PlatformClient(baseURL: "http://unused.invalid", transport: try CurlTransport(), credentials: ProxySecret(secret: ""))
        } catch {
            throw RunnerError("cannot start a transfer: \(error)")
        }
    }

    func sendEvent(type: String, text: String, fragments: [String: JSONValue], attaching path: String,
                   fileName: String, contentType: String) async throws -> String {
        let client = try requireProxy("sending a file")
        var event = fragments
        event["source"] = ["id": .string(environment["SWITCHYARD_DEVICE_ID"] ?? "")]
        event["type"] = .string(type)
        event["text"] = .string(text)
        event["time"] = .string(platformTimestamp())
        let id = try await client.createEvent(.object(event))
        return unproxied(try await client.attachFile(toEvent: id, path: path, name: fileName, contentType: contentType))
    }

    func storeFile(_ path: String, fileName: String, contentType: String,
                   describedBy fragments: [String: JSONValue]) async throws -> (url: String, managedObject: String) {
        let client = try requireProxy("storing a file")
        let url = unproxied(try await client.uploadBinary(path: path, name: fileName, contentType: contentType))
        let created = try await client.createManagedObject(.object(fragments.merging(["url": .string(url)]) { $1 }))
        return (url, created["id"]?.idValue ?? "")
    }
}

/// The proxy's secret, sent as `X-Switchyard-Secret`.
struct ProxySecret: CredentialProvider {
    let secret: String
    func authorization() async throws(PlatformError) -> String { secret }
    func invalidate(_ authorization: String) async {}
}

/// What the runner could not do, with why.
struct RunnerError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

enum URLPath {
    /// `/path?query` of an absolute URL.
    static func pathAndQuery(of url: String) -> String? {
        guard let scheme = url.firstRange(of: "://") else { return nil }
        let rest = url[scheme.upperBound...]
        guard let slash = rest.firstIndex(of: "/") else { return "/" }
        return String(rest[slash...])
    }
}

func withoutTrailingSlash(_ url: String) -> String {
    var url = url
    while url.hasSuffix("/") { url.removeLast() }
    return url
}

/// Writes a small file atomically and durably (temporary file, fsync, rename, directory fsync).
func writeDurably(_ path: String, _ bytes: [UInt8]) throws(RunnerError) {
    let temporary = path + ".tmp"
    let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    guard fd >= 0 else { throw RunnerError("cannot write \(path): \(String(cString: strerror(errno)))") }
    let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    let synced = fsync(fd)
    close(fd)
    guard written == bytes.count, synced == 0, rename(temporary, path) == 0 else {
        unlink(temporary)
        throw RunnerError("cannot write \(path): \(String(cString: strerror(errno)))")
    }
    let slash = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? "."
    let directory = open(slash.isEmpty ? "/" : slash, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    if directory >= 0 { fsync(directory); close(directory) }
}
