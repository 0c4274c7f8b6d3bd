import FoundationEssentials
import Hummingbird
public import JSONSupport
public import Logging
import NIOCore
import ServiceLifecycle

/// The sandbox tenant served over HTTP on loopback: the platform's REST and Bayeux endpoints the agent
/// uses, plus `/sandbox/...` routes to create faults and read what happened.
public struct SandboxServer: Sendable {
    public let tenant: Tenant
    public let host: String
    public let port: Int
    private let group: ServiceGroup
    private let task: Task<Void, any Error>

    /// The base URL agents use, e.g. `http://127.0.0.1:40123`.
    public var url: String { "http://\(host):\(port)" }

    /// Starts a sandbox on `host:port` (port 0: an ephemeral one) and returns once it accepts connections.
    public static func start(host: String = "127.0.0.1", port: Int = 0, settings: Tenant.Settings = .init(),
                             logger: Logger = Logger(label: "sandbox")) async throws -> SandboxServer {
        let tenant = Tenant(settings: settings)
        let router = Router()
        router.add(middleware: PlatformGate(tenant: tenant))
        Routes(tenant: tenant).register(on: router)
        let (ports, portSink) = AsyncStream.makeStream(of: Int.self)
        let app = Application(router: router, configuration: .init(address: .hostname(host, port: port)),
                              onServerRunning: { channel in
                                  portSink.yield(channel.localAddress?.port ?? 0)
                                  portSink.finish()
                              }, logger: logger)
        let group = ServiceGroup(services: [app], gracefulShutdownSignals: [], logger: logger)
        let task = Task { try await group.run() }
        var bound = 0
        for await value in ports { bound = value }
        guard bound > 0 else {
            task.cancel()
            throw SandboxError(detail: "the sandbox could not listen on \(host):\(port)")
        }
        return SandboxServer(tenant: tenant, host: host, port: bound, group: group, task: task)
    }

    /// Stops serving and waits until the listener is closed.
    public func stop() async {
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

/// Refuses platform requests while a fault is set, and checks basic authentication.
struct PlatformGate: RouterMiddleware {
    typealias Context = BasicRequestContext
    let tenant: Tenant

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if request.uri.path.hasPrefix("/sandbox/") { return try await next(request, context) }
        if let status = await tenant.takeRefusal(method: request.method.rawValue, path: request.uri.path) {
            if status == 200 {  // a broken answer: success status, body that is not what the API promises
                return Response(status: .ok, headers: [.contentType: "text/html"],
                                body: .init(byteBuffer: ByteBuffer(string: "<html>upstream proxy error</html>")))
            }
            return Routes.json(["error": "sandbox/fault", "message": "refused by fault injection"], status: status)
        }
        guard let header = request.headers[.authorization], header.hasPrefix("Basic "),
              let decoded = Data(base64Encoded: String(header.dropFirst(6))),
              let separator = decoded.firstIndex(of: UInt8(ascii: ":")),
              await tenant.authorized(user: String(decoding: decoded[..<separator], as: UTF8.self),
                                      password: String(decoding: decoded[(separator + 1)...], as: UTF8.self),
                                      credentialsRequest: request.uri.path == "/devicecontrol/deviceCredentials") else {
            return Routes.json(["error": "security/Unauthorized", "message": "Invalid credentials!"], status: 401)
        }
        return try await next(request, context)
    }
}
