import Foundation
import HandlerKit
import JSONSupport
import Sandbox
import Testing
@testable import Switchyard
@testable import SoftwareHandler

/// thin-edge.io's software-management plugin API (docs/src/references/software-management-plugin-api.md),
/// exercised verb by verb and exit code by exit code with fixture plugins written the way real ones
/// are: POSIX sh that records each call it gets.
// One at a time: each test runs agents or real binaries, and the rest of the suite runs meanwhile.
@Suite(.closesHarnesses, .serialized, .timeLimit(.minutes(3)))
struct SoftwarePluginCompatibilityTests {
    /// A plugin named `type` in `root/sm-plugins`, appending each call's argv (and update-list's stdin)
    /// to `root/calls`; `body` is a `case "$1"` arm list that runs before the default (exit 0).
    @discardableResult
    static func plugin(_ harness: Harness, _ type: String, _ body: String = "") -> String {
        let path = harness.root + "/sm-plugins/" + type
        write("""
            #!/bin/sh
            echo "\(type) $*" >> "\(harness.root)/calls"
            case "$1" in
            update-list) while IFS="$(printf '\\t')" read -r a n v f; do echo "  $a|$n|$v|$f" >> "\(harness.root)/calls"; done ;;
            esac
            \(body)
            exit 0

            """, to: path, mode: 0o755)
        return path
    }

    static func declare(_ harness: Harness, options: String = "") {
        harness.declare("software.yaml", """
            operation: c8y_SoftwareUpdate
            fragments: [c8y_SoftwareUpdate, c8y_SoftwareList]
            swift: Software
            options: {pluginsDirectory: \(harness.root)/sm-plugins, timeout: 30\(options)}
            """)
    }

    static func calls(_ harness: Harness) -> [String] {
        ((try? String(contentsOfFile: harness.root + "/calls", encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    func module(_ name: String, _ version: String = "", type: String = "", action: String = "install", url: String = "") -> JSONValue {
        ["name": .string(name), "version": .string(version), "softwareType": .string(type), "action": .string(action), "url": .string(url)]
    }

    @Test func update_listAnsweringOneFallsBackToEachModuleInRequestOrderThenFinalize() async throws {
        let harness = try await Harness()
        defer { Task { await harness.close() } }
        Self.plugin(harness, "pkg", #"[ "$1" = update-list ] && exit 1"#)
        Self.declare(harness)
        try await harness.startAgent()
        let id = try await harness.createOperation(["c8y_SoftwareUpdate": [
            module("zeta", "2.0", type: "pkg"), module("alpha", type: "pkg", action: "delete"), module("mid", "1.0::pkg"),
        ]])
        #expect(try await harness.waitForEnd(id)["status"] == "SUCCESSFUL", "\(harness.log(id))")
        let run = Self.calls(harness).drop { $0 != "pkg prepare" }.prefix { $0 != "pkg list" }
        #expect(Array(run) == [
            "pkg prepare", "pkg update-list", "  install|zeta|2.0|", "  remove|alpha||", "  install|mid|1.0|",
            "pkg install zeta --module-version 2.0", "pkg remove alpha", "pkg install mid --module-version 1.0", "pkg finalize",
        ])
        // The operation log: a header and an exit status for each call; the list after it counted, not copied.
        let log = harness.log(id)
        #expect(log.contains("[switchyard: $ \(harness.root)/sm-plugins/pkg prepare]"))
        #expect(log.contains("[switchyard: exit status 1, after"))
        #expect(log.contains("lines of standard output, read by the handler, not copied here]"))
    }

    @Test func everyModuleAndTypeIsAttemptedAndEachErrorListed() async throws {
        let harness = try await Harness()
        defer { Task { await harness.close() } }
        Self.plugin(harness, "one", """
            [ "$1" = update-list ] && exit 1
            [ "$1" = install ] && [ "$2" = bad ] && { echo "bad is broken" >&2; exit 2; }
            [ "$1" = install ] && [ "$2" = later ] && { echo "network down" >&2; exit 3; }
            [ "$1" = remove ] && [ "$2" = odd ] && { echo "no such option" >&2; exit 1; }
            """)
        Self.plugin(harness, "two", #"[ "$1" = prepare ] && { echo "cannot lock" >&2; exit 2; }"#)
        Self.plugin(harness, "three")
        Self.declare(harness)
        try await harness.startAgent()
        let missing = harness.server.url + "/inventory/binaries/404"
        let id = try await harness.createOperation(["c8y_SoftwareUpdate": [
            module("bad", type: "one"), module("good", type: "one"), module("later", type: "one"), module("odd", type: "one", action: "delete"),
            module("x", type: "two"), module("fetched", "1", type: "three", url: missing), module("fine", type: "three"),
        ]])
        let operation = try await harness.waitForEnd(id)
        #expect(operation["status"] == "FAILED")
        let reason = operation["failureReason"]?.stringValue ?? ""
        #expect(reason.hasPrefix("5 errors: "))
        #expect(reason.contains("one remove odd: usage error (exit 1): no such option"))
        #expect(reason.contains("one install bad: failed (exit 2): bad is broken"))
        #expect(reason.contains("one install later: failed, may succeed later (exit 3): network down"))
        #expect(reason.contains("two prepare failed: failed (exit 2): cannot lock"))
        #expect(reason.contains("three install fetched 1: download failed"))
        let calls = Self.calls(harness)
        #expect(calls.contains("one install good"))
        #expect(calls.contains("one finalize"))
        #expect(!calls.contains("two finalize"), "finalize without a successful prepare")
        #expect(calls.contains("  install|fine||"), "the module after a failed download was skipped")
        #expect(calls.contains("three finalize"), "finalize after a download failure")
    }

    @Test func aPluginWhoseListFailsIsNotAdvertisedAndRaisesAnAlarmUntilItWorks() async throws {
        let harness = try await Harness()
        defer { Task { await harness.close() } }
        Self.plugin(harness, "good", #"[ "$1" = list ] && printf 'a\t1\n'"#)
        let broken = Self.plugin(harness, "broken", #"[ "$1" = list ] && { echo "database locked" >&2; exit 2; }"#)
        Self.declare(harness)
        try await harness.startAgent()
        let deviceID = try #require(await harness.deviceID())
        let alarm = "switchyard_SoftwarePluginList_broken"
        try await eventually("only the working type advertised") {
            await harness.tenant.managedObject(deviceID)?["c8y_SupportedSoftwareTypes"] == ["good"]
        }
        try await eventually("an alarm names the plugin") {
            await harness.tenant.alarmList(source: deviceID, status: "ACTIVE", type: alarm).first?["text"]?.stringValue?
                .contains("\(broken) failed its list command") == true
        }
        #expect(harness.logs.contains("software plugins whose list failed"))

        Self.plugin(harness, "broken", #"[ "$1" = list ] && printf 'b\t2\n'"#)
        let id = try await harness.createOperation(["c8y_SoftwareUpdate": [module("a", "1", type: "good")]])
        #expect(try await harness.waitForEnd(id)["status"] == "SUCCESSFUL")
        try await eventually("advertised again once it lists") {
            await harness.tenant.managedObject(deviceID)?["c8y_SupportedSoftwareTypes"] == ["broken", "good"]
        }
        try await eventually("its alarm cleared") {
            await harness.tenant.alarmList(source: deviceID, status: "ACTIVE", type: alarm).isEmpty
        }
    }

    @Test func reportedModulesAreCappedAndFilteredPerType() async throws {
        let harness = try await Harness()
        defer { Task { await harness.close() } }
        Self.plugin(harness, "big", #"[ "$1" = list ] && { i=0; while [ $i -lt 3001 ]; do printf 'm%04d\t1.%d\n' $i $i; i=$((i+1)); done; }"#)
        Self.plugin(harness, "deb", #"[ "$1" = list ] && printf 'libc6\t2.36\nlibfoo\t1\nlibcurl4\t7\nvim\t9\n"quoted\tname"\t"1.0 ""beta"""\r\nnoversion\n'"#)
        Self.declare(harness, options: ", maxPackages: 1000, exclude: '^lib', include: '^libc'")
        try await harness.startAgent()
        let deviceID = try #require(await harness.deviceID())
        try await eventually("the list reported") { await harness.tenant.managedObject(deviceID)?["c8y_SoftwareList"] != nil }
        let list = await harness.tenant.managedObject(deviceID)?["c8y_SoftwareList"]?.arrayValue ?? []
        #expect(list.filter { $0["softwareType"] == "big" }.count == 1000)
        #expect(list.filter { $0["softwareType"] == "deb" }.compactMap { $0["name"]?.stringValue }
                == ["libc6", "libcurl4", "vim", "quoted\tname", "noversion"])
        #expect(list.first { $0["name"] == "quoted\tname" }?["version"] == "1.0 \"beta\"")
        #expect(list.first { $0["name"] == "noversion" }?["version"] == "")
        let map = await harness.tenant.managedObject(deviceID)?["c8y_Software"]?.objectValue ?? [:]
        #expect(map.count == 1005)
    }

    @Test func twoVersionsOfOneNameGetTwoFiles() async throws {
        let harness = try await Harness()
        defer { Task { await harness.close() } }
        Self.plugin(harness, "pkg", #"[ "$1" = update-list ] && exit 1; [ "$1" = install ] && cat "$6" >> "\#(harness.root)/contents""#)
        Self.declare(harness)
        try await harness.startAgent()
        let one = await harness.tenant.addBinary(Array("version one\n".utf8))
        let two = await harness.tenant.addBinary(Array("version two\n".utf8))
        let id = try await harness.createOperation(["c8y_SoftwareUpdate": [
            module("same", "1", type: "pkg", url: harness.server.url + "/inventory/binaries/\(one)"),
            module("same", "2", type: "pkg", url: harness.server.url + "/inventory/binaries/\(two)"),
        ]])
        #expect(try await harness.waitForEnd(id)["status"] == "SUCCESSFUL", "\(harness.log(id))")
        #expect(try String(contentsOfFile: harness.root + "/contents", encoding: .utf8) == "version one\nversion two\n")
    }

    @Test func aPluginDownloadsThroughTheProxy() async throws {
        let harness = try await Harness()
        defer { Task { await harness.close() } }
        let binary = await harness.tenant.addBinary(Array("from the proxy\n".utf8))
        Self.plugin(harness, "fetcher", """
            [ "$1" = update-list ] && exit 1
            [ "$1" = install ] && curl -sf -H "X-Switchyard-Secret: $SWITCHYARD_PROXY_SECRET" -o "\(harness.root)/fetched" "$SWITCHYARD_PROXY_URL/inventory/binaries/$2"
            """)
        Self.declare(harness)
        try await harness.startAgent()
        let id = try await harness.createOperation(["c8y_SoftwareUpdate": [module(binary, type: "fetcher")]])
        #expect(try await harness.waitForEnd(id)["status"] == "SUCCESSFUL", "\(harness.log(id))")
        #expect(try String(contentsOfFile: harness.root + "/fetched", encoding: .utf8) == "from the proxy\n")
    }

    @Test func pluginsInheritTheAgentsEnvironmentWithoutItsSecrets() async throws {
        let harness = try await Harness()
        defer { Task { await harness.close() } }
        let tools = harness.root + "/tools"
        write("#!/bin/sh\necho helper-ran\n", to: tools + "/acme-helper", mode: 0o755)
        Self.plugin(harness, "envy", """
            [ "$1" = update-list ] && exit 1
            [ "$1" = install ] && { env > "\(harness.root)/env"; acme-helper >> "\(harness.root)/env"; mkdir -p "$HOME/.cache"; }
            """)
        Self.declare(harness)
        let home = harness.root + "/home"
        let agent = try AgentProcess(harness, environment: [
            "PATH": tools + ":/usr/bin:/bin", "HOME": home, "ACME_REGISTRY": "registry.example.com",
            "NOTIFY_SOCKET": "/nonexistent", "JOURNAL_STREAM": "1:2",
        ])
        defer { agent.stop() }
        try await eventually("registered") { await harness.deviceID() != nil }
        let id = try await harness.createOperation(["c8y_SoftwareUpdate": [module("x", type: "envy")]])
        #expect(try await harness.waitForEnd(id)["status"] == "SUCCESSFUL")
        let env = try String(contentsOfFile: harness.root + "/env", encoding: .utf8)
        #expect(env.contains("ACME_REGISTRY=registry.example.com"))
        #expect(env.contains("HOME=\(home)\n"))
        #expect(env.contains("PATH=\(tools):/usr/bin:/bin\n"))
        #expect(env.contains("helper-ran"))
        #expect(FileManager.default.fileExists(atPath: home + "/.cache"))
        #expect(env.contains("SWITCHYARD_PROXY_URL="))
        for secret in ["SWITCHYARD_AUTH_PASSWORD", "SWITCHYARD_AUTH_USERNAME", "SWITCHYARD_C8Y_URL=", "NOTIFY_SOCKET", "JOURNAL_STREAM"] {
            #expect(!env.contains(secret), "\(secret) reached the plugin")
        }
    }
}

/// The parts of the plugin API that are pure text.
@Suite(.closesHarnesses)
struct SoftwarePluginParsingTests {
    let handler = try! SoftwareHandler(options: ["pluginsDirectory": "/nonexistent"])

    func parse(_ items: [JSONValue]) throws -> [SoftwareHandler.Action] {
        let operation = HandlerKit.Operation(id: "1", deviceId: "2", externalId: nil, fragment: "c8y_SoftwareUpdate",
                                  json: ["c8y_SoftwareUpdate": .array(items)])
        return try handler.parse(operation, plugins: ["apt"]).get()
    }

    @Test func theVersionIsSplitAtTheLastDoubleColonOnlyWithoutASoftwareType() throws {
        let actions = try parse([
            ["name": "a", "version": "1:2.0::beta::apt"],
            ["name": "b", "version": "3::x", "softwareType": "apt"],
            ["name": "c", "version": "4.0"],
        ])
        #expect(actions.map(\.version) == ["1:2.0::beta", "3::x", "4.0"])
        #expect(actions.map(\.type) == ["apt", "apt", "apt"])
    }

    @Test func listOutputIsReadAsTheAPIDefinesIt() {
        let parsed = SoftwareHandler.parseList("a\t1.0\nb\n\"c d\"\t\"2 \"\"x\"\"\"\r\n\n\te\nf\t\tg\n")
        #expect(parsed.map(\.name) == ["a", "b", "c d", "f"])
        #expect(parsed.map(\.version) == ["1.0", nil, "2 \"x\"", nil])
    }

    @Test func badFiltersAreRefusedWithTheOptionNamed() {
        #expect(throws: HandlerOptionsError.self) { try SoftwareHandler(options: ["exclude": "(unclosed"]) }
        #expect(throws: HandlerOptionsError.self) { try SoftwareHandler(options: ["maxPackages": 0]) }
    }
}
