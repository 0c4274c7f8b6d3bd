import CMicroHTTPD
import Cumulocity
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Token access for plugins (seed 003): an HTTP proxy on 127.0.0.1 that forwards `/c8y/<path>` to
/// the tenant with the agent's current authentication (renewed and retried once on a 401), so
/// plugins never hold the device's credentials or tokens.
///
/// Every request must carry the per-run secret in `X-Switchyard-Secret` (plugins get it in
/// `SWITCHYARD_PROXY_SECRET`): a port on loopback is open to every local user, the secret is not.
/// `GET /token` answers the current device access token (certificate mode), for `switchyard token`.
/// Served by libmicrohttpd, a thread per connection. Bodies are held in memory, up to 16 MiB each way
/// (not streamed: see the closing note of issue 5).
final class PluginProxy: @unchecked Sendable {
    static let secretHeader = "X-Switchyard-Secret"
    /// In the state directory while the agent runs: `{"url", "secret"}`, mode 0600.
    static let file = "proxy.json"
    static let maxBody = 16 << 20

    let client: PlatformClient
    let secret: String
    let logger: Logger
    private let server: UnsafeMutablePointer<sy_mhd_server>
    private var daemon: OpaquePointer?
    private(set) var port: UInt16 = 0

    /// The base URL plugins use: `http://127.0.0.1:<port>/c8y`.
    var url: String { "http://127.0.0.1:\(port)/c8y" }

    /// The variables a plugin gets to reach the proxy.
    var environment: [String: String] { ["SWITCHYARD_PROXY_URL": url, "SWITCHYARD_PROXY_SECRET": secret] }

    init(client: PlatformClient, logger: Logger) {
        self.client = client
        self.logger = logger
        self.secret = Self.randomSecret()
        server = .allocate(capacity: 1)
    }

    /// Starts listening on 127.0.0.1:`port` (0: any free port).
    func start(port: UInt16) throws(ProxyError) {
        server.initialize(to: sy_mhd_server(handler: { cls, connection, method, uri, body, length, tooLarge in
            guard let cls, let connection, let method, let uri else { return sy_mhd_refuse() }
            let proxy = Unmanaged<PluginProxy>.fromOpaque(cls).takeUnretainedValue()
            let bytes = body.map { Array(UnsafeBufferPointer(start: $0, count: length)) } ?? []
            return proxy.handle(connection, method: String(cString: method), uri: String(cString: uri), body: bytes,
                                tooLarge: tooLarge != 0)
        }, error: { cls, message in
            guard let cls, let message else { return }
            let proxy = Unmanaged<PluginProxy>.fromOpaque(cls).takeUnretainedValue()
            proxy.logger.warning("plugin proxy: \(String(cString: message))")
        }, cls: Unmanaged.passUnretained(self).toOpaque(), max_body: Self.maxBody))
        guard let daemon = sy_mhd_start(port, server) else {
            throw ProxyError(detail: "cannot listen on 127.0.0.1:\(port) (is the port in use?)")
        }
        self.daemon = daemon
        self.port = sy_mhd_port(daemon)
    }

    /// Stops listening; requests in flight are cut.
    func stop() {
        if let daemon { MHD_stop_daemon(daemon) }
        daemon = nil
    }

    deinit {
        stop()
        server.deallocate()
    }

    private func handle(_ connection: OpaquePointer, method: String, uri: String, body: [UInt8], tooLarge: Bool) -> MHD_Result {
        guard let presented = header(connection, Self.secretHeader), Self.equalInConstantTime(presented, secret) else {
            return respond(connection, 401, text: "missing or wrong \(Self.secretHeader) (plugins get it in SWITCHYARD_PROXY_SECRET)")
        }
        if tooLarge { return respond(connection, 413, text: "request body larger than \(Self.maxBody) bytes") }
        let headers = ["Accept", "Content-Type", "Range", "If-Match", "If-None-Match", "X-Cumulocity-Processing-Mode"]
            .compactMap { name in header(connection, name).map { (name: name, value: $0) } }
        let completion = Completion()
        let request: @Sendable () async -> Result<HTTPResponse, PlatformError>
        if uri == "/token" && method == "GET" {
            request = { [client] in await Self.token(client) }
        } else if uri.hasPrefix("/c8y/") {
            let path = String(uri.dropFirst(4))
            request = { [client] in
                do throws(PlatformError) {
                    return .success(try await client.forward(method, path, headers: headers,
                                                             body: body.isEmpty && ["GET", "HEAD", "DELETE"].contains(method) ? nil : body))
                } catch {
                    return .failure(error)
                }
            }
        } else {
            return respond(connection, 404, text: "the proxy serves /c8y/<path> (the tenant's API) and /token")
        }
        // This is libmicrohttpd's thread for the connection, not one of Swift's: it may wait.
        Task { completion.finish(await request()) }
        switch completion.wait() {
        case .success(let response)?:
            return respond(connection, response.status, headers: Self.kept(response), body: response.body)
        case .failure(let error)?:
            logger.warning("plugin proxy: request failed", metadata: ["method": "\(method)", "path": "\(uri)", "error": "\(error)"])
            return respond(connection, 502, text: "the tenant could not be reached: \(error)")
        case nil:
            return respond(connection, 500, text: "no answer")
        }
    }

    /// The answer's headers a plugin may need.
    private static func kept(_ response: HTTPResponse) -> [(String, String)] {
        ["content-type", "location", "etag", "last-modified", "content-range", "accept-ranges", "content-disposition"]
            .compactMap { name in response.headers[name].map { (name, $0) } }
    }

    private static func token(_ client: PlatformClient) async -> Result<HTTPResponse, PlatformError> {
        do throws(PlatformError) {
            let authorization = try await client.credentials.authorization()
            guard authorization.hasPrefix("Bearer ") else {
                return .success(HTTPResponse(status: 404, headers: ["content-type": "text/plain"],
                                             body: Array("this agent authenticates with a password (auth.mode basic or bootstrap): there is no token; use the proxy\n".utf8)))
            }
            return .success(HTTPResponse(status: 200, headers: ["content-type": "text/plain"], body: Array(authorization.dropFirst(7).utf8)))
        } catch {
            return .failure(error)
        }
    }

    private func header(_ connection: OpaquePointer, _ name: String) -> String? {
        sy_mhd_header(connection, name).map { String(cString: $0) }
    }

    private func respond(_ connection: OpaquePointer, _ status: Int, text: String) -> MHD_Result {
        respond(connection, status, headers: [("Content-Type", "text/plain; charset=utf-8")], body: Array((text + "\n").utf8))
    }

    private func respond(_ connection: OpaquePointer, _ status: Int, headers: [(String, String)], body: [UInt8]) -> MHD_Result {
        withHeaderArrays(headers) { names, values in
            body.withUnsafeBufferPointer { bytes in
                sy_mhd_respond(connection, UInt32(status), names, values, headers.count, bytes.baseAddress, bytes.count)
            }
        }
    }

    private func withHeaderArrays(_ headers: [(String, String)],
                                  _ body: (UnsafePointer<UnsafePointer<CChar>?>?, UnsafePointer<UnsafePointer<CChar>?>?) -> MHD_Result) -> MHD_Result {
        let names: [UnsafePointer<CChar>?] = headers.map { UnsafePointer(strdup($0.0)) }
        let values: [UnsafePointer<CChar>?] = headers.map { UnsafePointer(strdup($0.1)) }
        defer { (names + values).forEach { free(UnsafeMutablePointer(mutating: $0)) } }
        return names.withUnsafeBufferPointer { n in
            values.withUnsafeBufferPointer { v in body(n.baseAddress, v.baseAddress) }
        }
    }

    static func randomSecret() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<32).map { _ in String(UInt8.random(in: 0...255, using: &generator), radix: 16).leftPadded(to: 2) }.joined()
    }

    static func equalInConstantTime(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        guard x.count == y.count else { return false }
        var difference: UInt8 = 0
        for index in x.indices { difference |= x[index] ^ y[index] }
        return difference == 0
    }
}

/// A result handed from a task to a waiting thread.
private final class Completion: @unchecked Sendable {
    private let result = Mutex<Result<HTTPResponse, PlatformError>?>(nil)
    private let semaphore: UnsafeMutablePointer<sem_t> = .allocate(capacity: 1)

    init() { sem_init(semaphore, 0, 0) }

    deinit {
        sem_destroy(semaphore)
        semaphore.deallocate()
    }

    func finish(_ value: Result<HTTPResponse, PlatformError>) {
        result.withLock { $0 = value }
        sem_post(semaphore)
    }

    func wait() -> Result<HTTPResponse, PlatformError>? {
        while sem_wait(semaphore) != 0 && errno == EINTR {}
        return result.withLock { $0 }
    }
}

struct ProxyError: Error, CustomStringConvertible {
    let detail: String
    var description: String { "plugin proxy: \(detail)" }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
