import Foundation
import Testing
@testable import Switchyard

/// `switchyard-sandbox conformance` with good and deliberately broken plugins of each kind (issue 15 §3).
@Suite(.timeLimit(.minutes(2)))
struct ConformanceTests {
    static let fixtures = FileSystem.absolute("Tests/Fixtures/conformance")

    func scratch() -> String { NSTemporaryDirectory() + "conformance-\(UUID().uuidString)" }

    func failed(_ checks: [Conformance.Check]) -> [String] { checks.filter { !$0.passed }.map(\.name) }

    @Test func aGoodExecPluginPassesEveryCheck() async throws {
        let directory = scratch()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        guard case .success(let conformance) = Conformance.declaration(Self.fixtures + "/good-exec.yaml", timeout: .seconds(10), scratch: directory) else {
            Issue.record("the good declaration was refused"); return
        }
        let checks = await conformance.run()
        #expect(checks.count == 9)
        #expect(failed(checks) == [], "\(checks)")
        let sigterm = try #require(checks.first { $0.name.hasPrefix("SIGTERM") })
        #expect(sigterm.detail.contains("after SIGTERM"), "the check did send SIGTERM: \(sigterm.detail)")
    }

    @Test func aBrokenExecPluginFailsWithTheReasons() async throws {
        let directory = scratch()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        guard case .success(let conformance) = Conformance.declaration(Self.fixtures + "/broken-exec.yaml", timeout: .seconds(10), scratch: directory) else {
            Issue.record("the broken declaration was refused"); return
        }
        let checks = await conformance.run()
        let names = failed(checks)
        #expect(names.contains("every directive parses and is one the agent knows"), "\(checks)")
        #expect(names.contains { $0.hasPrefix("SIGTERM ends it") }, "\(checks)")
        #expect(names.contains("nothing left running, no output after it exited"), "\(checks)")
        let directives = try #require(checks.first { $0.name == "every directive parses and is one the agent knows" })
        #expect(directives.detail.contains("unknown directive \"progres\""))
        #expect(directives.detail.contains("result needs a \"fragments\" object"))
        let first = try #require(checks.first)
        #expect(first.detail.contains("exited with code 3 without a reason"), "\(first.detail)")
    }

    @Test func softwarePluginsGoodAndBroken() async throws {
        let directory = scratch()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let good = Conformance(program: [Self.fixtures + "/good-sm-plugin"], environment: ["SM_DB": directory + "/db"], kind: .smPlugin,
                               scratch: directory + "/good", module: ("acme", "2.0", nil))
        let goodChecks = await good.run()
        #expect(goodChecks.count == 10)
        #expect(failed(goodChecks) == [], "\(goodChecks)")
        let broken = Conformance(program: [Self.fixtures + "/broken-sm-plugin"], kind: .smPlugin, scratch: directory + "/broken",
                                 module: ("acme", "1.0", nil))
        let brokenChecks = await broken.run()
        #expect(failed(brokenChecks) == [
            "list: exit 0, one NAME<TAB>VERSION line per module",
            "update-list: exit 0 (supported) or 1 (the agent falls back to install/remove)",
            "list shows acme 1.0 after install", "an unknown command is a usage error (exit 1)", "a failed install exits 1 or 2 with a reason",
        ], "\(brokenChecks)")
    }

    @Test func firmwareInstallersGoodAndBroken() async throws {
        let directory = scratch()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let good = Conformance(program: [FileSystem.absolute("Plugins/firmware/ab-installer")], environment: ["FIRMWARE_ROOT": directory + "/slots"],
                               kind: .firmwareInstaller, scratch: directory + "/good")
        let goodChecks = await good.run()
        #expect(goodChecks.count == 8)
        #expect(failed(goodChecks) == [], "\(goodChecks)")
        let broken = Conformance(program: [Self.fixtures + "/broken-installer"], kind: .firmwareInstaller, scratch: directory + "/broken")
        #expect(failed(await broken.run()) == ["needs-reboot: 0 (restart) or 1 (no restart)", "verify after install",
                                                "install of a missing image fails with a reason"])
    }

    @Test func theCommandExitsNonZeroOnAnyFailure() async throws {
        func conformance(_ arguments: [String]) async throws -> (Int32, String) {
            let ran = try await runProgram(try builtBinary("switchyard-sandbox"), ["conformance"] + arguments)
            return (ran.status, ran.output)
        }
        let (good, goodOutput) = try await conformance([Self.fixtures + "/broken-installer", "--kind", "firmware-installer"])
        #expect(good == 1)
        #expect(goodOutput.contains("FAIL  needs-reboot: 0 (restart) or 1 (no restart): exit 5"), "\(goodOutput)")
        #expect(goodOutput.hasSuffix("5 of 8 checks passed\n"), "\(goodOutput)")
        let (ok, okOutput) = try await conformance([FileSystem.absolute("Plugins/firmware/ab-installer"), "--kind", "firmware-installer",
                                              "--env", "FIRMWARE_ROOT=\(scratch())"])
        #expect(ok == 0, "\(okOutput)")
    }
}
