import ConfigurationHandler
import FirmwareHandler
import Foundation
import HandlerKit
import HandlerKitTesting
import MessageHandler
import Testing

/// The standard handlers unit-tested with HandlerKitTesting's RecordingContext: no agent, no sandbox.
struct HandlerKitTestingTests {
    func operation(_ fragment: String, _ payload: JSONValue) -> HandlerKit.Operation {
        HandlerKit.Operation(id: "1", deviceId: "2", externalId: "gw", fragment: fragment, json: [fragment: payload])
    }

    @Test func theRecordingContextHashesAsSHA256Does() async throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let context = RecordingContext(stateDirectory: dir)
        for (text, digest) in [
            ("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            ("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
            ("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"),
        ] {
            write(text, to: dir + "/input")
            #expect(try await context.sha256(ofFile: dir + "/input") == digest)
        }
    }

    @Test func messageIsLoggedEchoedAndAppended() async throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let handler = try MessageHandler(options: ["file": .string(dir + "/messages")])
        let context = RecordingContext(stateDirectory: dir)
        let outcome = try await handler.execute(operation("c8y_Message", ["text": "hello"]), context: context)
        #expect(outcome == .successful(result: ["c8y_Message": ["text": "hello", "delivered": true]]))
        #expect(context.calls == [.log("message: hello")])
        #expect(try String(contentsOfFile: dir + "/messages", encoding: .utf8) == "hello\n")
        #expect(try await handler.execute(operation("c8y_Message", ["text": 3]), context: context)
                == .failed("c8y_Message.text is missing or not a string"))
    }

    @Test func aConfigurationWhoseApplyFailsIsRestoredAndAppliedAgain() async throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        write("old=1\n", to: dir + "/device.conf")
        let applied = Counter()
        let context = RecordingContext(stateDirectory: dir, commands: { argv, _, _ in
            await applied.increment()
            return await applied.value == 1 ? CommandResult(exitCode: 1, detail: "bad key 'new'") : CommandResult(exitCode: 0, detail: "")
        })
        let handler = try ConfigurationHandler(options: ["file": .string(dir + "/device.conf"), "apply": ["/usr/bin/reload", "acme"]])
        let outcome = try await handler.execute(operation("c8y_Configuration", ["config": "new=2\n"]), context: context)
        #expect(outcome == .failed("applying the configuration failed: exited with code 1: bad key 'new'; the previous configuration was restored and applied"))
        #expect(try String(contentsOfFile: dir + "/device.conf", encoding: .utf8) == "old=1\n")
        #expect(context.calls.filter { if case .command = $0 { true } else { false } }.count == 2)
        #expect(context.inventory["c8y_Configuration"] == nil, "a failed configuration is not reported as the device's")
    }

    @Test func aFirmwareImageWithTheWrongDigestIsNotInstalled() async throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        write("image bytes", to: dir + "/served.image")
        let context = RecordingContext(stateDirectory: dir, downloads: ["https://files.example.com/fw.bin": dir + "/served.image"])
        let handler = try FirmwareHandler(options: ["installer": ["/usr/lib/acme/installer"]])
        let outcome = try await handler.execute(operation("c8y_Firmware", [
            "name": "os", "version": "2.0", "url": "https://files.example.com/fw.bin", "sha256": .string(String(repeating: "0", count: 64)),
        ]), context: context)
        guard case .failed(let reason, _) = outcome else { Issue.record("not failed: \(outcome)"); return }
        #expect(reason.hasSuffix("not \(String(repeating: "0", count: 64)); nothing was installed"))
        #expect(context.calls.first == .download(url: "https://files.example.com/fw.bin", path: dir + "/firmware.image"))
        #expect(!context.calls.contains { if case .command = $0 { true } else { false } }, "the installer ran")
    }

    /// Options decode into a handler's own struct; what is wrong names the option and the value.
    @Test(arguments: [
        (["installer": ["/bin/install"], "timeout": "ten"] as JSONValue, "options.timeout must be a whole number, found \"ten\""),
        ([:] as JSONValue, "options.installer is required"),
        (["installer": ["/bin/install"], "env": ["A": 1]] as JSONValue, "options.env.A must be text, found 1"),
        (["installer": ["/bin/install", 2]] as JSONValue, "options.installer[1] must be text, found 2"),
        (["installer": ["relative"]] as JSONValue, "options.installer must be a list starting with the installer's absolute path"),
    ])
    func badOptionsNameTheOptionAndTheValue(_ options: JSONValue, _ expected: String) {
        #expect(throws: HandlerOptionsError(expected)) { try FirmwareHandler(options: options) }
    }

    @Test func optionsDecodeIntoTheHandlersStruct() throws {
        struct Options: Decodable, Equatable { var name: String; var count: Int?; var tags: [String]? }
        #expect(try (["name": "x", "tags": ["a"], "unknown": true] as JSONValue).decode(Options.self)
                == Options(name: "x", count: nil, tags: ["a"]))
        #expect(throws: HandlerOptionsError("options.name is required")) { try JSONValue.null.decode(Options.self) }
    }

}
