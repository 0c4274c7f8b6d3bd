import Cumulocity
import Foundation
import JSONSupport
import Sandbox
import Testing
@testable import Switchyard

/// Token access for plugins (seed 003): the loopback proxy with its per-run secret.
@Suite(.closesHarnesses, .timeLimit(.minutes(1)))
struct PluginProxyTests {
    @Test func aPluginReadsAndWritesTheTenantThroughTheProxy() async throws {
        let harness = try await Harness()
        let script = harness.root + "/bin/through-proxy.py"
        write("""
            #!/usr/bin/env python3
            import json, os, urllib.request
            base, secret = os.environ["SWITCHYARD_PROXY_URL"], os.environ["SWITCHYARD_PROXY_SECRET"]
            device = os.environ["SWITCHYARD_DEVICE_ID"]
            def call(method, path, body=None):
                request = urllib.request.Request(base + path, method=method, data=body,
                    headers={"X-Switchyard-Secret": secret, "Accept": "application/json", "Content-Type": "application/json"})
                with urllib.request.urlopen(request) as answer:
                    return json.load(answer)
            me = call("GET", "/inventory/managedObjects/" + device)
            call("PUT", "/inventory/managedObjects/" + device, json.dumps({"acme_SeenByPlugin": {"name": me["name"]}}).encode())
            print("read and wrote", device)
            """, to: script, mode: 0o755)
        harness.declare("proxy.yaml", "operation: acme_Proxy\nexec: {command: [\(script)]}\n")
        try await harness.startAgent()
        let id = try await harness.createOperation(["acme_Proxy": [:]])
        let operation = try await harness.waitForEnd(id)
        #expect(operation["status"] == "SUCCESSFUL", "\(harness.log(id))")
        let deviceID = try #require(await harness.deviceID())
        #expect(await harness.tenant.managedObject(deviceID)?["acme_SeenByPlugin"]?["name"] == "Test device")
        #expect(!harness.log(id).contains(try harness.proxyRecord().secret))
        await harness.close()
    }

    @Test func withoutTheSecretTheProxyRefusesAndItListensOnLoopbackOnly() async throws {
        let harness = try await Harness()
        try await harness.startAgent()
        let (url, secret) = try harness.proxyRecord()
        let mode = try FileManager.default.attributesOfItem(atPath: harness.state + "/" + PluginProxy.file)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        let transport = try CurlTransport()
        defer { transport.shutdown() }
        let path = "/inventory/managedObjects/" + (try #require(await harness.deviceID()))
        let anonymous = try await transport.send(HTTPRequest(method: "GET", url: url + path, headers: [("Accept", "application/json")]))
        #expect(anonymous.status == 401)
        let wrong = try await transport.send(HTTPRequest(method: "GET", url: url + path, headers: [("X-Switchyard-Secret", String(secret.reversed()))]))
        #expect(wrong.status == 401)
        let allowed = try await transport.send(HTTPRequest(method: "GET", url: url + path, headers: [("X-Switchyard-Secret", secret)]))
        #expect(allowed.status == 200)
        // Basic mode has no token to hand out.
        let token = try await transport.send(HTTPRequest(method: "GET", url: String(url.dropLast(4)) + "/token", headers: [("X-Switchyard-Secret", secret)]))
        #expect(token.status == 404)

        // Every non-loopback address of this machine: the port is closed there.
        let port = try #require(URLComponents(string: url)?.port)
        let addresses = nonLoopbackIPv4Addresses()
        for address in addresses {
            await #expect(throws: TransportError.self) {
                _ = try await transport.send(HTTPRequest(method: "GET", url: "http://\(address):\(port)/c8y" + path,
                                                         headers: [("X-Switchyard-Secret", secret)], timeout: .seconds(3)))
            }
        }
        if addresses.isEmpty { print("note: this machine has no non-loopback IPv4 address; the loopback-only check had nothing to try") }
        await harness.close()
    }

    @Test func aBinaryComesThroughTheProxyIntact() async throws {
        let harness = try await Harness()
        try await harness.startAgent()
        let payload = [UInt8]((0..<(8 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 7) })
        let id = await harness.tenant.addBinary(payload)
        let (url, secret) = try harness.proxyRecord()
        let transport = try CurlTransport()
        defer { transport.shutdown() }
        let target = harness.root + "/binary"
        let fd = open(target, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        defer { close(fd) }
        let response = try await transport.download(HTTPRequest(method: "GET", url: url + "/inventory/binaries/\(id)",
                                                                headers: [("X-Switchyard-Secret", secret)]),
                                                    into: fd, resumeFrom: 0, maxBytes: 1 << 30)
        #expect(response.status == 200)
        #expect(try [UInt8](Data(contentsOf: URL(fileURLWithPath: target))) == payload)
        let missing = try await transport.send(HTTPRequest(method: "GET", url: url + "/inventory/binaries/999999",
                                                           headers: [("X-Switchyard-Secret", secret)]))
        #expect(missing.status == 404)
        await harness.close()
    }

    /// select() cannot watch a descriptor at or above FD_SETSIZE (1024): a proxy built on it resets
    /// such connections, and a busy agent (or this test process) can hold that many.
    @Test func connectionsOnDescriptorsAbove1024AreServed() async throws {
        let harness = try await Harness()
        try await harness.startAgent()
        let (url, secret) = try harness.proxyRecord()
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        if limit.rlim_cur < 1400 {
            limit.rlim_cur = min(1400, limit.rlim_max)
            setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
        try #require(limit.rlim_cur >= 1400, "this machine allows only \(limit.rlim_cur) open files")
        // Fill every free descriptor below 1200, so the proxy's next accepted sockets land above it.
        var held: [Int32] = []
        defer { held.forEach { close($0) } }
        while (held.last ?? 0) < 1200 {
            let fd = open("/dev/null", O_RDONLY)
            try #require(fd >= 0)
            held.append(fd)
        }
        let transport = try CurlTransport()
        defer { transport.shutdown() }
        let path = "/inventory/managedObjects/" + (try #require(await harness.deviceID()))
        for _ in 0..<5 {
            let response = try await transport.send(HTTPRequest(method: "GET", url: url + path,
                                                                headers: [("X-Switchyard-Secret", secret), ("Accept", "application/json")]))
            #expect(response.status == 200)
        }
        #expect(!harness.logs.contains("plugin proxy: "), "libmicrohttpd reported a problem")
        await harness.close()
    }

    @Test func inCertificateModeTheProxyRenewsARevokedTokenAndTokenPrintsTheCurrentOne() async throws {
        let harness = try await Harness(tls: true)
        let configuration = harness.certificateConfiguration(try harness.pki.device(harness.externalId))
        try await harness.startAgent(configuration, waitForRegistration: true)
        let printed = try await currentToken(configuration: configuration, logger: harness.logs.logger("token"))
        #expect(await harness.tenant.issuedTokens.contains(printed))

        let (url, secret) = try harness.proxyRecord()
        let before = await harness.tenant.deviceTokenCount
        await harness.tenant.revokeDeviceTokens()
        let transport = try CurlTransport()
        defer { transport.shutdown() }
        let response = try await transport.send(HTTPRequest(
            method: "GET", url: url + "/inventory/managedObjects/" + (try #require(await harness.deviceID())),
            headers: [("X-Switchyard-Secret", secret), ("Accept", "application/json")]))
        #expect(response.status == 200)
        #expect(await harness.tenant.deviceTokenCount == before + 1)
        await harness.close()
    }
}

/// IPv4 addresses of this machine's interfaces other than loopback.
func nonLoopbackIPv4Addresses() -> [String] {
    var list: UnsafeMutablePointer<ifaddrs>?
    guard getifaddrs(&list) == 0, let first = list else { return [] }
    defer { freeifaddrs(list) }
    var addresses: [String] = []
    var cursor: UnsafeMutablePointer<ifaddrs>? = first
    while let entry = cursor {
        defer { cursor = entry.pointee.ifa_next }
        guard let address = entry.pointee.ifa_addr, address.pointee.sa_family == sa_family_t(AF_INET) else { continue }
        var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
        guard getnameinfo(address, socklen_t(MemoryLayout<sockaddr_in>.size), &host, socklen_t(host.count), nil, 0, NI_NUMERICHOST) == 0 else { continue }
        let text = String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if !text.hasPrefix("127.") { addresses.append(text) }
    }
    return addresses
}
