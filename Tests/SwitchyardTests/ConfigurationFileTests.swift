import Foundation
import JSONSupport
import Sandbox
import Testing
@testable import Switchyard

/// Typed configuration files (c8y_SupportedConfigurations, c8y_UploadConfigFile, c8y_DownloadConfigFile)
/// end to end: real files, the sandbox's binaries and event binaries.
@Suite(.closesHarnesses, .timeLimit(.minutes(2)))
struct ConfigurationFileTests {
    struct Prepared {
        let app: String
        let ssh: String
        let counter: String
    }

    func prepare(_ harness: Harness, apply: String = "echo applied >> \"$0.count\"") -> Prepared {
        let app = harness.root + "/etc/app.conf"
        let ssh = harness.root + "/etc/ssh.conf"
        write("speed=1\n", to: app, mode: 0o644)
        write("Port 22\n", to: ssh, mode: 0o644)
        let script = harness.script("apply.sh", apply)
        harness.declare("config-files.yaml", """
            operation: c8y_DownloadConfigFile
            fragments: [c8y_DownloadConfigFile, c8y_UploadConfigFile]
            advertise: [c8y_UploadConfigFile]
            swift: Configuration
            options:
              files:
                - {type: app, path: \(app), mode: "0600", owner: "\(getuid())", group: "\(getgid())", apply: [\(script)], maxBytes: 4096}
                - {type: ssh, path: \(ssh)}
            """)
        return Prepared(app: app, ssh: ssh, counter: script + ".count")
    }

    func mode(_ path: String) throws -> Int? { try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int }

    @Test func downloadInstallsWithTheDeclaredModeKeepsThePreviousAndReports() async throws {
        let harness = try await Harness()
        let files = prepare(harness)
        try await harness.startAgent()
        let deviceID = try #require(await harness.deviceID())
        #expect(await harness.advertised() == ["c8y_DownloadConfigFile", "c8y_UploadConfigFile"])
        try await eventually("c8y_SupportedConfigurations reported") {
            await harness.tenant.managedObject(deviceID)?["c8y_SupportedConfigurations"] == ["app", "ssh"]
        }
        let binary = await harness.tenant.addBinary(Array("speed=2\n".utf8))
        let url = harness.server.url + "/inventory/binaries/\(binary)"
        let id = try await harness.createOperation(["c8y_DownloadConfigFile": ["type": "app", "url": .string(url)]])
        let operation = try await harness.waitForEnd(id)
        #expect(operation["status"] == "SUCCESSFUL", "\(operation)")
        #expect(try String(contentsOfFile: files.app, encoding: .utf8) == "speed=2\n")
        #expect(try String(contentsOfFile: files.app + ".previous", encoding: .utf8) == "speed=1\n")
        #expect(try mode(files.app) == 0o600)
        #expect(try String(contentsOfFile: files.counter, encoding: .utf8) == "applied\n")
        let reported = await harness.tenant.managedObject(deviceID)?["c8y_Configuration_app"]
        #expect(reported?["type"] == "app")
        #expect(reported?["name"] == "app")
        #expect(reported?["url"]?.stringValue == url)
        #expect(reported?["time"]?.stringValue?.hasSuffix("Z") == true)
        #expect(!FileManager.default.fileExists(atPath: files.app + ".switchyard-new"))
        await harness.close()
    }

    @Test func uploadAttachesTheFileToAnEventOfItsType() async throws {
        let harness = try await Harness()
        _ = prepare(harness)
        try await harness.startAgent()
        let deviceID = try #require(await harness.deviceID())
        let id = try await harness.createOperation(["c8y_UploadConfigFile": ["type": "ssh"]])
        #expect(try await harness.waitForEnd(id)["status"] == "SUCCESSFUL")
        let event = try #require(await harness.tenant.eventList(type: "ssh").first)
        #expect(event["source"]?["id"]?.stringValue == deviceID)
        let eventID = try #require(event["id"]?.idValue)
        let file = try #require(await harness.tenant.eventBinary(eventID))
        #expect(file.bytes == Array("Port 22\n".utf8))
        #expect(file.name == "ssh.conf")
        await harness.close()
    }

    @Test func withoutATypeTheDefaultFileIsMeantAsTheLegacyTabExpects() async throws {
        let harness = try await Harness()
        let files = prepare(harness)
        try await harness.startAgent()
        let deviceID = try #require(await harness.deviceID())
        let binary = await harness.tenant.addBinary(Array("speed=7\n".utf8))
        let id = try await harness.createOperation(["c8y_DownloadConfigFile": [
            "url": .string(harness.server.url + "/inventory/binaries/\(binary)"), "c8y_ConfigurationDump": ["id": "9200"],
        ]])
        #expect(try await harness.waitForEnd(id)["status"] == "SUCCESSFUL")
        #expect(try String(contentsOfFile: files.app, encoding: .utf8) == "speed=7\n")
        #expect(await harness.tenant.managedObject(deviceID)?["c8y_ConfigurationDump"] == ["id": "9200"])
        // A legacy snapshot: the file in the file repository, a c8y_ConfigurationDump entry pointing to it.
        let upload = try await harness.createOperation(["c8y_UploadConfigFile": [:]])
        #expect(try await harness.waitForEnd(upload)["status"] == "SUCCESSFUL")
        let entry = try #require(await harness.tenant.managedObjects(type: "c8y_ConfigurationDump").first)
        #expect(entry["name"]?.stringValue?.hasSuffix("app configuration") == true)
        let url = try #require(entry["url"]?.stringValue)
        let binaryID = try #require(url.split(separator: "/").last.map(String.init))
        #expect(url == harness.server.url + "/inventory/binaries/\(binaryID)")
        #expect(await harness.tenant.binaryContent(binaryID) == Array("speed=7\n".utf8))
        #expect(await harness.tenant.binaryMetadata(binaryID)?["name"] == "app.conf")
        #expect(await harness.tenant.eventList(type: "app").isEmpty, "a legacy snapshot is no typed event")
        await harness.close()
    }

    @Test func aDownloadCutMidwayIsResumedAndAFailedOneChangesNothing() async throws {
        let harness = try await Harness()
        let files = prepare(harness)
        try await harness.startAgent()
        let content = (1...200).map { "key\($0)=value\n" }.joined()
        let binary = await harness.tenant.addBinary(Array(content.utf8))
        await harness.tenant.cutNextDownload(after: 1000)
        let id = try await harness.createOperation(["c8y_DownloadConfigFile": [
            "type": "app", "url": .string(harness.server.url + "/inventory/binaries/\(binary)"),
        ]])
        #expect(try await harness.waitForEnd(id)["status"] == "SUCCESSFUL")
        #expect(try String(contentsOfFile: files.app, encoding: .utf8) == content)

        let missing = try await harness.createOperation(["c8y_DownloadConfigFile": [
            "type": "ssh", "url": .string(harness.server.url + "/inventory/binaries/999999"),
        ]])
        let failed = try await harness.waitForEnd(missing)
        #expect(failed["status"] == "FAILED")
        #expect(failed["failureReason"]?.stringValue?.contains("HTTP 404") == true)
        #expect(failed["failureReason"]?.stringValue?.hasSuffix("\(files.ssh) was not changed") == true)
        #expect(try String(contentsOfFile: files.ssh, encoding: .utf8) == "Port 22\n")

        let tooLarge = await harness.tenant.addBinary([UInt8](repeating: 65, count: 5000))
        let large = try await harness.waitForEnd(try await harness.createOperation(["c8y_DownloadConfigFile": [
            "type": "app", "url": .string(harness.server.url + "/inventory/binaries/\(tooLarge)"),
        ]]))
        #expect(large["status"] == "FAILED")
        #expect(try String(contentsOfFile: files.app, encoding: .utf8) == content)
        await harness.close()
    }

    @Test func aFailingApplyRestoresThePreviousFile() async throws {
        let harness = try await Harness()
        let files = prepare(harness, apply: "echo tried >> \"$0.count\"\ngrep -q 'speed=1' \(harness.root)/etc/app.conf || { echo 'speed must be 1' >&2; exit 3; }")
        try await harness.startAgent()
        let binary = await harness.tenant.addBinary(Array("speed=9\n".utf8))
        let id = try await harness.createOperation(["c8y_DownloadConfigFile": [
            "type": "app", "url": .string(harness.server.url + "/inventory/binaries/\(binary)"),
        ]])
        let operation = try await harness.waitForEnd(id)
        #expect(operation["status"] == "FAILED")
        #expect(operation["failureReason"] == "applying the configuration failed: exited with code 3: speed must be 1; the previous configuration was restored and applied")
        #expect(try String(contentsOfFile: files.app, encoding: .utf8) == "speed=1\n")
        #expect(try String(contentsOfFile: files.counter, encoding: .utf8) == "tried\ntried\n")
        await harness.close()
    }

    @Test func anUnknownTypeFailsNamingTheDeclaredOnes() async throws {
        let harness = try await Harness()
        _ = prepare(harness)
        try await harness.startAgent()
        let id = try await harness.createOperation(["c8y_UploadConfigFile": ["type": "kernel"]])
        let operation = try await harness.waitForEnd(id)
        #expect(operation["failureReason"] == "unknown configuration type kernel; this device has: app, ssh")
        await harness.close()
    }
}
