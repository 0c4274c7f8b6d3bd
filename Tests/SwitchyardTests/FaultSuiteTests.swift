import Foundation
import JSONSupport
import Sandbox
import Testing
@testable import Switchyard

/// Each operation ended SUCCESSFUL, reported once in order, and its handler (which appends its
/// operation id to `runs`) ran once.
func expectEachEndedOnce(_ ids: [String], harness: Harness, runs: String) async throws {
    for id in ids {
        #expect(try await harness.waitForEnd(id, within: 60)["status"] == "SUCCESSFUL")
        #expect(await harness.statuses(id) == ["PENDING", "EXECUTING", "SUCCESSFUL"])
    }
    let ran = try String(contentsOfFile: runs, encoding: .utf8).split(separator: "\n").map(String.init)
    #expect(ran.sorted() == ids.sorted())
}

/// Outages, dropped answers and hostile operations: every operation ends exactly once, with a reason.
@Suite(.closesHarnesses, .timeLimit(.minutes(3)))
struct FaultSuiteTests {
    /// The platform goes away while 20 operations finish (their handlers take a moment each), then
    /// comes back on the same address: each ends once, in order, and no handler runs twice.
    @Test func twentyOperationsFinishingDuringAnOutageAreEachReportedOnce() async throws {
        try await takingTurns {
            let harness = try await Harness()
            let runs = harness.root + "/runs"
            let plugin = harness.script("slow.sh", "sleep 1\necho \"$SWITCHYARD_OPERATION_ID\" >> \(runs)")
            harness.declare("slow.yaml", "operation: acme_Slow\nconcurrency: 4\nexec:\n  command: [\(plugin)]\n")
            var configuration = harness.configuration
            configuration.operations.concurrency = 8
            try await harness.startAgent(configuration, waitForRegistration: true)
            var ids: [String] = []
            for _ in 0..<20 { ids.append(try await harness.createOperation(["acme_Slow": [:]])) }
            try await eventually("all 20 taken on") {
                harness.logs.text.components(separatedBy: "operation received").count - 1 == 20
            }
            try await harness.outage(for: .seconds(6))
            try await expectEachEndedOnce(ids, harness: harness, runs: runs)
            await harness.close()
        }
    }

    /// Long-poll answers lost while a burst of operations arrives: the reconciliation takes on what
    /// the lost answers carried, the journal keeps anything from running twice.
    @Test func aBurstWithDroppedLongPollAnswersEndsEachOperationOnce() async throws {
        try await takingTurns {
            let harness = try await Harness()
            let runs = harness.root + "/runs"
            let plugin = harness.script("count.sh", "echo \"$SWITCHYARD_OPERATION_ID\" >> \(runs)")
            harness.declare("count.yaml", "operation: acme_Count\nconcurrency: 8\nexec:\n  command: [\(plugin)]\n")
            var configuration = harness.configuration
            configuration.operations.concurrency = 8
            try await harness.startAgent(configuration, waitForRegistration: true)
            try await eventually("the start-up reconciliation") { harness.logs.text.contains("reconciled with the platform") }
            var ids: [String] = []
            for round in 0..<5 {
                await harness.tenant.dropNotificationAnswers(next: 1)
                for _ in 0..<10 { ids.append(try await harness.createOperation(["acme_Count": ["round": .int(Int64(round))]])) }
                try await Task.sleep(for: .milliseconds(50))  // let the next poll pick up part of the burst
            }
            try await expectEachEndedOnce(ids, harness: harness, runs: runs)
            await harness.close()
        }
    }

    /// Answers that are not the platform's to status updates: JSON cut short, a JSON content type
    /// with HTML in it, an empty 200, an answer cut off mid-body. None is taken as a refusal; the
    /// operations end on the platform.
    @Test func brokenAnswersToStatusUpdatesAreRetried() async throws {
        let harness = try await Harness()
        harness.declare("message.yaml", "operation: c8y_Message\nswift: Message\n")
        try await harness.startAgent()
        let answers: [(status: Int, type: String, body: String, truncate: Int?)] = [
            (200, "application/json", "{\"id\":\"1\",\"status\":", nil),
            (200, "application/vnd.com.nsn.cumulocity.operation+json", "<html>portal</html>", nil),
            (200, "application/json", String(repeating: "{\"a\":", count: 50), 30),
            (502, "text/html", "<html>bad gateway</html>", nil),
        ]
        for answer in answers {
            await harness.tenant.answerRaw(next: 2, status: answer.status, contentType: answer.type, body: Array(answer.body.utf8),
                                           truncate: answer.truncate, method: "PUT", pathPrefix: "/devicecontrol/operations/")
            let id = try await harness.createOperation(["c8y_Message": ["text": .string("behind \(answer.type)")]])
            #expect(try await harness.waitForEnd(id)["status"] == "SUCCESSFUL", "after \(answer)")
            #expect(await harness.tenant.rawAnswersLeft == 0)
        }
        #expect(((try? FileSystem.list(harness.state + "/outbox/rejected")) ?? []).isEmpty)
        await harness.close()
    }

    /// Operations no sane tenant sends: wrong types, control characters, no fragment, unknown
    /// fragments, a fragment that is a list; and 200 at once. Each ends, with a reason when FAILED.
    @Test func hostileOperationsEachEndWithAReason() async throws {
        try await takingTurns {
            let harness = try await Harness()
            harness.declare("message.yaml", "operation: c8y_Message\nswift: Message\n")
            let plugin = harness.script("echo.sh", "echo \"$1\" > /dev/null")
            harness.declare("echo.yaml", "operation: acme_Echo\nconcurrency: 8\nexec:\n  command: [\(plugin), '${acme_Echo.text}']\n")
            try await harness.startAgent()
            let bodies: [JSONValue] = [
                ["c8y_Message": ["text": 42]], ["c8y_Message": ["text": ["a", "b"]]], ["c8y_Message": "not an object"],
                ["c8y_Message": ["text": "bell \u{7} escape \u{1B}[31m backspace \u{8} del \u{7F}"]],
                ["c8y_Message": [:]], ["c8y_Message": ["text": .null]],
                ["acme_Echo": ["text": ["nested": ["deep": true]]]], ["acme_Echo": ["text": "\u{1}\u{2}\u{3}"]],
                ["acme_Unknown": [:]], ["description": "no fragment at all"], ["acme_Echo": [1, 2, 3]],
                ["c8y_Message": ["text": .string(String(repeating: "ü", count: 100_000))]],
            ]
            var ids: [String] = []
            for body in bodies { ids.append(try await harness.createOperation(body)) }
            for index in 0..<200 { ids.append(try await harness.createOperation(["acme_Echo": ["text": .string("burst \(index)")]])) }
            for id in ids {
                let ended = try await harness.waitForEnd(id, within: 60)
                let reason: String = ended["failureReason"]?.stringValue ?? ""
                #expect(ended["status"] == "SUCCESSFUL" || reason.count > 0, "\(id) FAILED without a reason")
                #expect(await harness.statuses(id).filter { $0 == "SUCCESSFUL" || $0 == "FAILED" }.count == 1)
            }
            let unknown = try #require(await harness.tenant.operation(ids[8]))
            #expect(unknown["failureReason"]?.stringValue?.contains("acme_Unknown") == true)
            await harness.close()
        }
    }
}
