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
/// plugins need not hold the device's credentials. They can ask for a token, though: see `GET /token`.
///
/// Every request must carry the per-run secret in `X-Switchyard-Secret` (plugins get it in
/// `SWITCHYARD_PROXY_SECRET`): a port on loopback is open to every local user, the secret is not.
/// `GET /token` answers the current device access token (certificate mode), for `switchyard token`.
///
/// Served by libmicrohttpd, a thread per connection. Bodies stream both ways: the tenant's request
/// starts as soon as the plugin's headers are in, its body follows as it arrives (and is kept, in
/// memory up to 64 KiB and beyond that in an unlinked file in the state directory, so a 401 can
/// send it again); a 2xx answer's body goes to the plugin as it comes, through a 256 KiB buffer
/// that pauses the transfer while the plugin is slower than the tenant.
final class PluginProxy: @unchecked Sendable {
    static let secretHeader = "X-Switchyard-Secret"
    /// In the state directory while the agent runs: `{"url", "secret"}`, mode 0600.
    static let file = "proxy.json"
    /// How long one exchange may take in all (a stall of two minutes ends it sooner).
    static let exchangeTimeout = Duration.seconds(6 * 3600)

    let client: PlatformClient
    let secret: String
    let logger: Logger
    /// Where request bodies beyond 64 KiB are kept while they are sent.
    let spoolDirectory: String
    /// The largest request body accepted.
    let maxUpload: Int64
    private let server: UnsafeMutablePointer<sy_mhd_server>
    private var daemon: OpaquePointer?
    private let live = Mutex<[ObjectIdentifier: ProxyExchange]>([:])
    private(set) var port: UInt16 = 0

    /// The base URL plugins use: `http://127.0.0.1:<port>/c8y`.
    var url: String { "http://127.0.0.1:\(port)/c8y" }

    /// The variables a plugin gets to reach the proxy.
    var environment: [String: String] { ["SWITCHYARD_PROXY_URL": url, "SWITCHYARD_PROXY_SECRET": secret] }

    init(client: PlatformClient, spoolDirectory: String, maxUpload: Int64 = 4 << 30, logger: Logger) {
        self.client = client
        self.logger = logger
        self.spoolDirectory = spoolDirectory
        self.maxUpload = maxUpload
        self.secret = Self.randomSecret()
        server = .allocate(capacity: 1)
    }

    /// Starts listening on 127.0.0.1:`port` (0: any free port).
    func start(port: UInt16) throws(ProxyError) {
        server.initialize(to: sy_mhd_server(access: Self.access, completed: Self.completed, uri: { cls, uri, _ in
            guard let cls else { return nil }
            let proxy = Unmanaged<PluginProxy>.fromOpaque(cls).takeUnretainedValue()
            let exchange = ProxyExchange(uri: uri.map { String(cString: $0) } ?? "/", logger: proxy.logger)
            proxy.live.withLock { $0[ObjectIdentifier(exchange)] = exchange }
            return Unmanaged.passRetained(exchange).toOpaque()
        }, error: { cls, message in
            guard let cls, let message else { return }
            let proxy = Unmanaged<PluginProxy>.fromOpaque(cls).takeUnretainedValue()
            proxy.logger.warning("plugin proxy: \(String(cString: message))")
        }, cls: Unmanaged.passUnretained(self).toOpaque()))
        guard let daemon = sy_mhd_start(port, server) else {
            throw ProxyError(detail: "cannot listen on 127.0.0.1:\(port) (is the port in use?)")
        }
        self.daemon = daemon
        self.port = sy_mhd_port(daemon)
    }

    /// Stops listening; exchanges in flight are cut.
    func stop() {
        for exchange in live.withLock({ Array($0.values) }) { exchange.cancel("the agent is stopping") }
        if let daemon { MHD_stop_daemon(daemon) }
        daemon = nil
    }

    deinit {
        stop()
        server.deallocate()
    }

    /// libmicrohttpd calls this once when a request's headers are in, once per piece of its body, and
    /// once more at its end, which must queue the answer.
    private static let access: MHD_AccessHandlerCallback = { cls, connection, _, method, _, upload, uploadSize, context in
        guard let cls, let connection, let method, let context, let uploadSize, let pointer = context.pointee else { return sy_mhd_no }
        let proxy = Unmanaged<PluginProxy>.fromOpaque(cls).takeUnretainedValue()
        let exchange = Unmanaged<ProxyExchange>.fromOpaque(pointer).takeUnretainedValue()
        if !exchange.started {
            exchange.started = true
            proxy.begin(exchange, connection, method: String(cString: method))
            return sy_mhd_yes
        }
        if uploadSize.pointee > 0 {
            exchange.receive(UnsafeRawBufferPointer(start: upload, count: uploadSize.pointee))
            uploadSize.pointee = 0
            return sy_mhd_yes
        }
        return proxy.answer(exchange, connection)
    }

    /// The request is over (answered, or the plugin went away): whatever still runs for it stops.
    private static let completed: MHD_RequestCompletedCallback = { cls, _, context, _ in
        guard let cls, let context, let pointer = context.pointee else { return }
        context.pointee = nil
        let proxy = Unmanaged<PluginProxy>.fromOpaque(cls).takeUnretainedValue()
        let exchange = Unmanaged<ProxyExchange>.fromOpaque(pointer).takeRetainedValue()
        exchange.spool?.fail("the plugin closed the connection")
        exchange.cancel("the plugin closed the connection")
        _ = proxy.live.withLock { $0.removeValue(forKey: ObjectIdentifier(exchange)) }
    }

    /// The request's headers are in: check the secret and the path, and start the tenant's request.
    private func begin(_ exchange: ProxyExchange, _ connection: OpaquePointer, method: String) {
        exchange.method = method
        guard let presented = header(connection, Self.secretHeader), Self.equalInConstantTime(presented, secret) else {
            exchange.refusal = (401, "missing or wrong \(Self.secretHeader) (plugins get it in SWITCHYARD_PROXY_SECRET)")
            return
        }
        let uri = exchange.uri
        if uri == "/token" && method == "GET" {
            exchange.start { [client] _ in await Self.token(client) }
            return
        }
        guard uri.hasPrefix("/c8y/") else {
            exchange.refusal = (404, "the proxy serves /c8y/<path> (the tenant's API) and /token")
            return
        }
        let headers = ["Accept", "Content-Type", "Range", "If-Match", "If-None-Match", "X-Cumulocity-Processing-Mode"]
            .compactMap { name in header(connection, name).map { (name: name, value: $0) } }
        let announced = header(connection, "Content-Length").flatMap { Int64($0) }
        let hasBody = (announced ?? 0) > 0 || header(connection, "Transfer-Encoding") != nil
            || !["GET", "HEAD", "DELETE", "OPTIONS"].contains(method)
        if let announced, announced > maxUpload {
            exchange.spoolProblem = .tooLarge(limit: maxUpload)
            return
        }
        let spool = hasBody ? UploadSpool(length: announced, directory: spoolDirectory, limit: maxUpload) : nil
        exchange.spool = spool
        let path = String(uri.dropFirst(4))
        exchange.start { [client] answer in
            do throws(PlatformError) {
                return .success(try await client.forward(method, path, headers: headers, streaming: spool, into: answer,
                                                         timeout: Self.exchangeTimeout))
            } catch {
                return .failure(error)
            }
        }
    }

    /// The request is complete: queue the answer (its head waited for; its body streamed).
    private func answer(_ exchange: ProxyExchange, _ connection: OpaquePointer) -> MHD_Result {
        exchange.spool?.finish()
        if let (status, text) = exchange.refusal { return respond(connection, status, text: text) }
        if let problem = exchange.spoolProblem {
            if case .tooLarge = problem { return respond(connection, 413, text: "\(problem)") }
            logger.warning("plugin proxy: request body not kept", metadata: ["path": "\(exchange.uri)", "error": "\(problem)"])
            return respond(connection, 507, text: "\(problem)")
        }
        switch exchange.answer.waitForHead() {
        case .streaming(let status, let headers):
            // curl decodes a compressed answer, so its Content-Length would not match what is sent.
            let length = headers["content-encoding"] == nil ? headers["content-length"].flatMap { UInt64($0) } : nil
            return withHeaderArrays(Self.kept(headers)) { names, values, count in
                sy_mhd_respond_streaming(connection, UInt32(status), names, values, count, length ?? sy_mhd_size_unknown, { cls, _, buffer, max in
                    guard let cls, let buffer else { return sy_mhd_end_with_error }
                    let exchange = Unmanaged<ProxyExchange>.fromOpaque(cls).takeUnretainedValue()
                    switch exchange.answer.read(into: UnsafeMutableRawBufferPointer(start: buffer, count: max)) {
                    case .bytes(let count): return count
                    case .end: return sy_mhd_end_of_stream
                    case .failed(let reason):
                        exchange.logger.warning("plugin proxy: the answer broke off", metadata: ["path": "\(exchange.uri)", "reason": "\(reason)"])
                        return sy_mhd_end_with_error
                    }
                }, Unmanaged.passRetained(exchange).toOpaque(), { cls in
                    guard let cls else { return }
                    Unmanaged<ProxyExchange>.fromOpaque(cls).takeRetainedValue().answer.abandon("the plugin stopped reading")
                })
            }
        case .complete(.success(let response)):
            return respond(connection, response.status, headers: Self.kept(response.headers), body: response.body)
        case .complete(.failure(let error)):
            logger.warning("plugin proxy: request failed", metadata: ["method": "\(exchange.method)", "path": "\(exchange.uri)", "error": "\(error)"])
            return respond(connection, 502, text: "the tenant could not be reached: \(error)")
        }
    }

    /// The answer's headers a plugin may need.
    private static func kept(_ headers: [String: String]) -> [(String, String)] {
        ["content-type", "location", "etag", "last-modified", "content-range", "accept-ranges", "content-disposition"]
            .compactMap { name in headers[name].map { (name, $0) } }
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
        withHeaderArrays(headers) { names, values, count in
            body.withUnsafeBufferPointer { bytes in
                sy_mhd_respond(connection, UInt32(status), names, values, count, bytes.baseAddress, bytes.count)
            }
        }
    }

    private func withHeaderArrays(_ headers: [(String, String)],
                                  _ body: (UnsafePointer<UnsafePointer<CChar>?>?, UnsafePointer<UnsafePointer<CChar>?>?, Int) -> MHD_Result) -> MHD_Result {
        let names: [UnsafePointer<CChar>?] = headers.map { UnsafePointer(strdup($0.0)) }
        let values: [UnsafePointer<CChar>?] = headers.map { UnsafePointer(strdup($0.1)) }
        defer { (names + values).forEach { free(UnsafeMutablePointer(mutating: $0)) } }
        return names.withUnsafeBufferPointer { n in
            values.withUnsafeBufferPointer { v in body(n.baseAddress, v.baseAddress, headers.count) }
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

/// One request through the proxy, from its URI to its end. Its fields are used on the connection's
/// thread only; ``cancel(_:)`` may come from any thread.
private final class ProxyExchange: @unchecked Sendable {
    let uri: String
    let logger: Logger
    let answer = ProxyAnswer()
    var started = false
    var method = "-"
    var refusal: (status: Int, text: String)?
    var spool: UploadSpool?
    var spoolProblem: SpoolError?
    private let task = Mutex<Task<Void, Never>?>(nil)

    init(uri: String, logger: Logger) {
        self.uri = uri
        self.logger = logger
    }

    /// Runs the tenant's side of the exchange; its outcome completes ``answer``.
    func start(_ work: @escaping @Sendable (ProxyAnswer) async -> Result<HTTPResponse, PlatformError>) {
        let answer = answer
        task.withLock { $0 = Task { answer.finish(await work(answer)) } }
    }

    /// Keeps a piece of the request body (or drops it when the request is refused).
    func receive(_ bytes: UnsafeRawBufferPointer) {
        guard refusal == nil, spoolProblem == nil, let spool else { return }
        do {
            try spool.append(bytes)
        } catch {
            spoolProblem = error
            spool.fail("\(error)")
        }
    }

    /// Stops the tenant's side: its transfer is cancelled, the answer no longer read.
    func cancel(_ reason: String) {
        answer.abandon(reason)
        task.withLock { $0?.cancel() }
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
