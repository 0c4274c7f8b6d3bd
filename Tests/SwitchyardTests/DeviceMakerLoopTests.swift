import BuiltinHandlers
import Cumulocity
import Foundation
import JSONSupport
import Sandbox
import Testing
@testable import Switchyard

/// A device maker's mistakes, made on purpose: each gets an answer that points at it.
// One at a time: each test runs agents or real binaries, and the rest of the suite runs meanwhile.
@Suite(.closesHarnesses, .serialized, .timeLimit(.minutes(3)))
struct DeviceMakerLoopTests {
    func problems(_ files: [String: String]) -> (Registry, String) {
        let root = temporaryDirectory()
        for (name, text) in files { write(text, to: root + "/handlers.d/" + name) }
        write("#!/bin/sh\nexit 0\n", to: root + "/handlers.d/run.sh", mode: 0o755)
        return (Registry.load(directory: root + "/handlers.d", catalog: builtinHandlers), root)
    }

    @Test func validateReportsEveryProblemOfAFile() {
        let (registry, root) = problems(["a.yaml": """
            operation: acme_A
            descripton: typo
            exec:
              command: [./run.sh]
              timout: 5s
            concurrency: 0
            resumable: perhaps
            colour: blue
            """])
        defer { FileSystem.removeTree(root) }
        let found = registry.problems.map { "\($0.line ?? 0): \($0.detail)" }
        #expect(found.count == 5, "\(found)")
        #expect(found.contains { $0.hasPrefix("2: unknown key 'descripton'") })
        #expect(found.contains { $0.hasPrefix("5: unknown key 'timout' in 'exec'") })
        #expect(found.contains { $0.hasPrefix("6: ") && $0.contains("concurrency") })
        #expect(found.contains { $0.hasPrefix("7: ") && $0.contains("resumable") })
        #expect(found.contains { $0.hasPrefix("8: unknown key 'colour'") })
        #expect(registry.declarations.isEmpty)
    }

    @Test func aBadDocumentKeepsTheWholeFileOutAndSaysWhichSiblingsWentWithIt() {
        let (registry, root) = problems(["multi.yaml": """
            operation: acme_Good
            exec: {command: [./run.sh]}
            ---
            operation: acme_Bad
            exec: {command: [./missing.sh]}
            ---
            operation: acme_AlsoGood
            exec: {command: [./run.sh]}
            """])
        defer { FileSystem.removeTree(root) }
        #expect(registry.declarations.isEmpty)
        #expect(registry.problems.contains { $0.line == 5 && $0.detail.contains("missing.sh does not exist") })
        #expect(registry.problems.contains {
            $0.detail == "not loaded either: acme_Good, acme_AlsoGood, valid, but in a file with a bad document (a file applies whole or not at all)"
        })
    }

    @Test func relativeArgumentsAreFilesBesideTheDeclaration() throws {
        let (registry, root) = problems(["args.yaml": "operation: acme_Args\nexec: {command: [./run.sh, ./data.txt, ../up, plain, './${x}']}\n"])
        defer { FileSystem.removeTree(root) }
        guard case .exec(let spec)? = registry.declarations.first?.kind else {
            Issue.record("not loaded: \(registry.problems)")
            return
        }
        let directory = FileSystem.normalised(root + "/handlers.d")
        #expect(spec.command == [directory + "/run.sh", directory + "/data.txt", FileSystem.normalised(root + "/up"), "plain", "./${x}"])
    }

    @Test func aYAMLMistakeIsReportedAtItsOwnLine() {
        let (registry, root) = problems(["syntax.yaml": "operation: acme_X\nexec:\n  command: [./run.sh]\n  timeout 5s\n  env: {}\n"])
        defer { FileSystem.removeTree(root) }
        let problem = registry.problems.first
        #expect(problem?.line == 4, "\(String(describing: problem))")
        #expect(problem?.detail.contains("noticed at line 5") == true)
    }

    @Test func aProgramLosingItsExecutableBitIsNoticedWithoutTouchingTheDeclaration() async throws {
        let harness = try await Harness()
        defer { Task { await harness.close() } }
        let program = harness.script("hello.sh", "echo hello")
        harness.declare("hello.yaml", "operation: acme_Hello\nexec: {command: [\(program)]}\n")
        try await harness.startAgent()
        try await eventually("advertised") { await harness.advertised()?.arrayValue?.contains("acme_Hello") == true }
        chmod(program, 0o644)
        try await eventually("withdrawn once not executable") { await harness.advertised()?.arrayValue?.contains("acme_Hello") == false }
        #expect(harness.logs.contains("is not executable (chmod +x)"))
        chmod(program, 0o755)
        try await eventually("advertised again once executable") { await harness.advertised()?.arrayValue?.contains("acme_Hello") == true }
    }

    /// inotify, not a poll, notices a new declaration and a program's lost executable bit: the
    /// fallback check is an hour away.
    @Test func changesAreNoticedWithoutPolling() async throws {
        let harness = try await Harness()
        defer { Task { await harness.close() } }
        var tuning = Harness.tuning
        tuning.reloadInterval = .seconds(3600)
        try await harness.startAgent(harness.configuration, tuning: tuning, waitForRegistration: true)
        let program = harness.script("late.sh", "echo late")
        harness.declare("late.yaml", "operation: acme_Late\nexec: {command: [\(program)]}\n")
        try await eventually("advertised", within: 10) { await harness.advertised()?.arrayValue?.contains("acme_Late") == true }
        chmod(program, 0o644)
        try await eventually("withdrawn once not executable", within: 10) {
            await harness.advertised()?.arrayValue?.contains("acme_Late") == false
        }
    }

    @Test func directiveLinesStayOutOfTheLogAndAnInvalidOneIsAWarning() async throws {
        let harness = try await Harness()
        defer { Task { await harness.close() } }
        let program = harness.script("talk.sh", """
            echo "a plain line"
            echo '{"switchyard": "progress", "message": "half way"}'
            echo '{"switchyard": "result", "fragments": {"acme_Talk": {"said": true}}}'
            echo '{"switchyard": "inventory", "fragments": "not an object"}'
            echo '{"json": "that is no directive"}'
            echo "the end"
            """)
        harness.declare("talk.yaml", "operation: acme_Talk\nexec: {command: [\(program)]}\n")
        try await harness.startAgent()
        let id = try await harness.createOperation(["acme_Talk": [:]])
        #expect(try await harness.waitForEnd(id)["status"] == "SUCCESSFUL")
        let log = harness.log(id)
        #expect(log.contains("a plain line\n"))
        #expect(log.contains("the end\n"))
        #expect(log.contains(#"{"json": "that is no directive"}"#))
        #expect(!log.contains("half way"))
        #expect(!log.contains("acme_Talk"))
        #expect(log.contains("[switchyard: directive ignored:"))
        try await eventually("a warning in the agent log") { harness.logs.contains("plugin printed an invalid directive; ignored") }
    }

    @Test func aWrongPasswordBacksOffAndIsNotLoggedAtEveryAttempt() async throws {
        let harness = try await Harness()
        defer { Task { await harness.close() } }
        var configuration = harness.configuration
        let settings = harness.tenant.settings
        configuration.auth.mode = .basic(BasicCredentials(tenant: settings.tenantID, username: settings.username, password: "wrong"))
        try await harness.startAgent(configuration, waitForRegistration: false)
        try await eventually("the 20th attempt logged") { harness.logs.contains("attempt=20") }
        let lines = harness.logs.text.split(separator: "\n").filter { $0.contains("cannot register the device; retrying") }
        // 50 ms doubling to 400 ms: attempts 1 to 4 while it grows, then 10 and 20.
        #expect(lines.count == 6, "\(lines.count) lines")
        #expect(lines.allSatisfy { $0.contains("check auth.*") && $0.contains("backoffCeiling") })
    }
}
