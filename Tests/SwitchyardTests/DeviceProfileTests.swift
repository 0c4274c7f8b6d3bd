import Foundation
import HandlerKit
import HandlerKitTesting
import JSONSupport
import Sandbox
import Testing
import BuiltinHandlers
@testable import DeviceProfileHandler
@testable import Switchyard

/// c8y_DeviceProfile: firmware, software and configuration through the device's own handlers, end to
/// end with a reboot in the middle, and the step that fails after one that succeeded.
@Suite(.closesHarnesses, .timeLimit(.minutes(2)))
struct DeviceProfileTests {
    struct Setup {
        let bootID: String
        let rebooted: String
        let slots: String
        let calls: String
        let config: String
    }

    /// Restart, the example A/B installer, a scripted software plugin, a typed configuration file
    /// and the profile itself; `installer` replaces the A/B installer when given.
    static func prepare(_ harness: Harness, installer script: String? = nil, software: String = "exit 0") -> Setup {
        let bootID = harness.root + "/boot_id"
        write("boot-1\n", to: bootID)
        let reboot = harness.script("reboot.sh", "touch \"$0.done\"")
        let slots = harness.root + "/slots"
        let installer = harness.root + "/bin/ab-installer"
        if let script {
            harness.script("ab-installer", script)
        } else {
            try? FileManager.default.copyItem(atPath: FileSystem.absolute("Plugins/firmware/ab-installer"), toPath: installer)
        }
        let calls = harness.root + "/calls"
        write("#!/bin/sh\necho \"$*\" >> '\(calls)'\n[ \"$1\" = update-list ] && exit 1\n[ \"$1\" = install ] && { \(software); }\nexit 0\n",
              to: harness.root + "/sm-plugins/fake", mode: 0o755)
        let config = harness.root + "/etc/app.conf"
        write("speed=1\n", to: config, mode: 0o640)
        harness.declare("standard.yaml", """
            operation: c8y_Restart
            swift: Restart
            resumable: true
            options: {command: [\(reboot)], bootIdFile: \(bootID), restartTimeout: 30}
            ---
            operation: c8y_Firmware
            swift: Firmware
            resumable: true
            options: {installer: [\(installer)], env: {FIRMWARE_ROOT: \(slots)}}
            ---
            operation: c8y_SoftwareUpdate
            swift: Software
            options: {pluginsDirectory: \(harness.root)/sm-plugins}
            ---
            operation: c8y_DownloadConfigFile
            swift: Configuration
            options: {files: [{type: app, path: \(config)}]}
            """)
        try? FileManager.default.copyItem(atPath: FileSystem.absolute("handlers.d/c8y_DeviceProfile.yaml"),
                                          toPath: harness.handlers + "/c8y_DeviceProfile.yaml")
        return Setup(bootID: bootID, rebooted: reboot + ".done", slots: slots, calls: calls, config: config)
    }

    func profile(_ harness: Harness, image: String, config: String) -> JSONValue {
        [
            "profileName": "acme 2.0", "profileId": "158751",
            "c8y_DeviceProfile": [
                "firmware": ["name": "acme-os", "version": "2.0", "url": .string(harness.server.url + "/inventory/binaries/\(image)")],
                "software": [["name": "tool", "version": "1.1", "url": "", "action": "install", "softwareType": "fake"]],
                "configuration": [["name": "app", "type": "app", "url": .string(harness.server.url + "/inventory/binaries/\(config)")]],
            ],
        ]
    }

    @Test func aProfileResumesAfterTheFirmwareRebootAndAppliesEveryStep() async throws {
        let harness = try await Harness()
        let setup = Self.prepare(harness)
        let image = await harness.tenant.addBinary(Array(repeating: 7, count: 100_000))
        let config = await harness.tenant.addBinary(Array("speed=2\n".utf8))
        try await harness.startAgent()
        let deviceID = try #require(await harness.deviceID())
        #expect(await harness.advertised()?.arrayValue?.contains("c8y_DeviceProfile") == true)
        let id = try await harness.createOperation(profile(harness, image: image, config: config))
        try await eventually("device restart requested") { FileManager.default.fileExists(atPath: setup.rebooted) }
        #expect(await harness.tenant.managedObject(deviceID)?["c8y_Profile"]?["profileExecuted"] == false)
        await harness.stopAgent()
        write("boot-2\n", to: setup.bootID)
        try FileManager.default.removeItem(atPath: setup.rebooted)
        try await harness.startAgent()
        let operation = try await harness.waitForEnd(id)
        #expect(operation["status"] == "SUCCESSFUL", "\(operation)")
        let device = await harness.tenant.managedObject(deviceID)
        #expect(device?["c8y_Profile"] == ["profileName": "acme 2.0", "profileId": "158751", "profileExecuted": true])
        #expect(device?["c8y_Firmware"]?["version"] == "2.0")
        #expect(device?["c8y_Configuration_app"]?["type"] == "app")
        #expect(try String(contentsOfFile: setup.slots + "/active", encoding: .utf8) == "b\n")
        #expect(try String(contentsOfFile: setup.config, encoding: .utf8) == "speed=2\n")
        #expect(try String(contentsOfFile: setup.calls, encoding: .utf8).contains("install tool --module-version 1.1"))
        #expect(await harness.statuses(id) == ["PENDING", "EXECUTING", "SUCCESSFUL"])
        await harness.close()
    }

    @Test func aFailingStepFailsTheProfileNamingItAndWhatWasApplied() async throws {
        let harness = try await Harness()
        // A firmware installer that needs no reboot, and a software plugin that refuses to install.
        let setup = Self.prepare(harness, installer: "[ \"$1\" = needs-reboot ] && exit 1\nexit 0",
                                 software: "echo 'tool 1.1: no such package' >&2; exit 2")
        let image = await harness.tenant.addBinary(Array(repeating: 7, count: 1000))
        let config = await harness.tenant.addBinary(Array("speed=2\n".utf8))
        try await harness.startAgent()
        let deviceID = try #require(await harness.deviceID())
        let operation = try await harness.waitForEnd(try await harness.createOperation(profile(harness, image: image, config: config)))
        #expect(operation["status"] == "FAILED")
        let reason = operation["failureReason"]?.stringValue ?? ""
        #expect(reason.hasPrefix("the profile's software step failed: "), "\(reason)")
        #expect(reason.contains("no such package"), "\(reason)")
        #expect(reason.hasSuffix("(already applied: firmware)"), "\(reason)")
        let device = await harness.tenant.managedObject(deviceID)
        #expect(device?["c8y_Firmware"]?["version"] == "2.0", "the firmware step reports as c8y_Firmware would")
        #expect(device?["c8y_Profile"]?["profileExecuted"] == false)
        #expect(try String(contentsOfFile: setup.config, encoding: .utf8) == "speed=1\n", "no step after the failing one")
        await harness.close()
    }

    @Test func theProfileIsActiveOnlyWithAHandlerItBuildsOn() throws {
        let directory = NSTemporaryDirectory() + "profile-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try FileManager.default.copyItem(atPath: FileSystem.absolute("handlers.d/c8y_DeviceProfile.yaml"), toPath: directory + "/profile.yaml")
        let alone = Registry.load(directory: directory, catalog: builtinHandlers)
        #expect(alone.supportedOperations == [])
        #expect(alone.problems.isEmpty)
        #expect(alone.dormant.map(\.operation) == ["c8y_DeviceProfile"])
        write("operation: c8y_DownloadConfigFile\nswift: Configuration\noptions: {files: [{type: a, path: /tmp/a.conf}]}\n",
              to: directory + "/config.yaml")
        let withConfiguration = Registry.load(directory: directory, catalog: builtinHandlers)
        #expect(withConfiguration.supportedOperations == ["c8y_DeviceProfile", "c8y_DownloadConfigFile"])
    }

    @Test func stepsAreTakenInTheReferenceOrderAndRecorded() async throws {
        let context = RecordingContext(stateDirectory: NSTemporaryDirectory(), steps: { _, _, _, _ in .successful })
        let operation = Operation(id: "1", deviceId: "d", externalId: nil, fragment: "c8y_DeviceProfile", json: [
            "profileName": "p", "profileId": "9",
            "c8y_DeviceProfile": [
                "configuration": [["name": "b", "type": "b", "url": "https://x/b"]],
                "software": [["name": "s", "version": "1", "url": "", "action": "install"]],
                "firmware": ["name": "f", "version": "1", "url": "https://x/f"],
            ],
        ])
        #expect(try await DeviceProfileHandler(options: .null).execute(operation, context: context) == .successful)
        let steps = context.calls.compactMap { call -> String? in
            if case .step(let name, let fragment, _, let phase) = call { "\(name) \(fragment) \(phase)" } else { nil }
        }
        #expect(steps == ["firmware c8y_Firmware execute", "software c8y_SoftwareUpdate execute",
                          "configuration b c8y_DownloadConfigFile execute"])
        #expect(context.inventory["c8y_Profile"]?["profileExecuted"] == true)
        let empty = Operation(id: "2", deviceId: "d", externalId: nil, fragment: "c8y_DeviceProfile", json: ["c8y_DeviceProfile": [:]])
        #expect(try await DeviceProfileHandler(options: .null).execute(empty, context: context)
                == .failed("c8y_DeviceProfile has no firmware, software or configuration to apply"))
    }
}
