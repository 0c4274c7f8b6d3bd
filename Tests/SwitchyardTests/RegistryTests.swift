import Foundation
import BuiltinHandlers
import HandlerKit
import JSONSupport
import Sandbox
import Testing
@testable import Switchyard

struct RegistryTests {
    func directory(_ files: [String: String], scripts: [String] = ["run.sh"]) -> String {
        let dir = temporaryDirectory()
        for script in scripts { write("#!/bin/sh\nexit 0\n", to: dir + "/bin/" + script, mode: 0o755) }
        for (name, text) in files { write(text, to: dir + "/handlers.d/" + name) }
        return dir
    }

    @Test func validDeclarationsAreAdvertisedSorted() {
        let dir = directory([
            "b.yaml": "operation: c8y_Message\nswift: Message\n",
            "a.yaml": "operation: acme_Calibrate\nexec:\n  command: [../bin/run.sh, '${acme_Calibrate.level}']\n  timeout: 5s\nconcurrency: 2\n",
        ])
        defer { FileSystem.removeTree(dir) }
        let registry = Registry.load(directory: dir + "/handlers.d", catalog: builtinHandlers)
        #expect(registry.problems.isEmpty)
        #expect(registry.supportedOperations == ["acme_Calibrate", "c8y_Message"])
        let calibrate = registry.declaration(for: "acme_Calibrate")
        #expect(calibrate?.timeout == .seconds(5))
        #expect(calibrate?.concurrency == 2)
        guard case .exec(let spec)? = calibrate?.kind else { Issue.record("not exec"); return }
        #expect(spec.command[0] == dir + "/bin/run.sh")
    }

    @Test func brokenFileIsReportedWithFileAndLineAndOthersStayActive() {
        let dir = directory([
            "good.yaml": "operation: c8y_Message\nswift: Message\n",
            "broken.yaml": "operation: acme_X\nexec:\n  command: [../bin/run.sh\n  timeout: 5s\n",
            "typo.yaml": "operation: acme_Y\nexec:\n  comand: [../bin/run.sh]\n",
        ])
        defer { FileSystem.removeTree(dir) }
        let registry = Registry.load(directory: dir + "/handlers.d", catalog: builtinHandlers)
        #expect(registry.supportedOperations == ["c8y_Message"])
        // typo.yaml: the unknown key, and (because of it) the missing command; broken.yaml: its YAML.
        #expect(registry.problems.count == 3)
        #expect(registry.problems.contains { $0.file.hasSuffix("typo.yaml") && $0.detail.contains("'exec.command' must be a non-empty list") })
        let broken = registry.problems.first { $0.file.hasSuffix("broken.yaml") }
        #expect(broken?.line != nil)
        #expect(broken?.detail.contains("invalid YAML") == true)
        let typo = registry.problems.first { $0.file.hasSuffix("typo.yaml") }
        #expect(typo?.line == 3)
        #expect(typo?.detail.contains("unknown key 'comand'") == true)
    }

    @Test func twoFilesClaimingOneFragmentAreBothRejectedNamingBoth() {
        let dir = directory([
            "one.yaml": "operation: c8y_Message\nswift: Message\n",
            "two.yaml": "operation: c8y_Message\nexec:\n  command: [../bin/run.sh]\n",
        ])
        defer { FileSystem.removeTree(dir) }
        let registry = Registry.load(directory: dir + "/handlers.d", catalog: builtinHandlers)
        #expect(registry.supportedOperations.isEmpty)
        #expect(registry.problems.count == 2)
        #expect(registry.problems.allSatisfy { $0.detail.contains("one.yaml") && $0.detail.contains("two.yaml") })
    }

    @Test(arguments: [
        ("operation: acme_A\n", "needs 'swift'"),
        ("operation: acme_A\nswift: Nope\n", "no compiled handler named 'Nope'"),
        ("operation: acme_A\nexec:\n  command: [../bin/missing.sh]\n", "does not exist"),
        ("operation: acme_A\nexec:\n  command: []\n", "non-empty list"),
        ("operation: 'not a name'\nswift: Message\n", "is not a fragment name"),
        ("operation: acme_A\nswift: Message\noptions: {file: [1]}\n", "options.file must be text, found [1]"),
        ("operation: acme_A\nexec: {command: [../bin/run.sh, '${oops']}\n", "unclosed"),
        ("operation: acme_A\nexec: {command: [../bin/run.sh]}\ntimeout: forever\n", "positive duration"),
        ("- just\n- a list\n", "must be a mapping"),
    ])
    func invalidDeclarationsSayWhy(text: String, expected: String) {
        let dir = directory(["x.yaml": text])
        defer { FileSystem.removeTree(dir) }
        let registry = Registry.load(directory: dir + "/handlers.d", catalog: builtinHandlers)
        #expect(registry.declarations.isEmpty)
        #expect(registry.problems.first?.detail.contains(expected) == true, "\(registry.problems)")
        #expect(registry.problems.first?.file.hasSuffix("x.yaml") == true)
    }

    @Test func missingDirectoryIsAProblemNotACrash() {
        let registry = Registry.load(directory: "/nonexistent/handlers.d", catalog: builtinHandlers)
        #expect(registry.declarations.isEmpty)
        #expect(registry.problems.first?.detail.contains("does not exist") == true)
    }

    @Test func templatesAreSubstitutedAsOneArgument() {
        let operation: JSONValue = ["c8y_Command": ["text": "; rm -rf / \"quoted\"\nnext"], "n": 3]
        #expect(Template.render("${c8y_Command.text}", with: operation) == "; rm -rf / \"quoted\"\nnext")
        #expect(Template.render("level=${n}", with: operation) == "level=3")
        #expect(Template.render("${missing.path}", with: operation) == "")
        #expect(Template.isWellFormed("a ${b} c"))
        #expect(!Template.isWellFormed("${}"))
    }

    @Test func theRepositoryHandlersAreValid() {
        let registry = Registry.load(directory: FileSystem.absolute("handlers.d"), catalog: builtinHandlers)
        #expect(registry.problems.isEmpty, "\(registry.problems)")
        #expect(!registry.declarations.isEmpty)
    }
}

struct DirectiveTests {
    func lines(_ chunks: [String], limit: Int = 64) -> [(String, Bool)] {
        var splitter = LineSplitter(limit: limit)
        var out: [(String, Bool)] = []
        for chunk in chunks {
            Array(chunk.utf8).withUnsafeBytes { splitter.feed($0) { out.append((String(decoding: $0, as: UTF8.self), $1)) } }
        }
        splitter.finish { out.append((String(decoding: $0, as: UTF8.self), $1)) }
        return out
    }

    @Test func onlyLinesStartingWithABraceAreCandidates() {
        let out = lines(["log line\n  {\"a\"", ":1}\nmore log\n{\"b\":2}"])
        #expect(out.map(\.0) == ["{\"a\":1}", "{\"b\":2}"])
        #expect(out.allSatisfy { $0.1 })
    }

    @Test func overlongLinesAreCutAndMarked() {
        let out = lines(["{" + String(repeating: "x", count: 100) + "\n{}\n"], limit: 16)
        #expect(out.count == 2)
        #expect(out[0].0.count == 16 && out[0].1 == false)
        #expect(out[1] == ("{}", true))
    }

    @Test func parsing() {
        #expect(Directive.parse(Array("plain text".utf8)) == .log)
        #expect(Directive.parse(Array("{\"other\":1}".utf8)) == .log)
        #expect(Directive.parse(Array("{\"switchyard\":\"restart\"}".utf8)) == .directive(.restart))
        #expect(Directive.parse(Array("{\"switchyard\":\"progress\",\"message\":\"50%\"}".utf8)) == .directive(.progress("50%")))
        #expect(Directive.parse(Array("{\"switchyard\":\"alarm\",\"type\":\"t\",\"text\":\"x\",\"severity\":\"HUGE\"}".utf8)) != .directive(.restart))
        if case .invalid(let why) = Directive.parse(Array("{\"switchyard\":\"teleport\"}".utf8)) {
            #expect(why.contains("unknown directive"))
        } else {
            Issue.record("an unknown directive is reported as invalid")
        }
        if case .invalid = Directive.parse(Array("{\"switchyard\":\"result\",\"fragments\":[1]}".utf8)) {} else {
            Issue.record("result with a non-object is invalid")
        }
    }
}

/// Mistakes a device maker makes when writing a declaration, each answered at `validate` time with
/// what to do, instead of an obscure failure at the first operation.
struct DeclarationMistakeTests {
    func problems(_ files: [String: String], scripts: [String: (text: String, mode: Int)] = [:]) -> [String] {
        let dir = temporaryDirectory()
        defer { FileSystem.removeTree(dir) }
        for (name, script) in scripts { write(script.text, to: dir + "/handlers.d/" + name, mode: script.mode) }
        for (name, text) in files { write(text, to: dir + "/handlers.d/" + name) }
        return Registry.load(directory: dir + "/handlers.d", catalog: builtinHandlers).problems.map(\.description)
    }

    @Test func aBareProgramNameIsLookedUpInThePluginsPath() {
        #expect(problems(["sh.yaml": "operation: acme_Sh\nexec:\n  command: [sh, -c, 'exit 0']\n"]).isEmpty)
        let missing = problems(["missing.yaml": "operation: acme_X\nexec:\n  command: [no-such-program-here]\n"])
        #expect(missing.first?.contains("is not in the plugins' PATH") == true, "\(missing)")
        #expect(missing.first?.contains("./no-such-program-here") == true)
    }

    @Test func aScriptWithoutAShebangIsNamed() {
        let found = problems(["x.yaml": "operation: acme_X\nexec:\n  command: [./run]\n"],
                             scripts: ["run": ("echo no shebang\n", 0o755)])
        #expect(found.first?.contains("neither a program nor a script with a #! line") == true, "\(found)")
    }

    @Test func windowsLineEndingsAreNamed() {
        let found = problems(["x.yaml": "operation: acme_X\nexec:\n  command: [./run]\n"],
                             scripts: ["run": ("#!/bin/sh\r\necho hi\r\n", 0o755)])
        #expect(found.first?.contains("Windows line endings (CRLF)") == true, "\(found)")
    }

    @Test func aTabInTheIndentationIsNamed() {
        let found = problems(["x.yaml": "operation: acme_X\nexec:\n\tcommand: [/bin/true]\n"])
        #expect(found.first?.contains("tab characters are not allowed for indentation") == true, "\(found)")
    }

    /// `handlers list` (the real binary) exits 1 when a file is rejected, 0 when all are valid.
    @Test func handlersListFailsWhenAFileIsRejected() throws {
        let dir = temporaryDirectory()
        defer { FileSystem.removeTree(dir) }
        write("operation: c8y_Message\nswift: Message\n", to: dir + "/handlers.d/good.yaml")
        func list() throws -> Int32 {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: try switchyardBinary())
            process.arguments = ["handlers", "list", "--dir", dir + "/handlers.d"]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try launch(process)
            process.waitUntilExit()
            return process.terminationStatus
        }
        #expect(try list() == 0)
        write("operation: [\n", to: dir + "/handlers.d/bad.yaml")
        #expect(try list() == 1)
    }
}
