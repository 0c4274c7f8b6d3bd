import Foundation
import JSONSupport
import Sandbox
import Synchronization
import Testing
@testable import Switchyard

/// The agent's own global executor (``GlobalExecutor``): its timer order, its rescue of a pool whose
/// threads are all held, and the real binary running on it without libdispatch's pool.
@Suite(.closesHarnesses, .timeLimit(.minutes(2)))
struct GlobalExecutorTests {
    @Test func timersComeOutByDeadlineAndEqualDeadlinesInTheOrderTheyWereQueued() {
        var heap = TimerHeap<String>()
        for (due, name) in [(30, "c"), (10, "a1"), (20, "b"), (10, "a2"), (5, "first"), (10, "a3"), (40, "last")] {
            heap.push(due: UInt64(due), job: name)
        }
        #expect(heap.earliest == 5)
        var order: [String] = []
        while let next = heap.pop() { order.append(next) }
        #expect(order == ["first", "a1", "a2", "a3", "b", "c", "last"])
        #expect(heap.earliest == nil)
    }

    /// One thread, held by a job that waits for another job of the same pool: libdispatch's monitor
    /// would add a thread after a second; so does the pool's own.
    @Test func aPoolWhoseOnlyThreadIsHeldAddsOne() async throws {
        let pool = WorkerPool(threads: 1)
        pool.start()
        let released = Flag()
        let holder = Task(executorPreference: pool) {
            // Blocks its thread on purpose: the bug the monitor is there for.
            while !released.value.load(ordering: .acquiring) { usleep(1000) }
        }
        try await eventually("the holder runs") { pool.busyThreads == 1 }
        let releaser = Task(executorPreference: pool) { released.value.store(true, ordering: .releasing) }
        await releaser.value
        await holder.value
        #expect(pool.addedThreads == 1)
        #expect(pool.threads == 2)
    }

    /// Since Swift 6.2 a sleep's wake-up goes to the current task executor if it can schedule, else
    /// straight to libdispatch: here it must land on the pool's own timers.
    @Test func aSleepOnThePoolWaitsOnThePoolsTimers() async throws {
        let pool = WorkerPool(threads: 1)
        pool.start()
        let clock = ContinuousClock()
        let start = clock.now
        let sleeper = Task(executorPreference: pool) {
            try await Task.sleep(for: .milliseconds(300))
            return currentThreadName()
        }
        #expect(try await sleeper.value == "sy-pool")
        #expect(clock.now - start >= .milliseconds(300))
        #expect(pool.timersQueued == 1)
    }

    @Test func tasksPreferringThePoolRunOnItsThreads() async {
        let pool = WorkerPool(threads: 2)
        pool.start()
        let names = await withTaskGroup(of: String.self) { group in
            for _ in 0..<50 {
                group.addTask(executorPreference: pool) { currentThreadName() }
            }
            return await group.reduce(into: Set<String>()) { $0.insert($1) }
        }
        #expect(names == ["sy-pool"])
    }

    /// The real binary: an operation, then a notification request refused (the listener's backoff
    /// is a `Task.sleep`, a delayed job of the pool), then another operation. No thread of
    /// libdispatch's pool ever started (their names end in "-qos"; its manager's in ".overcommit").
    @Test func theAgentBinaryRunsOnItsOwnPoolWithoutLibdispatchWorkers() async throws {
        var settings = Tenant.Settings()
        settings.holdTime = .seconds(1)
        let harness = try await Harness(settings: settings)
        let plugin = harness.script("acme_Echo.sh", "exit 0")
        harness.declare("acme_Echo.yaml", "operation: acme_Echo\nexec:\n  command: [\(plugin)]\n")
        let agent = try AgentProcess(harness)
        defer { agent.stop() }
        try await eventually("registered") { await harness.advertised() != nil }
        let first = try await harness.createOperation(["acme_Echo": [:]])
        #expect(try await harness.waitForEnd(first)["status"] == "SUCCESSFUL")

        await harness.tenant.refuse(next: 1, status: 503, method: "POST", pathPrefix: "/notification/operations")
        try await eventually("the listener backs off") { agent.log.contains("notification request failed; retrying") }
        let second = try await harness.createOperation(["acme_Echo": [:]])
        #expect(try await harness.waitForEnd(second)["status"] == "SUCCESSFUL")

        let threads = threadNames(of: agent.process.processIdentifier)
        #expect(threads.contains("sy-pool"))
        #expect(threads.filter { $0.hasSuffix("-qos") }.isEmpty, "libdispatch workers: \(threads)")
        await agent.stopAndWait()
        await harness.close()
    }

    /// The escape hatch: `SWITCHYARD_EXECUTOR=dispatch` is not a configuration mistake, and the agent
    /// then runs on libdispatch's pool (no thread of its own pool).
    @Test func theDispatchEscapeHatchRunsTheAgentOnLibdispatch() async throws {
        let harness = try await Harness()
        let plugin = harness.script("acme_Echo.sh", "exit 0")
        harness.declare("acme_Echo.yaml", "operation: acme_Echo\nexec:\n  command: [\(plugin)]\n")
        let agent = try AgentProcess(harness, environment: ["SWITCHYARD_EXECUTOR": "dispatch"])
        defer { agent.stop() }
        try await eventually("registered") { await harness.advertised() != nil }
        let operation = try await harness.createOperation(["acme_Echo": [:]])
        #expect(try await harness.waitForEnd(operation)["status"] == "SUCCESSFUL")
        let threads = threadNames(of: agent.process.processIdentifier)
        #expect(!threads.contains("sy-pool"), "threads: \(threads)")
        #expect(threads.contains { $0.hasSuffix("-qos") }, "threads: \(threads)")
        await agent.stopAndWait()
        await harness.close()
    }
}

/// A flag that escaping closures can share (an `Atomic` itself cannot be captured).
private final class Flag: Sendable {
    let value = Atomic<Bool>(false)
}

func currentThreadName() -> String {
    (try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
}

func threadNames(of pid: pid_t) -> [String] {
    let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
    return tasks.compactMap { task in
        (try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/comm", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
