import Foundation
import JSONSupport
import Sandbox
import Testing
@testable import Switchyard

/// The real `switchyard` binary as a child process against the harness's sandbox, configured
/// through its environment as an operator would, killed with SIGKILL where a test says so.
final class AgentProcess: @unchecked Sendable {
    let process = Process()
    let logFile: String

    init(_ harness: Harness, name: String = "agent", environment extra: [String: String] = [:]) throws {
        let settings = harness.tenant.settings
        logFile = harness.root + "/\(name)-\(UUID().uuidString.prefix(6)).log"
        FileManager.default.createFile(atPath: logFile, contents: nil)
        process.executableURL = URL(fileURLWithPath: try switchyardBinary())
        process.arguments = ["run"]
        process.environment = [
            "PATH": "/usr/bin:/bin", "SWITCHYARD_C8Y_URL": harness.server.url,
            "SWITCHYARD_DEVICE_EXTERNAL_ID": harness.externalId, "SWITCHYARD_AUTH_TENANT": settings.tenantID,
            "SWITCHYARD_AUTH_USERNAME": settings.username, "SWITCHYARD_AUTH_PASSWORD": settings.password,
            "SWITCHYARD_HANDLERS": harness.handlers, "SWITCHYARD_STATE_DIR": harness.state, "SWITCHYARD_PROXY_PORT": "0",
        ].merging(extra) { $1 }
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logFile))
        process.standardOutput = log
        process.standardError = log
        try launch(process)
    }

    var log: String { (try? String(contentsOfFile: logFile, encoding: .utf8)) ?? "" }

    /// SIGKILL: no shutdown, no flush, no goodbye.
    func kill9() {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    /// SIGTERM, without waiting (for `defer`): a graceful shutdown may take seconds, and a wait here
    /// would hold a thread of the cooperative pool that every in-process agent of the tests needs.
    func stop() {
        if process.isRunning { process.terminate() }
    }

    /// SIGTERM, then waits for the exit without holding a thread of the cooperative pool.
    func stopAndWait() async {
        guard process.isRunning else { return }
        process.terminate()
        while process.isRunning { try? await Task.sleep(for: .milliseconds(20)) }
    }
}

/// Whether the journal holds the operation's `finished` record (written once its final status is in
/// the outbox): from then on a kill must not lose or change the final status.
func finishJournalled(_ id: String, _ harness: Harness) -> Bool {
    let text = (try? String(contentsOfFile: harness.state + "/journal.jsonl", encoding: .utf8)) ?? ""
    return text.split(separator: "\n").contains { $0.contains("\"id\":\"\(id)\"") && $0.contains("\"stage\":\"finished\"") }
}

/// How many requests the outbox file holds that were neither delivered nor set aside.
func outboxPending(_ state: String) -> Int {
    let records = (try? RecordLog.read(state + "/outbox/outbox.jsonl").records) ?? []
    var pending = Set<Int64>()
    for record in records {
        if let done = record["done"]?.intValue { pending.remove(done) } else if let sequence = record["sequence"]?.intValue { pending.insert(sequence) }
    }
    return pending.count
}

/// Whether a process runs (and is not a zombie waiting for its parent).
func isRunning(_ pid: pid_t) -> Bool {
    guard kill(pid, 0) == 0 else { return false }
    let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
    guard let close = stat.lastIndex(of: ")") else { return false }
    return !stat[stat.index(after: close)...].hasPrefix(" Z")
}

/// kill -9 of the real binary at the points of an operation's life where a crash loses most.
@Suite(.closesHarnesses, .timeLimit(.minutes(2)))
struct ProcessFaultTests {
    /// Short long-polls: the sandbox stops only when the killed agent's held poll has ended.
    static var settings: Tenant.Settings {
        var settings = Tenant.Settings()
        settings.holdTime = .seconds(2)
        return settings
    }

    /// A harness whose handlers.d declares `operation` as the exec plugin `body` (a shell script), and
    /// the real agent started on it and registered.
    func start(_ operation: String, plugin body: String) async throws -> (Harness, AgentProcess) {
        let harness = try await Harness(settings: Self.settings)
        let plugin = harness.script(operation + ".sh", body)
        harness.declare(operation + ".yaml", "operation: \(operation)\nexec:\n  command: [\(plugin), '${\(operation).kind}']\n  gracePeriod: 1s\n")
        let agent = try AgentProcess(harness)
        try await eventually("registered") { await harness.advertised() != nil }
        return (harness, agent)
    }

    /// kill -9, then the next agent on the same state.
    func killAndRestart(_ agent: AgentProcess, _ harness: Harness, between: () async -> Void = {}) async throws -> AgentProcess {
        agent.kill9()
        await between()
        return try AgentProcess(harness, name: "agent-again")
    }

    func refuseStatusUpdates(_ harness: Harness) async {
        await harness.tenant.refuse(next: 1_000_000, status: 503, method: "PUT", pathPrefix: "/devicecontrol/operations/")
    }

    /// Killed while its plugin runs: the plugin is stopped by the next start before the operation is
    /// settled (FAILED, naming the restart), rather than running on unsupervised.
    @Test func aPluginLeftRunningByAKilledAgentIsStoppedAtTheNextStart() async throws {
        let scratch = temporaryDirectory()
        defer { FileSystem.removeTree(scratch) }
        let pidFile = scratch + "/plugin.pid"
        var (harness, agent) = try await start("acme_Long", plugin: "echo $$ > \(pidFile)\nsleep 300")
        let id = try await harness.createOperation(["acme_Long": [:]])
        try await eventually("the plugin started") { FileManager.default.fileExists(atPath: pidFile) }
        let pid = try #require(pid_t((try String(contentsOfFile: pidFile, encoding: .utf8)).trimmingCharacters(in: .whitespacesAndNewlines)))
        agent = try await killAndRestart(agent, harness) {
            #expect(isRunning(pid), "the plugin outlives the killed agent (as any child would)")
        }
        defer { agent.stop() }
        let ended = try await harness.waitForEnd(id)
        #expect(ended["status"] == "FAILED")
        #expect(ended["failureReason"]?.stringValue?.contains("restarted") == true)
        try await eventually("the plugin stopped", within: 10) { !isRunning(pid) }
        #expect(agent.log.contains("stopped the plugin the previous run left running"))
        await agent.stopAndWait()
        await harness.close()
    }

    /// Killed after the handler finished but before SUCCESSFUL reached the platform (every status
    /// update refused meanwhile): the next start sends it, once, and does not run the handler again.
    @Test func killedBeforeTheFinalStatusIsDeliveredItIsSentOnceByTheNextStart() async throws {
        let scratch = temporaryDirectory()
        defer { FileSystem.removeTree(scratch) }
        let runs = scratch + "/runs"
        var (harness, agent) = try await start("acme_Count", plugin: "echo run >> \(runs)")
        await refuseStatusUpdates(harness)
        let id = try await harness.createOperation(["acme_Count": [:]])
        try await eventually("the handler ran") { FileManager.default.fileExists(atPath: runs) }
        try await eventually("the final status journalled") { finishJournalled(id, harness) }
        agent = try await killAndRestart(agent, harness) { await harness.tenant.refuse(next: 0) }
        defer { agent.stop() }
        #expect(try await harness.waitForEnd(id)["status"] == "SUCCESSFUL")
        #expect(try String(contentsOfFile: runs, encoding: .utf8) == "run\n")
        #expect(await harness.statuses(id).filter { $0 == "SUCCESSFUL" }.count == 1)
        await agent.stopAndWait()
        await harness.close()
    }

    /// Killed with EXECUTING still queued (the tenant refusing status updates) while the handler runs:
    /// the next start sends EXECUTING, then FAILED naming the restart, in that order.
    @Test func killedWithExecutingStillQueuedTheNextStartSendsItThenTheEnd() async throws {
        let scratch = temporaryDirectory()
        defer { FileSystem.removeTree(scratch) }
        let pidFile = scratch + "/plugin.pid"
        var (harness, agent) = try await start("acme_Long", plugin: "echo $$ > \(pidFile)\nsleep 300")
        await refuseStatusUpdates(harness)
        let id = try await harness.createOperation(["acme_Long": [:]])
        try await eventually("the plugin started") { FileManager.default.fileExists(atPath: pidFile) }
        agent = try await killAndRestart(agent, harness) {
            await harness.tenant.refuse(next: 0)
            #expect(await harness.tenant.operation(id)?["status"] == "PENDING")
        }
        defer { agent.stop() }
        let ended = try await harness.waitForEnd(id)
        #expect(ended["status"] == "FAILED")
        #expect(await harness.statuses(id) == ["PENDING", "EXECUTING", "FAILED"])
        await agent.stopAndWait()
        await harness.close()
    }

    /// Killed while an operation was accepted (journalled) but waiting for a slot: the next start
    /// runs it, once; the one that was running is FAILED naming the restart.
    @Test func killedWithAnAcceptedOperationWaitingItRunsAtTheNextStart() async throws {
        let scratch = temporaryDirectory()
        defer { FileSystem.removeTree(scratch) }
        let runs = scratch + "/runs"
        var (harness, agent) = try await start("acme_One", plugin: "echo \"$SWITCHYARD_OPERATION_ID\" >> \(runs)\n[ \"$1\" = long ] && sleep 300\nexit 0")
        let long = try await harness.createOperation(["acme_One": ["kind": "long"]])
        try await eventually("the long one runs") { FileManager.default.fileExists(atPath: runs) }
        let waiting = try await harness.createOperation(["acme_One": ["kind": "short"]])
        try await eventually("the second accepted") { agent.log.contains("operation=\(waiting)") && agent.log.contains("operation received") }
        agent = try await killAndRestart(agent, harness)
        defer { agent.stop() }
        #expect(try await harness.waitForEnd(waiting)["status"] == "SUCCESSFUL")
        #expect(try await harness.waitForEnd(long)["status"] == "FAILED")
        let ran = try String(contentsOfFile: runs, encoding: .utf8).split(separator: "\n").map(String.init)
        #expect(ran == [long, waiting])
        await agent.stopAndWait()
        await harness.close()
    }

    /// Killed while the final PUT is in flight (the tenant holds it, then processes it): the next
    /// start sends it again; the operation ends SUCCESSFUL and its handler ran once.
    @Test func killedDuringTheFinalStatusUpdateTheOperationEndsOnce() async throws {
        let scratch = temporaryDirectory()
        defer { FileSystem.removeTree(scratch) }
        let runs = scratch + "/runs"
        var (harness, agent) = try await start("acme_Count", plugin: "sleep 0.2\necho run >> \(runs)")
        let id = try await harness.createOperation(["acme_Count": [:]])
        try await eventually("EXECUTING") { await harness.tenant.operation(id)?["status"] == "EXECUTING" }
        await harness.tenant.delay(next: 1, by: .seconds(1), method: "PUT", pathPrefix: "/devicecontrol/operations/")
        try await eventually("the final status journalled") { finishJournalled(id, harness) }
        agent = try await killAndRestart(agent, harness)
        defer { agent.stop() }
        #expect(try await harness.waitForEnd(id)["status"] == "SUCCESSFUL")
        try await eventually("the outbox empty") { outboxPending(harness.state) == 0 }
        #expect(try String(contentsOfFile: runs, encoding: .utf8) == "run\n")
        await agent.stopAndWait()
        await harness.close()
    }

    /// A hostile handlers.d does not keep the real agent from registering and serving the valid ones.
    @Test func aHostileHandlersDirectoryDoesNotTakeTheDeviceOffline() async throws {
        let harness = try await Harness()
        _ = try writeHostileCorpus(in: harness.handlers)
        let agent = try AgentProcess(harness)
        defer { agent.stop() }
        do {
            try await eventually("registered with the valid handler") {
                await harness.advertised() == ["c8y_Message"]
            }
        } catch {
            Issue.record(Comment(rawValue: "agent log: " + String(agent.log.suffix(2000))))
            throw error
        }
        let id = try await harness.createOperation(["c8y_Message": ["text": "still here"]])
        #expect(try await harness.waitForEnd(id)["status"] == "SUCCESSFUL")
        #expect(agent.log.contains("bomb-billion-laughs.yaml"))
        await agent.stopAndWait()
        await harness.close()
    }
}
