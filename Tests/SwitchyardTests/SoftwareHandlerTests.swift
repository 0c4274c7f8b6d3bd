import Cumulocity
import Foundation
import JSONSupport
import Sandbox
import Testing
@testable import Switchyard

/// Software management with the shipped apt plugin and the real dpkg, in a throwaway dpkg root.
@Suite(.closesHarnesses, .timeLimit(.minutes(3)))
struct SoftwareHandlerTests {
    /// Builds a .deb with `dpkg-deb --build` and returns its bytes.
    static func deb(_ name: String, _ version: String, in root: String) throws -> [UInt8] {
        let dir = root + "/build-\(name)-\(version)"
        write("Package: \(name)\nVersion: \(version)\nArchitecture: all\nMaintainer: Switchyard tests <t@example.com>\nDescription: test package\n",
              to: dir + "/DEBIAN/control")
        write("\(name) \(version)\n", to: dir + "/opt/\(name)/VERSION")
        let output = dir + ".deb"
        try run("/usr/bin/dpkg-deb", ["--build", dir, output])
        return Array(try Data(contentsOf: URL(fileURLWithPath: output)))
    }

    static func run(_ program: String, _ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: program)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        try launch(process)
        process.waitUntilExit()
        try #require(process.terminationStatus == 0, "\(program) \(arguments) failed")
    }

    /// A harness whose device manages software in `root/dpkg-root` through `root/sm-plugins/apt`.
    static func prepare(_ harness: Harness) throws -> String {
        let dpkgRoot = harness.root + "/dpkg-root"
        for dir in ["var/lib/dpkg/info", "var/lib/dpkg/updates"] {
            try FileManager.default.createDirectory(atPath: dpkgRoot + "/" + dir, withIntermediateDirectories: true)
        }
        write("", to: dpkgRoot + "/var/lib/dpkg/status")
        write("", to: dpkgRoot + "/var/lib/dpkg/available")
        try FileManager.default.createDirectory(atPath: harness.root + "/sm-plugins", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: FileSystem.absolute("Plugins/sm-plugins/apt"), toPath: harness.root + "/sm-plugins/apt")
        harness.declare("software.yaml", """
            operation: c8y_SoftwareUpdate
            fragments: [c8y_SoftwareUpdate, c8y_SoftwareList]
            swift: Software
            options: {pluginsDirectory: \(harness.root)/sm-plugins, timeout: 60, env: {DPKG_ROOT: \(dpkgRoot)}}
            """)
        return dpkgRoot
    }

    func module(_ name: String, _ version: String, url: String = "", action: String = "install", type: String = "apt") -> JSONValue {
        ["name": .string(name), "version": .string(version), "url": .string(url), "action": .string(action), "softwareType": .string(type)]
    }

    func installed(_ harness: Harness) async throws -> [JSONValue] {
        let deviceID = try #require(await harness.deviceID())
        return await harness.tenant.managedObject(deviceID)?["c8y_SoftwareList"]?.arrayValue ?? []
    }

    @Test func installUpgradeAndRemoveWithTheRealDpkg() async throws {
        let harness = try await Harness()
        let dpkgRoot = try Self.prepare(harness)
        let v1 = await harness.tenant.addBinary(try Self.deb("sy-hello", "1.0", in: harness.root))
        let v2 = await harness.tenant.addBinary(try Self.deb("sy-hello", "2.0", in: harness.root))
        try await harness.startAgent()
        let deviceID = try #require(await harness.deviceID())
        try await eventually("software reported at start") {
            await harness.tenant.managedObject(deviceID)?["c8y_SupportedSoftwareTypes"] == ["apt"]
        }
        #expect(try await installed(harness).isEmpty)

        let install = try await harness.createOperation(["c8y_SoftwareUpdate": [module("sy-hello", "1.0", url: harness.server.url + "/inventory/binaries/\(v1)")]])
        #expect(try await harness.waitForEnd(install)["status"] == "SUCCESSFUL", "\(harness.log(install))")
        #expect(try String(contentsOfFile: dpkgRoot + "/opt/sy-hello/VERSION", encoding: .utf8) == "sy-hello 1.0\n")
        #expect(try await installed(harness) == [["name": "sy-hello", "version": "1.0", "softwareType": "apt", "url": ""]])
        #expect(await harness.tenant.managedObject(deviceID)?["c8y_Software"] == ["sy-hello": "1.0"])

        let upgrade = try await harness.createOperation(["c8y_SoftwareUpdate": [module("sy-hello", "2.0::apt", url: harness.server.url + "/inventory/binaries/\(v2)", type: "")]])
        #expect(try await harness.waitForEnd(upgrade)["status"] == "SUCCESSFUL")
        #expect(try await installed(harness).first?["version"] == "2.0")

        let remove = try await harness.createOperation(["c8y_SoftwareUpdate": [module("sy-hello", "2.0", action: "delete")]])
        #expect(try await harness.waitForEnd(remove)["status"] == "SUCCESSFUL")
        #expect(try await installed(harness).isEmpty)
        #expect(!FileManager.default.fileExists(atPath: dpkgRoot + "/opt/sy-hello/VERSION"))
        await harness.close()
    }

    @Test func legacyFullListInstallsWhatIsMissingAndRemovesWhatIsNotListed() async throws {
        let harness = try await Harness()
        _ = try Self.prepare(harness)
        let hello = await harness.tenant.addBinary(try Self.deb("sy-hello", "1.0", in: harness.root))
        let other = await harness.tenant.addBinary(try Self.deb("sy-other", "3.1", in: harness.root))
        try await harness.startAgent()
        let first = try await harness.createOperation(["c8y_SoftwareUpdate": [module("sy-hello", "1.0", url: harness.server.url + "/inventory/binaries/\(hello)")]])
        #expect(try await harness.waitForEnd(first)["status"] == "SUCCESSFUL")
        let legacy = try await harness.createOperation(["c8y_SoftwareList": [["name": "sy-other", "version": "3.1", "url": .string(harness.server.url + "/inventory/binaries/\(other)")]]])
        #expect(try await harness.waitForEnd(legacy)["status"] == "SUCCESSFUL", "\(harness.log(legacy))")
        #expect(try await installed(harness).compactMap { $0["name"]?.stringValue } == ["sy-other"])
        await harness.close()
    }

    @Test func unknownSoftwareTypeFailsNamingIt() async throws {
        let harness = try await Harness()
        _ = try Self.prepare(harness)
        try await harness.startAgent()
        let id = try await harness.createOperation(["c8y_SoftwareUpdate": [module("app", "1", type: "docker")]])
        let operation = try await harness.waitForEnd(id)
        #expect(operation["status"] == "FAILED")
        #expect(operation["failureReason"]?.stringValue?.hasPrefix("no software plugin for type 'docker'") == true)
        await harness.close()
    }

    @Test func pluginRefusalIsTheReason() async throws {
        let harness = try await Harness()
        _ = try Self.prepare(harness)
        let v1 = await harness.tenant.addBinary(try Self.deb("sy-hello", "1.0", in: harness.root))
        try await harness.startAgent()
        let id = try await harness.createOperation(["c8y_SoftwareUpdate": [module("sy-hello", "9.9", url: harness.server.url + "/inventory/binaries/\(v1)")]])
        let operation = try await harness.waitForEnd(id)
        #expect(operation["status"] == "FAILED")
        #expect(operation["failureReason"]?.stringValue?.contains("holds sy-hello 1.0, not version 9.9") == true)
        #expect(try await installed(harness).isEmpty)
        await harness.close()
    }

    @Test func artifactsOnOtherHostsGetNoCredentials() async throws {
        let harness = try await Harness()
        _ = try Self.prepare(harness)
        let v1 = await harness.tenant.addBinary(try Self.deb("sy-hello", "1.0", in: harness.root))
        try await harness.startAgent()
        // Same server, other origin: the tenant's credentials must not be sent, so the sandbox answers 401.
        let url = "http://localhost:\(harness.server.port)/inventory/binaries/\(v1)"
        let id = try await harness.createOperation(["c8y_SoftwareUpdate": [module("sy-hello", "1.0", url: url)]])
        let operation = try await harness.waitForEnd(id)
        #expect(operation["status"] == "FAILED")
        #expect(operation["failureReason"]?.stringValue?.contains("HTTP 401") == true)
        await harness.close()
    }
}

/// Streaming downloads: resumed with Range after a cut, capped, and confined credentials.
@Suite(.closesHarnesses, .timeLimit(.minutes(2)))
struct DownloaderTests {
    @Test func interruptedDownloadResumesWithARangeRequest() async throws {
        let harness = try await Harness()
        let bytes = (0..<3_000_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let id = await harness.tenant.addBinary(bytes)
        await harness.tenant.cutNextDownload(after: 1_000_000)
        let transport = try CurlTransport()
        defer { transport.shutdown() }
        let settings = harness.tenant.settings
        let client = PlatformClient(baseURL: harness.server.url, transport: transport,
                                    credentials: BasicCredentials(tenant: settings.tenantID, username: settings.username, password: settings.password))
        let file = harness.root + "/download"
        let size = try await Downloader(client: client).download(harness.server.url + "/inventory/binaries/\(id)", to: file, maxBytes: 10_000_000)
        #expect(size == 3_000_000)
        #expect(Array(try Data(contentsOf: URL(fileURLWithPath: file))) == bytes)
        let requests = await harness.tenant.binaryRequests
        #expect(requests.count == 2)
        #expect(requests.first == "\(id) -")
        #expect(requests.last?.hasPrefix("\(id) bytes=") == true && requests.last != "\(id) bytes=0-")

        await #expect(throws: DownloadError.self) {
            _ = try await Downloader(client: client).download(harness.server.url + "/inventory/binaries/\(id)", to: harness.root + "/small", maxBytes: 1000)
        }
        await harness.close()
    }
}

/// The plugin interface itself, with scripted plugins that record how they are called.
@Suite(.closesHarnesses, .timeLimit(.minutes(2)))
struct SoftwarePluginInterfaceTests {
    static func declare(_ harness: Harness, timeout: Int = 60) {
        harness.declare("software.yaml", """
            operation: c8y_SoftwareUpdate
            swift: Software
            options: {pluginsDirectory: \(harness.root)/sm-plugins, timeout: \(timeout)}
            """)
    }

    @Test func updateListIsUsedWhenThePluginSupportsIt() async throws {
        let harness = try await Harness()
        let calls = harness.root + "/calls"
        write("""
            #!/bin/sh
            echo "$*" >> '\(calls)'
            if [ "$1" = update-list ]; then cat >> '\(calls)'; fi
            exit 0
            """, to: harness.root + "/sm-plugins/fake", mode: 0o755)
        Self.declare(harness)
        try await harness.startAgent()
        let id = try await harness.createOperation(["c8y_SoftwareUpdate": [
            ["name": "a", "version": "1", "action": "install", "softwareType": "fake"],
            ["name": "b", "version": "", "action": "delete", "softwareType": "fake"],
        ]])
        #expect(try await harness.waitForEnd(id)["status"] == "SUCCESSFUL")
        let log = try String(contentsOfFile: calls, encoding: .utf8)
        // In the order of the request, as thin-edge passes it (removes are not moved ahead).
        #expect(log.contains("prepare\nupdate-list\ninstall\ta\t1\t\nremove\tb\t\t\nfinalize\n"), "\(log)")
        #expect(!log.contains("install a"))
        await harness.close()
    }

    @Test func aHangingPluginVerbTimesOut() async throws {
        let harness = try await Harness()
        write("#!/bin/sh\n[ \"$1\" = list ] && exit 0\n[ \"$1\" = prepare ] && sleep 30\nexit 0\n", to: harness.root + "/sm-plugins/slow", mode: 0o755)
        Self.declare(harness, timeout: 1)
        try await harness.startAgent()
        let id = try await harness.createOperation(["c8y_SoftwareUpdate": [["name": "a", "version": "1", "action": "install", "softwareType": "slow"]]])
        let operation = try await harness.waitForEnd(id, within: 15)
        #expect(operation["status"] == "FAILED")
        #expect(operation["failureReason"]?.stringValue?.contains("slow prepare failed: timed out after 1.0 seconds") == true)
        await harness.close()
    }
}
