import FoundationEssentials
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import JSONSupport
public import Logging
import NIOCore
import NIOSSL
import ServiceLifecycle

/// TLS for the sandbox: a server certificate for HTTPS, and the CA whose client certificates the
/// mTLS listener accepts (as a tenant's trusted certificates).
public struct SandboxTLS: Sendable {
    /// PEM file: the server certificate (and its chain).
    public var certificateFile: String
    /// PEM file: the server's private key.
    public var keyFile: String
    /// PEM file: CA certificates that sign acceptable device certificates.
    public var clientCAFile: String

    public init(certificateFile: String, keyFile: String, clientCAFile: String) {
        self.certificateFile = certificateFile
        self.keyFile = keyFile
        self.clientCAFile = clientCAFile
    }
}

/// The request context of the sandbox's routes: the connection is kept so routes can read the TLS
/// client certificate (mTLS listener).
public struct SandboxContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    let channel: any Channel
    /// Who is asking, as the gate authenticated them.
    var principal: Principal = .anonymous

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }

    /// Whether the request came over the loopback interface.
    var fromLoopback: Bool {
        guard let address = channel.remoteAddress?.ipAddress else { return false }
        return address == "::1" || address.hasPrefix("127.") || address == "::ffff:127.0.0.1"
    }

    /// The verified client certificate's DER bytes, or `nil` on a connection without one.
    func peerCertificate() async -> [UInt8]? {
        guard let certificate = try? await channel.nioSSL_peerCertificate().get() else { return nil }
        return try? certificate.toDERBytes()
    }
}

/// The sandbox tenant served on loopback: the platform's REST and Bayeux endpoints the agent uses,
/// plus `/sandbox/...` routes to create faults and read what happened.
///
/// Without TLS it serves plain HTTP. With ``SandboxTLS`` it serves HTTPS, plus a second listener
/// that requires client certificates from the configured CA (the platform's mTLS port, 8443) for
/// `POST /devicecontrol/deviceAccessToken` and the OAuth2 token endpoint.
public struct SandboxServer: Sendable {
    public let tenant: Tenant
    public let host: String
    public let port: Int
    /// The mTLS listener's port, when TLS is configured.
    public let mtlsPort: Int?
    private let group: ServiceGroup
    private let task: Task<Void, any Error>

    /// The base URL agents use, e.g. `http://127.0.0.1:40123`.
    public var url: String { "\(mtlsPort == nil ? "http" : "https")://\(host):\(port)" }
    /// The mTLS base URL (`c8y.mtlsUrl`), when TLS is configured.
    public var mtlsURL: String? { mtlsPort.map { "https://\(host):\($0)" } }

    /// Starts a sandbox on `host:port` (port 0: an ephemeral one) and returns once it accepts connections.
    /// With `tls`, the mTLS listener uses `mtlsPort` (0: ephemeral).
    public static func start(host: String = "127.0.0.1", port: Int = 0, settings: Tenant.Settings = .init(),
                             tls: SandboxTLS? = nil, mtlsPort: Int = 0, tenant existing: Tenant? = nil,
                             logger: Logger = Logger(label: "sandbox")) async throws -> SandboxServer {
        // An existing tenant keeps its state across a stop and start (an outage of the platform).
        let tenant = existing ?? Tenant(settings: settings)
        await tenant.reopen()
        let router = Router(context: SandboxContext.self)
        router.add(middleware: PlatformGate(tenant: tenant))
        Routes(tenant: tenant).register(on: router)
        var listeners: [(service: any Service, bound: AsyncStream<Int>)] = []
        func listen(port: Int, server: HTTPServerBuilder) {
            let (bound, sink) = AsyncStream.makeStream(of: Int.self)
            let app = Application(router: router, server: server, configuration: .init(address: .hostname(host, port: port)),
                                  onServerRunning: { channel in
                                      sink.yield(channel.localAddress?.port ?? 0)
                                      sink.finish()
                                  }, logger: logger)
            listeners.append((app, bound))
        }
        if let tls {
            let chain = try NIOSSLCertificate.fromPEMFile(tls.certificateFile).map { NIOSSLCertificateSource.certificate($0) }
            let key = NIOSSLPrivateKeySource.privateKey(try NIOSSLPrivateKey(file: tls.keyFile, format: .pem))
            let plain = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: key)
            var mutual = plain
            mutual.certificateVerification = .noHostnameVerification
            mutual.trustRoots = .file(tls.clientCAFile)
            listen(port: port, server: try .tls(.http1(), tlsConfiguration: plain))
            listen(port: mtlsPort, server: try .tls(.http1(), tlsConfiguration: mutual))
        } else {
            listen(port: port, server: .http1())
        }
        let group = ServiceGroup(services: listeners.map(\.service), gracefulShutdownSignals: [], logger: logger)
        let task = Task { try await group.run() }
        var ports: [Int] = []
        for listener in listeners {
            var bound = 0
            for await value in listener.bound { bound = value }
            ports.append(bound)
        }
        guard !ports.contains(0) else {
            task.cancel()
            throw SandboxError(detail: "the sandbox could not listen on \(host):\(port)")
        }
        let main = ports[0], mutual: Int? = ports.count > 1 ? ports[1] : nil
        await tenant.setMTLSBaseURL(mutual.map { "https://\(host):\($0)" })
        return SandboxServer(tenant: tenant, host: host, port: main, mtlsPort: mutual, group: group, task: task)
    }

    /// Stops serving and waits until the listener is closed.
    public func stop() async {
        await tenant.releaseWaitingClients()
        await group.triggerGracefulShutdown()
        _ = try? await task.value
    }

    /// Waits until the sandbox is stopped (by ``stop()`` or a signal handled elsewhere).
    public func wait() async throws { try await task.value }
}

public struct SandboxError: Error, CustomStringConvertible {
    public let detail: String
    public var description: String { detail }
}

/// Refuses platform requests while a fault is set, and checks authentication: basic (device user,
/// bootstrap user for the credentials request) or a Bearer device access token.
struct PlatformGate: RouterMiddleware {
    typealias Context = SandboxContext
    let tenant: Tenant

    /// Routes that authenticate on their own (client certificate, OAuth2 token) or not at all.
    static let ownAuthentication = ["/sandbox/", "/devicecontrol/deviceAccessToken", "/.well-known/", "/oauth/", "/artifacts/", "/console"]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let path = request.uri.path
        if path == "/" || Self.ownAuthentication.contains(where: { path.hasPrefix($0) }) { return try await next(request, context) }
        let response = try await checked(request, context: context, next: next)
        // A remote tenant: the answer arrives that much later (what it did has been done).
        if let latency = await tenant.answerLatency { try await Task.sleep(for: latency) }
        return response
    }

    private func checked(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let path = request.uri.path
        if let delay = await tenant.takeDelay(method: request.method.rawValue, path: path) {
            try await Task.sleep(for: delay)
        }
        if let raw = await tenant.takeRawAnswer(method: request.method.rawValue, path: path) {
            let headers: HTTPFields = [.contentType: raw.contentType, .contentLength: String(raw.body.count)]
            guard let cut = raw.truncate else {
                return Response(status: .init(code: raw.status), headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: raw.body)))
            }
            return Response(status: .init(code: raw.status), headers: headers, body: ResponseBody { writer in
                try await writer.write(ByteBuffer(bytes: raw.body.prefix(cut)))
                throw SandboxError(detail: "answer cut by fault injection")
            })
        }
        if let status = await tenant.takeRefusal(method: request.method.rawValue, path: path) {
            if status == 200 {  // a broken answer: success status, body that is not what the API promises
                return Response(status: .ok, headers: [.contentType: "text/html"],
                                body: .init(byteBuffer: ByteBuffer(string: "<html>upstream proxy error</html>")))
            }
            return Routes.json(["error": "sandbox/fault", "message": "refused by fault injection"], status: status)
        }
        let header = request.headers[.authorization] ?? ""
        var context = context
        if header.hasPrefix("Bearer ") {
            guard await tenant.validToken(String(header.dropFirst(7))) else {
                return Routes.error(401, "security/Unauthorized", "Invalid or expired token")
            }
            context.principal = .device(await tenant.tokenHolder(String(header.dropFirst(7))) ?? "device")
        } else {
            guard let (user, password) = Routes.basicCredentials(request),
                  await tenant.authorized(user: user, password: password, credentialsRequest: path == "/devicecontrol/deviceCredentials") else {
                return Routes.error(401, "security/Unauthorized", "Invalid credentials!")
            }
            let name = String(user.split(separator: "/").last ?? "")
            context.principal = tenant.isPlatformUser(user, password: password) ? .platform(name) : .device(name)
        }
        if case .device = context.principal, let why = Self.refusedToDevices(method: request.method.rawValue, path: path) {
            return Routes.error(403, "security/Forbidden", "Access is denied: \(why)")
        }
        return try await next(request, context)
    }

    /// What a device user may not do, as the platform's device role does not let it (a platform
    /// user may): delete operations, change alarms in bulk, read or change users, delete managed
    /// objects it does not own (checked by the route, which knows the owner). `nil`: allowed.
    static func refusedToDevices(method: String, path: String) -> String? {
        switch (method, path) {
        case ("DELETE", "/devicecontrol/operations"): "a device may not delete operations"
        case ("PUT", "/alarm/alarms"): "a device may not update alarms in bulk"
        case (_, let path) where path.hasPrefix("/user/") && path != "/user/currentUser" && path != "/user/logout":
            "a device may not manage users"
        default: nil
        }
    }
}

/// The authenticated user of a request.
enum Principal: Sendable, Equatable {
    case anonymous
    /// The platform user (full access); the name without the tenant prefix.
    case platform(String)
    /// A device user (Basic or a device access token); the name without the tenant prefix.
    case device(String)

    var name: String? {
        switch self {
        case .anonymous: nil
        case .platform(let name), .device(let name): name
        }
    }

    var isPlatform: Bool {
        if case .platform = self { true } else { false }
    }

    /// Whether this user may change or delete a managed object owned by `owner` (objects without an
    /// owner were made by the sandbox itself or its tests, and anyone may change them).
    func mayModify(ownedBy owner: String?) -> Bool {
        switch self {
        case .platform: true
        case .anonymous: false
        case .device(let name): owner == nil || owner == name
        }
    }
}
