import Cumulocity
import Foundation
import JSONSupport
import Sandbox
import Synchronization
import Testing
@testable import Switchyard

/// The plugin proxy streams bodies both ways (seed 003): what the tenant sends reaches the plugin
/// while it is still being sent, what the plugin sends reaches the tenant while it is still being
/// written, and a plugin that leaves stops the transfer.
@Suite(.closesHarnesses, .timeLimit(.minutes(3)))
struct ProxyStreamingTests {
    struct Proxy {
        let url: String
        let secret: String
        var headers: [(name: String, value: String)] { [("X-Switchyard-Secret", secret), ("Accept", "application/json")] }
    }

    func proxy(_ harness: Harness) throws -> Proxy {
        let (url, secret) = try harness.proxyRecord()
        return Proxy(url: url, secret: secret)
    }

    /// Starts the agent and stores a binary of `size` bytes that the sandbox sends in 64 KiB pieces,
    /// one every 100 ms (a slow link).
    func agentWithPacedBinary(_ harness: Harness, size: Int) async throws -> (proxy: Proxy, id: String, payload: [UInt8]) {
        try await harness.startAgent()
        let payload = Self.payload(size)
        let id = await harness.tenant.addBinary(payload)
        await harness.tenant.setBinaryPace(.milliseconds(100))
        return (try proxy(harness), id, payload)
    }

    /// Downloads a binary through the proxy into `sink`, as a plugin would.
    func download(_ id: String, through proxy: Proxy, with transport: CurlTransport, into sink: RecordingSink) async throws -> HTTPResponse {
        try await transport.stream(HTTPRequest(method: "GET", url: proxy.url + "/inventory/binaries/\(id)",
                                               headers: proxy.headers, timeout: .seconds(30)),
                                   body: nil, into: sink)
    }

    static func payload(_ count: Int, seed: UInt32 = 2_654_435_761) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: UInt32(truncatingIfNeeded: $0) &* seed >> 11) }
    }

    @Test func aSlowDownloadReachesThePluginWhileTheTenantIsStillSendingIt() async throws {
        let harness = try await Harness()
        let (proxy, id, payload) = try await agentWithPacedBinary(harness, size: 1 << 20)  // 16 pieces: about 1.5 s
        let transport = try CurlTransport()
        defer { transport.shutdown() }
        let sink = RecordingSink()
        async let answer = download(id, through: proxy, with: transport, into: sink)
        try await eventually("the first bytes reach the plugin", within: 10) { sink.count > 0 }
        #expect(await harness.tenant.binaryDownloadsSending == 1, "the tenant had already sent everything")
        #expect(sink.count < payload.count)
        let response = try await answer
        #expect(response.status == 200)
        #expect(sink.status == 200)
        #expect(sink.bytes == payload)
        await harness.close()
    }

    @Test func anUploadReachesTheTenantWhileThePluginIsStillWritingIt() async throws {
        let harness = try await Harness()
        try await harness.startAgent()
        let proxy = try proxy(harness)
        let id = await harness.tenant.addBinary([0])
        let payload = Self.payload(1 << 20)
        let first = 256 << 10
        // The plugin's side: a body whose length is not known in advance (sent chunked), half written.
        let body = UploadSpool(length: nil, directory: harness.root, limit: 1 << 30)
        try payload[..<first].withUnsafeBytes { try body.append($0) }
        let transport = try CurlTransport()
        defer { transport.shutdown() }
        let sink = RecordingSink()
        async let answer = transport.stream(HTTPRequest(method: "PUT", url: proxy.url + "/inventory/binaries/\(id)",
                                                        headers: proxy.headers + [("Content-Type", "application/octet-stream")],
                                                        timeout: .seconds(30)),
                                            body: body, into: sink)
        try await eventually("the tenant receives the first part before the rest is written", within: 10) {
            await harness.tenant.uploadProgress[id] ?? 0 >= first
        }
        try payload[first...].withUnsafeBytes { try body.append($0) }
        body.finish()
        let response = try await answer
        #expect(response.status == 201)
        #expect(try JSONValue.parse(sink.bytes)["length"]?.intValue == Int64(payload.count))
        #expect(await harness.tenant.binaryContent(id) == payload)
        // The agent kept what went beyond 64 KiB in an unlinked file: nothing is left behind.
        #expect(try FileManager.default.contentsOfDirectory(atPath: harness.state).filter { $0.hasPrefix("proxy-upload-") }.isEmpty)
        await harness.close()
    }

    @Test func aStreamedUploadIsSentAgainAfterARevokedToken() async throws {
        let harness = try await Harness(tls: true)
        let configuration = harness.certificateConfiguration(try harness.pki.device(harness.externalId))
        try await harness.startAgent(configuration, waitForRegistration: true)
        let proxy = try proxy(harness)
        let id = await harness.tenant.addBinary([0])
        let payload = Self.payload(512 << 10, seed: 40_503)
        let before = await harness.tenant.deviceTokenCount
        await harness.tenant.revokeDeviceTokens()
        let transport = try CurlTransport()
        defer { transport.shutdown() }
        let response = try await transport.send(HTTPRequest(method: "PUT", url: proxy.url + "/inventory/binaries/\(id)",
                                                            headers: proxy.headers + [("Content-Type", "application/octet-stream")],
                                                            body: payload))
        #expect(response.status == 201, "\(String(decoding: response.body, as: UTF8.self))")
        #expect(await harness.tenant.binaryContent(id) == payload)
        #expect(await harness.tenant.deviceTokenCount == before + 1)
        await harness.close()
    }

    @Test func aPluginThatLeavesMidDownloadStopsTheTransfer() async throws {
        try await takingTurns {
            let harness = try await Harness()
            let (proxy, id, _) = try await agentWithPacedBinary(harness, size: 4 << 20)  // 64 pieces: over 6 s in all
            let transport = try CurlTransport()
            defer { transport.shutdown() }
            let started = ContinuousClock.now
            await #expect(throws: TransportError.self) {
                _ = try await download(id, through: proxy, with: transport, into: RecordingSink(leaveAfter: 100 << 10))
            }
            try await eventually("the tenant stops sending", within: 10) { await harness.tenant.binaryDownloadsSending == 0 }
            #expect(ContinuousClock.now - started < .seconds(5), "the transfer ran on after the plugin left")
            // The proxy goes on serving.
            let next = try await transport.send(HTTPRequest(method: "GET", url: proxy.url + "/inventory/managedObjects/"
                                                                + (try #require(await harness.deviceID())), headers: proxy.headers))
            #expect(next.status == 200)
            await harness.close()
        }
    }

    @Test func stoppingTheAgentEndsADownloadInFlightAtOnce() async throws {
        try await takingTurns {
            let harness = try await Harness()
            let (proxy, id, _) = try await agentWithPacedBinary(harness, size: 4 << 20)
            let transport = try CurlTransport()
            defer { transport.shutdown() }
            let sink = RecordingSink()
            async let answer = download(id, through: proxy, with: transport, into: sink)
            try await eventually("the download is under way", within: 10) { sink.count > 0 }
            let stopping = ContinuousClock.now
            await harness.stopAgent()
            #expect(ContinuousClock.now - stopping < .seconds(3), "the agent waited for the download to end")
            do {
                _ = try await answer
                Issue.record("the download was not cut")
            } catch {
                #expect(sink.count < 4 << 20)
            }
            await harness.close()
        }
    }

    @Test func anUploadAboveTheLimitIsRefusedAndNothingIsSent() async throws {
        let harness = try await Harness()
        var configuration = harness.configuration
        configuration.proxy.maxUpload = 100 << 10
        try await harness.startAgent(configuration, waitForRegistration: true)
        let proxy = try proxy(harness)
        let id = await harness.tenant.addBinary([7])
        let transport = try CurlTransport()
        defer { transport.shutdown() }
        let url = proxy.url + "/inventory/binaries/\(id)"
        let headers = proxy.headers + [("Content-Type", "application/octet-stream")]

        // Announced with Content-Length: refused before any of it is read.
        let announced = try await transport.send(HTTPRequest(method: "PUT", url: url, headers: headers, body: Self.payload(200 << 10)))
        #expect(announced.status == 413)
        #expect(String(decoding: announced.body, as: UTF8.self).contains("larger than 102400 bytes"))

        // Chunked: refused once the limit is passed; the tenant's request is abandoned.
        let body = UploadSpool(length: nil, directory: harness.root, limit: 1 << 30)
        try Self.payload(200 << 10).withUnsafeBytes { try body.append($0) }
        body.finish()
        let sink = RecordingSink()
        let chunked = try await transport.stream(HTTPRequest(method: "PUT", url: url, headers: headers), body: body, into: sink)
        #expect(chunked.status == 413)
        #expect(await harness.tenant.binaryContent(id) == [7])

        let small = try await transport.send(HTTPRequest(method: "PUT", url: url, headers: headers, body: [1, 2, 3]))
        #expect(small.status == 201)
        #expect(await harness.tenant.binaryContent(id) == [1, 2, 3])
        await harness.close()
    }

    // MARK: The pieces on their own

    @Test func theSpoolGivesBackWhatItKeptInAnyPiecesAcrossMemoryAndFile() throws {
        let directory = temporaryDirectory()
        defer { FileSystem.removeTree(directory) }
        let payload = Self.payload(300 << 10)
        let spool = UploadSpool(length: Int64(payload.count), directory: directory, limit: 1 << 20)
        var generator = SystemRandomNumberGenerator()
        var written = 0
        var read: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 100 << 10)
        while read.count < payload.count {
            if written < payload.count {
                let piece = min(payload.count - written, Int.random(in: 1...(40 << 10), using: &generator))
                try payload[written..<written + piece].withUnsafeBytes { try spool.append($0) }
                written += piece
                if written == payload.count { spool.finish() }
            }
            let want = Int.random(in: 1...buffer.count, using: &generator)
            let result = buffer.withUnsafeMutableBytes { spool.read(at: Int64(read.count), into: UnsafeMutableRawBufferPointer(rebasing: $0[..<want]), wake: {}) }
            switch result {
            case .bytes(let count): read += buffer[..<count]
            case .wait: #expect(read.count == written)
            case .end, .failed: Issue.record("unexpected \(result) at \(read.count)"); return
            }
        }
        #expect(read == payload)
        let end = buffer.withUnsafeMutableBytes { spool.read(at: Int64(payload.count), into: $0, wake: {}) }
        #expect(end == .end)
        // Read again from the start (a resend after 401).
        let again = buffer.withUnsafeMutableBytes { spool.read(at: 0, into: $0, wake: {}) }
        #expect(again == .bytes(UploadSpool.inMemory))
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory).isEmpty, "the spool file is unlinked")
    }

    @Test func theSpoolWakesAWaitingReaderAndRefusesPastItsLimit() throws {
        let directory = temporaryDirectory()
        defer { FileSystem.removeTree(directory) }
        let spool = UploadSpool(length: nil, directory: directory, limit: 10)
        let woken = Mutex(0)
        var buffer = [UInt8](repeating: 0, count: 16)
        #expect(buffer.withUnsafeMutableBytes { spool.read(at: 0, into: $0, wake: { woken.withLock { $0 += 1 } }) } == .wait)
        try [UInt8](repeating: 1, count: 8).withUnsafeBytes { try spool.append($0) }
        #expect(woken.withLock { $0 } == 1)
        #expect(throws: SpoolError.self) { try [UInt8](repeating: 1, count: 3).withUnsafeBytes { try spool.append($0) } }
        spool.fail("too large")
        #expect(buffer.withUnsafeMutableBytes { spool.read(at: 0, into: $0, wake: {}) } == .failed("too large"))
    }

    @Test func theAnswerPausesWhenFullAndWakesOnceHalfIsRead() {
        let answer = ProxyAnswer()
        answer.begin(status: 200, headers: [:])
        let woken = Mutex(0)
        let piece = [UInt8](repeating: 9, count: 64 << 10)
        var offers = 0
        while piece.withUnsafeBytes({ answer.offer($0, wake: { woken.withLock { $0 += 1 } }) }) == .taken { offers += 1 }
        #expect(offers == ProxyAnswer.capacity / piece.count)
        var buffer = [UInt8](repeating: 0, count: 32 << 10)
        var drained = 0
        while woken.withLock({ $0 }) == 0 {
            guard case .bytes(let count) = buffer.withUnsafeMutableBytes({ answer.read(into: $0) }) else { Issue.record("no bytes"); return }
            drained += count
        }
        #expect(drained >= ProxyAnswer.capacity / 2)
        answer.finish(.success(HTTPResponse(status: 200, headers: [:], body: [])))
        while case .bytes = buffer.withUnsafeMutableBytes({ answer.read(into: $0) }) {}
        #expect(buffer.withUnsafeMutableBytes { answer.read(into: $0) } == .end)
        answer.abandon("the test is done")
        #expect(piece.withUnsafeBytes { answer.offer($0, wake: {}) } == .gone)
    }

    @Test func byteSizesAndTheUploadLimitInTheConfiguration() throws {
        #expect(parseByteSize("512") == 512)
        #expect(parseByteSize("64KiB") == 65_536)
        #expect(parseByteSize("1.5 MiB") == 1_572_864)
        #expect(parseByteSize("4GiB") == 4 << 30)
        #expect(parseByteSize("20MB") == 20_000_000)
        #expect(parseByteSize("lots") == nil)
        #expect(parseByteSize("-1") == nil)
        let directory = temporaryDirectory()
        defer { FileSystem.removeTree(directory) }
        write("c8y: {url: 'http://127.0.0.1:1'}\ndevice: {externalId: x}\nauth: {username: u, password: p}\nproxy: {maxUpload: 512MiB}\n",
              to: directory + "/a.yaml")
        #expect(try AgentConfiguration.load(file: directory + "/a.yaml", environment: [:]).proxy.maxUpload == 512 << 20)
        write("c8y: {url: 'http://127.0.0.1:1'}\ndevice: {externalId: x}\nauth: {username: u, password: p}\nproxy: {maxUpload: huge}\n",
              to: directory + "/b.yaml")
        #expect {
            _ = try AgentConfiguration.load(file: directory + "/b.yaml", environment: [:])
        } throws: { "\($0)".contains("proxy.maxUpload must be a size") }
    }
}

/// A plugin's side of a download: keeps what arrives; with `leaveAfter`, goes away after that many bytes.
final class RecordingSink: ResponseBodySink, @unchecked Sendable {
    private let state = Mutex<(bytes: [UInt8], status: Int?)>(([], nil))
    let leaveAfter: Int?

    init(leaveAfter: Int? = nil) { self.leaveAfter = leaveAfter }

    var count: Int { state.withLock { $0.bytes.count } }
    var bytes: [UInt8] { state.withLock { $0.bytes } }
    var status: Int? { state.withLock { $0.status } }

    func begin(status: Int, headers: [String: String]) { state.withLock { $0.status = status } }

    func offer(_ bytes: UnsafeRawBufferPointer, wake: @escaping @Sendable () -> Void) -> BodyOffer {
        state.withLock { s in
            if let leaveAfter, s.bytes.count >= leaveAfter { return .gone }
            s.bytes.append(contentsOf: bytes)
            return .taken
        }
    }
}
