@testable import Cumulocity
import Foundation
import JSONSupport
import Logging
import Sandbox
import Testing
@testable import Switchyard

/// The typed requests the outbox stores and the client sends: their stored form, the form version
/// 0.2 stored, the rules only they apply, and what the sandbox receives.
struct PlatformRequestTests {
    let logger = Logger(label: "test")

    static let all: [PlatformRequest] = [
        .updateOperation(id: "7", update: ["status": "SUCCESSFUL"]),
        .updateManagedObject(id: "12 3", fragments: ["c8y_Firmware": ["name": "fw"]]),
        .createEvent(["type": "acme_Event", "text": "x", "source": ["id": "1"]]),
        .createMeasurement(["type": "acme_M", "source": ["id": "1"]]),
        .createAlarm(["type": "acme_A", "severity": "MAJOR", "text": "t", "source": ["id": "1"]]),
        .clearAlarms(source: "1", type: "acme_A"),
    ]

    @Test(arguments: all) func theStoredFormReadsBackAsTheSameRequest(_ request: PlatformRequest) throws {
        #expect(PlatformRequest(json: try JSONValue.parse(request.json.encoded())) == request)
        let viaCodable = try JSONDecoder().decode(PlatformRequest.self, from: JSONEncoder().encode(request))
        #expect(viaCodable == request)
    }

    @Test func answersAreJSONWhenTheirContentTypeSaysSo() {
        for type in ["application/json", "application/vnd.com.nsn.cumulocity.operation+json;charset=UTF-8;ver=0.9",
                     "Application/JSON", "text/jjson", "application/problem+json"] {
            #expect(PlatformClient.namesJSON(type), "\(type)")
        }
        for type in ["text/html", "", "application/jso", "application/js-on", "text/plain; charset=json-ish".replacingOccurrences(of: "json", with: "jsn")] {
            #expect(!PlatformClient.namesJSON(type), "\(type)")
        }
    }

    @Test func somethingElseIsNoRequest() throws {
        #expect(PlatformRequest(json: ["kind": "deleteEverything"]) == nil)
        #expect(PlatformRequest(json: ["kind": "updateOperation", "body": ["status": "FAILED"]]) == nil)
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(PlatformRequest.self, from: Data("{\"kind\":1}".utf8)) }
    }

    /// Version 0.2 stored method, path and body; each request it sent is read back as its kind.
    @Test func theOlderStoredFormIsRead() {
        for request in Self.all where request.method != "GET" {
            #expect(PlatformRequest(method: request.method, path: request.path, body: request.body ?? .null) == request)
        }
        #expect(PlatformRequest(method: "DELETE", path: "/inventory/managedObjects/1", body: .null) == nil)
        #expect(PlatformRequest(method: "PUT", path: "/devicecontrol/operations/%zz", body: .null) == nil)
    }

    /// The `name` rule lives in the request: whatever a handler passes, it is never sent.
    @Test func anInventoryUpdateNeverCarriesTheName() {
        let request = PlatformRequest.updateManagedObject(id: "1", fragments: ["name": "renamed", "c8y_X": [:]])
        #expect(request.body == ["c8y_X": [:]])
        #expect(request.path == "/inventory/managedObjects/1")
        #expect(request.mediaType == MediaType.managedObject)
    }

    @Test func originsCompareAsTheWebDoes() {
        #expect(PlatformClient.origin(of: "https://Repo.Example:443/a?b") == "https://repo.example")
        #expect(PlatformClient.origin(of: "http://h:80") == "http://h")
        #expect(PlatformClient.origin(of: "https://h:8443/x") == "https://h:8443")
        #expect(PlatformClient.origin(of: "https://user@h/x") == nil)
        #expect(PlatformClient.origin(of: "ftp://h/x") == nil)
        #expect(PlatformClient.origin(of: "not a url") == nil)
    }

    /// A clear queued behind a raise of the same type waits for it, goes out through the outbox and
    /// clears it on the platform; a second clear finds nothing to clear.
    @Test func aClearGoesThroughTheOutboxAfterItsRaise() async throws {
        let server = try await SandboxServer.start(logger: Logger(label: "sandbox", factory: { _ in SwiftLogNoOpLogHandler() }))
        let dir = temporaryDirectory()
        let transport = try CurlTransport()
        do {
            let settings = server.tenant.settings
            let client = PlatformClient(baseURL: server.url, transport: transport,
                                        credentials: BasicCredentials(tenant: settings.tenantID, username: settings.username,
                                                                      password: settings.password))
            let device = try await client.createManagedObject(["name": "d", "c8y_IsDevice": [:]])["id"]?.idValue ?? ""
            let outbox = try Outbox(directory: dir, client: client, logger: logger)
            try await outbox.enqueue(.createAlarm(alarmBody(device: device, type: "acme_A", severity: "MAJOR", text: "raised")))
            try await outbox.enqueue(.clearAlarms(source: device, type: "acme_A"))
            try await outbox.enqueue(.clearAlarms(source: device, type: "acme_A"))
            let sending = Task { try await outbox.run() }
            await outbox.waitUntilEmpty()
            sending.cancel()
            let alarms = await server.tenant.alarmList(source: device, type: "acme_A")
            #expect(alarms.count == 1)
            #expect(alarms.first?["status"] == "CLEARED")
        }
        transport.shutdown()
        await server.stop()
        FileSystem.removeTree(dir)
    }
}
