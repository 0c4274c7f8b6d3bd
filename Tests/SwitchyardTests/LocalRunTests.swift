import Foundation
import Testing
@testable import Switchyard

/// `switchyard handlers run`: one handler on this machine, nothing sent (issue 15 §2).
@Suite(.timeLimit(.minutes(2)))
struct LocalRunTests {
    func run(_ arguments: [String], input: String? = nil) async throws -> ProgramRun {
        try await runProgram(try switchyardBinary(), ["handlers", "run"] + arguments, input: input)
    }

    func directory() throws -> String {
        let path = NSTemporaryDirectory() + "local-run-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path + "/handlers.d", withIntermediateDirectories: true)
        return path
    }

    @Test func aCompiledHandlerRunsOnItsExampleAndPrintsWhatWouldBeSent() async throws {
        let root = try directory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        write("fragments: [switchyard_Ignored]\n", to: root + "/unused")
        write("""
            operation: c8y_Message
            swift: Message
            example: {c8y_Message: {text: hello locally}}
            """, to: root + "/handlers.d/message.yaml")
        let ran = try await run(["c8y_Message", "--example", "--dir", root + "/handlers.d"])
        #expect(ran.status == 0, "\(ran.output)")
        #expect(ran.output.contains("message: hello locally"), "\(ran.output)")
        #expect(ran.output.hasSuffix("SUCCESSFUL {\"c8y_Message\":{\"delivered\":true,\"text\":\"hello locally\"}}\n"), "\(ran.output)")

        let missing = try await run(["c8y_Message", "-", "--dir", root + "/handlers.d"], input: "{\"c8y_Message\": {}}")
        #expect(missing.status == 1)
        #expect(missing.output.contains("FAILED: c8y_Message.text is missing or not a string"), "\(missing.output)")
    }

    @Test func anExecutableShowsItsDirectivesAndAskedRestartsResume() async throws {
        let root = try directory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        write("""
            #!/bin/sh
            if [ "$SWITCHYARD_PHASE" = resume ]; then
              printf '{"switchyard":"result","fragments":{"acme_Update":{"resumed":true}}}\\n'
              exit 0
            fi
            echo "updating"
            printf '{"switchyard":"inventory","fragments":{"acme_Update":{"stage":"installed"}}}\\n'
            printf '{"switchyard":"measurement","type":"acme","fragments":{"acme":{"v":{"value":1}}}}\\n'
            printf '{"switchyard":"restart"}\\n'
            """, to: root + "/handlers.d/update.sh", mode: 0o755)
        write("operation: acme_Update\nexec: {command: [./update.sh]}\nresumable: true\n", to: root + "/handlers.d/update.yaml")
        let state = root + "/state"
        let first = try await run(["acme_Update", "--dir", root + "/handlers.d", "--state", state])
        #expect(first.status == 3, "\(first.output)")
        #expect(first.output.contains("→ PUT /inventory/managedObjects/local-device {\"acme_Update\":{\"stage\":\"installed\"}}"), "\(first.output)")
        #expect(first.output.contains("→ POST /measurement/measurements"), "\(first.output)")
        #expect(first.output.contains("updating"))
        #expect(first.output.contains("RESTART REQUESTED"))
        let second = try await run(["acme_Update", "--dir", root + "/handlers.d", "--state", state, "--phase", "resume"])
        #expect(second.status == 0, "\(second.output)")
        #expect(second.output.hasSuffix("SUCCESSFUL {\"acme_Update\":{\"resumed\":true}}\n"), "\(second.output)")
    }

    @Test func downloadsAreServedFromAFilesDirectoryAndStepsRunLocallyToo() async throws {
        let root = try directory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        write("speed=1\n", to: root + "/app.conf")
        write("speed=2\n", to: root + "/files/app-v2")
        write("""
            operation: c8y_DownloadConfigFile
            swift: Configuration
            options: {files: [{type: app, path: \(root)/app.conf}]}
            ---
            operation: c8y_DeviceProfile
            swift: DeviceProfile
            resumable: true
            requires: [c8y_DownloadConfigFile]
            """, to: root + "/handlers.d/config.yaml")
        let ran = try await run(["c8y_DeviceProfile", "-", "--dir", root + "/handlers.d", "--files", root + "/files"], input: """
            {"profileName": "p", "profileId": "1", "c8y_DeviceProfile": {"configuration": [{"name": "app", "type": "app", "url": "https://tenant.example.com/inventory/binaries/app-v2"}]}}
            """)
        #expect(ran.status == 0, "\(ran.output)")
        #expect(ran.output.contains("step configuration app: c8y_DownloadConfigFile"), "\(ran.output)")
        #expect(ran.output.contains("(served from \(root)/files/app-v2, 8 bytes)"), "\(ran.output)")
        #expect(ran.output.contains("\"profileExecuted\":true"), "\(ran.output)")
        #expect(try String(contentsOfFile: root + "/app.conf", encoding: .utf8) == "speed=2\n")

        let unknown = try await run(["acme_Nothing", "--dir", root + "/handlers.d"])
        #expect(unknown.status == 1)
        #expect(unknown.output.contains("no declaration in \(root)/handlers.d handles acme_Nothing"), "\(unknown.output)")
    }
}

/// `switchyard handlers new`: what it writes validates and runs as generated (issue 15 §4). The Swift
/// package is built, tested and run by CI (.ci/run), a build being too slow for a unit test.
@Suite(.timeLimit(.minutes(2)))
struct HandlerTemplateTests {
    func switchyard(_ arguments: [String]) async throws -> ProgramRun {
        try await runProgram(try switchyardBinary(), arguments)
    }

    @Test(arguments: ["sh", "python"])
    func aScriptTemplateValidatesRunsAndConforms(_ language: String) async throws {
        let root = NSTemporaryDirectory() + "template-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: root) }
        let name = "acme_Blink"
        let written = try await switchyard(["handlers", "new", name, "--lang", language, "--dir", root + "/handlers.d"])
        #expect(written.status == 0, "\(written.output)")
        let validated = try await switchyard(["handlers", "validate", "--dir", root + "/handlers.d"])
        #expect(validated.status == 0, "\(validated.output)")
        let ran = try await switchyard(["handlers", "run", name, "--example", "--dir", root + "/handlers.d"])
        #expect(ran.status == 0, "\(ran.output)")
        for expected in ["→ progress: started", "→ PUT /inventory/managedObjects/local-device", "→ POST /event/events",
                         "→ POST /measurement/measurements", "→ POST /alarm/alarms", "→ clear the active alarms of type acme_BlinkAlarm",
                         "acme_Blink: operation local, phase execute", "SUCCESSFUL {\"acme_Blink\":{\"done\":true"] {
            #expect(ran.output.contains(expected), "\(language): \(expected) missing in \(ran.output)")
        }
        // And it passes the protocol's conformance checks as generated.
        guard case .success(let conformance) = Conformance.declaration(root + "/handlers.d/\(name).yaml", timeout: .seconds(10),
                                                                        scratch: root + "/conformance") else {
            Issue.record("conformance refused the generated declaration"); return
        }
        let checks = await conformance.run()
        let failures = checks.filter { !$0.passed }
        #expect(failures.isEmpty, "\(language): \(failures)")
        let again = try await switchyard(["handlers", "new", name, "--lang", language, "--dir", root + "/handlers.d"])
        #expect(again.status != 0 && again.output.contains("exists already; nothing was written"), "\(again.output)")
    }

    @Test func theSwiftTemplateIsAPackageWithAUnitTest() async throws {
        let root = NSTemporaryDirectory() + "template-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: root) }
        let written = try await switchyard(["handlers", "new", "acme_Blink", "--lang", "swift", "--dir", root + "/handlers.d",
                                      "--package", root + "/blink", "--switchyard-path", FileManager.default.currentDirectoryPath])
        #expect(written.status == 0, "\(written.output)")
        for file in ["handlers.d/acme_Blink.yaml", "blink/Package.swift", "blink/Sources/BlinkHandler/BlinkHandler.swift",
                     "blink/Sources/acme-blink/main.swift", "blink/Tests/BlinkHandlerTests/BlinkHandlerTests.swift"] {
            #expect(FileManager.default.fileExists(atPath: root + "/" + file), "\(file) not written")
        }
        let declaration = try String(contentsOfFile: root + "/handlers.d/acme_Blink.yaml", encoding: .utf8)
        #expect(declaration.contains("swift: {executable: \(root)/blink/.build/debug/acme-blink}"))
        // Until it is built, the declaration names a program that does not exist yet, and says so.
        let validated = try await switchyard(["handlers", "validate", "--dir", root + "/handlers.d"])
        #expect(validated.output.contains("program \(root)/blink/.build/debug/acme-blink does not exist"), "\(validated.output)")
        #expect(try await switchyard(["handlers", "new", "9lives", "--lang", "sh"]).output.contains("is not an operation name"))
    }
}
