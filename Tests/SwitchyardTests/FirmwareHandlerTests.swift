import Foundation
import Cumulocity
import JSONSupport
import Sandbox
import Testing
@testable import Switchyard

/// c8y_Firmware with the example A/B installer, images served by the sandbox, a reboot in between.
@Suite(.closesHarnesses, .timeLimit(.minutes(2)))
struct FirmwareHandlerTests {
    struct Setup {
        let bootID: String
        let rebooted: String
        let slots: String
    }

    static func prepare(_ harness: Harness, maxBoots: Int = 3) -> Setup {
        let bootID = harness.root + "/boot_id"
        write("boot-1\n", to: bootID)
        let reboot = harness.script("reboot.sh", "touch \"$0.done\"")
        let slots = harness.root + "/slots"
        let installer = harness.root + "/bin/ab-installer"
        try? FileManager.default.copyItem(atPath: FileSystem.absolute("Plugins/firmware/ab-installer"), toPath: installer)
        harness.declare("standard.yaml", """
            operation: c8y_Restart
            swift: Restart
            resumable: true
            options: {command: [\(reboot)], bootIdFile: \(bootID), restartTimeout: 30}
            ---
            operation: c8y_Firmware
            swift: Firmware
            resumable: true
            options: {installer: [\(installer)], maxBoots: \(maxBoots), env: {FIRMWARE_ROOT: \(slots)}}
            """)
        return Setup(bootID: bootID, rebooted: reboot + ".done", slots: slots)
    }

    static func sha256(_ bytes: [UInt8], in dir: String) throws -> String {
        let file = dir + "/image-for-digest"
        FileManager.default.createFile(atPath: file, contents: Data(bytes))
        return try sha256Hex(ofFile: file)
    }

    /// Creates the operation, waits for the reboot request, "reboots" (agent down, new boot id, agent up).
    func updateAcrossAReboot(_ harness: Harness, _ setup: Setup, firmware: JSONValue) async throws -> String {
        let id = try await harness.createOperation(["c8y_Firmware": firmware])
        try await eventually("device restart requested") { FileManager.default.fileExists(atPath: setup.rebooted) }
        await harness.stopAgent()
        write("boot-2\n", to: setup.bootID)
        try FileManager.default.removeItem(atPath: setup.rebooted)
        try await harness.startAgent()
        return id
    }

    @Test func updateSpansTheRebootAndResumesAnInterruptedDownload() async throws {
        let harness = try await Harness()
        let setup = Self.prepare(harness)
        let image = (0..<4_000_000).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        let binary = await harness.tenant.addBinary(image)
        await harness.tenant.cutNextDownload(after: 1_500_000)
        try await harness.startAgent()
        let id = try await updateAcrossAReboot(harness, setup, firmware: [
            "name": "acme-os", "version": "2.0", "url": .string(harness.server.url + "/inventory/binaries/\(binary)"),
            "sha256": .string(try Self.sha256(image, in: harness.root)),
        ])
        let operation = try await harness.waitForEnd(id)
        #expect(operation["status"] == "SUCCESSFUL", "\(operation)")
        let deviceID = try #require(await harness.deviceID())
        #expect(await harness.tenant.managedObject(deviceID)?["c8y_Firmware"]?["version"] == "2.0")
        #expect(try String(contentsOfFile: setup.slots + "/active", encoding: .utf8) == "b\n")
        #expect(Array(try Data(contentsOf: URL(fileURLWithPath: setup.slots + "/b/image"))) == image)
        let requests = await harness.tenant.binaryRequests
        #expect(requests.count == 2 && requests.last?.contains("bytes=") == true)
        await harness.close()
    }

    @Test func corruptedImageIsRefusedBeforeInstalling() async throws {
        let harness = try await Harness()
        let setup = Self.prepare(harness)
        let binary = await harness.tenant.addBinary(Array("not the image you expected".utf8))
        try await harness.startAgent()
        let id = try await harness.createOperation(["c8y_Firmware": [
            "name": "acme-os", "version": "2.0", "url": .string(harness.server.url + "/inventory/binaries/\(binary)"),
            "sha256": .string(String(repeating: "ab", count: 32)),
        ]])
        let operation = try await harness.waitForEnd(id)
        #expect(operation["status"] == "FAILED")
        #expect(operation["failureReason"]?.stringValue?.contains("nothing was installed") == true)
        #expect(!FileManager.default.fileExists(atPath: setup.slots + "/pending"))
        #expect(!FileManager.default.fileExists(atPath: setup.rebooted))
        await harness.close()
    }

    @Test func failedVerificationAfterTheRebootRollsBack() async throws {
        let harness = try await Harness()
        let setup = Self.prepare(harness)
        let binary = await harness.tenant.addBinary(Array("BROKEN image\n".utf8))
        try await harness.startAgent()
        let id = try await updateAcrossAReboot(harness, setup, firmware: [
            "name": "acme-os", "version": "3.0", "url": .string(harness.server.url + "/inventory/binaries/\(binary)"),
        ])
        let operation = try await harness.waitForEnd(id)
        #expect(operation["status"] == "FAILED")
        let reason = operation["failureReason"]?.stringValue ?? ""
        #expect(reason.contains("failed verification") && reason.contains("does not boot") && reason.contains("rolled back"))
        #expect(try String(contentsOfFile: setup.slots + "/active", encoding: .utf8) == "a\n")
        #expect(!FileManager.default.fileExists(atPath: setup.slots + "/pending"))
        await harness.close()
    }

    @Test func loopBreakerStopsEndlessReboots() async throws {
        let harness = try await Harness()
        let setup = Self.prepare(harness, maxBoots: 0)
        let binary = await harness.tenant.addBinary(Array("image\n".utf8))
        try await harness.startAgent()
        let id = try await updateAcrossAReboot(harness, setup, firmware: [
            "name": "acme-os", "version": "4.0", "url": .string(harness.server.url + "/inventory/binaries/\(binary)"),
        ])
        let operation = try await harness.waitForEnd(id)
        #expect(operation["status"] == "FAILED")
        #expect(operation["failureReason"]?.stringValue?.contains("reboot loop") == true)
        #expect(try String(contentsOfFile: setup.slots + "/active", encoding: .utf8) == "a\n")
        await harness.close()
    }

    @Test func missingFieldsFail() async throws {
        let harness = try await Harness()
        _ = Self.prepare(harness)
        try await harness.startAgent()
        let id = try await harness.createOperation(["c8y_Firmware": ["name": "acme-os"]])
        #expect(try await harness.waitForEnd(id)["failureReason"] == "c8y_Firmware needs name, version and url")
        await harness.close()
    }
}

@Suite(.closesHarnesses, .timeLimit(.minutes(2)))
struct FirmwareInstallerTests {
    @Test func providedFirmwareIsInstalledByTheInstallerItself() async throws {
        let harness = try await Harness()
        let setup = FirmwareHandlerTests.prepare(harness)
        try await harness.startAgent()
        let id = try await FirmwareHandlerTests().updateAcrossAReboot(harness, setup, firmware: ["name": "acme-os", "version": "5.0", "url": "$PROVIDED"])
        #expect(try await harness.waitForEnd(id)["status"] == "SUCCESSFUL")
        #expect(try String(contentsOfFile: setup.slots + "/b/version", encoding: .utf8) == "acme-os 5.0\n")
        #expect(await harness.tenant.binaryRequests.isEmpty)
        await harness.close()
    }

    @Test func installerFailureIsTheReason() async throws {
        let harness = try await Harness()
        _ = FirmwareHandlerTests.prepare(harness)
        let binary = await harness.tenant.addBinary([])  // an empty image: the installer refuses it
        try await harness.startAgent()
        let id = try await harness.createOperation(["c8y_Firmware": [
            "name": "acme-os", "version": "6.0", "url": .string(harness.server.url + "/inventory/binaries/\(binary)"),
        ]])
        let operation = try await harness.waitForEnd(id)
        #expect(operation["status"] == "FAILED")
        #expect(operation["failureReason"]?.stringValue?.contains("failed to install acme-os 6.0: exited with code 2: image") == true)
        await harness.close()
    }
}
