import Cumulocity
import Foundation
import JSONSupport
import Logging
import Sandbox
import Synchronization
import Testing
@testable import Switchyard

/// The journal's and the outbox's files: group commit on the storage thread, what is synced and
/// what is only written, compaction while records keep coming, and the older outbox layout.
@Suite(.closesHarnesses)
struct StorageTests {
    let logger = Logger(label: "test")

    /// Holds the storage thread until `release` is called, so that what is queued meanwhile goes out as one batch.
    final class Hold: @unchecked Sendable {
        private let semaphore = DispatchSemaphore(value: 0)
        init(_ storage: StorageThread) { storage.queue.submit { [semaphore] in semaphore.wait() } }
        func release() { semaphore.signal() }
    }

    /// What a job holds is freed once it has run: the queue kept up to 1,024 run jobs (and the sets
    /// and buffers they captured) before it trimmed its array, which showed as memory growth.
    @Test func aJobsCapturesAreFreedOnceItHasRun() async throws {
        final class Payload: Sendable {}
        let queue = ThreadQueue(threads: 1, name: "sy-test")
        defer { queue.finish() }
        // The payload's job is queued between two that hold the thread, and one more waits behind
        // them: the queue is not found empty (which resets its array) while the payload is checked.
        let first = DispatchSemaphore(value: 0), last = DispatchSemaphore(value: 0)
        let ran = Atomic<Bool>(false)
        queue.submit { first.wait() }
        weak let released: Payload? = {
            let payload = Payload()
            queue.submit { withExtendedLifetime(payload) { ran.store(true, ordering: .releasing) } }
            return payload
        }()
        queue.submit { last.wait() }
        queue.submit {}
        first.signal()
        try await eventually("the job ran") { ran.load(ordering: .acquiring) }
        try await eventually("the run job's payload is freed") { released == nil }
        last.signal()
    }

    @Test func recordsQueuedDuringOneSyncShareTheNext() async throws {
        let dir = temporaryDirectory()
        defer { FileSystem.removeTree(dir) }
        let storage = StorageThread()
        defer { storage.finish() }
        let log = try RecordLog(path: dir + "/log.jsonl", thread: storage)
        let hold = Hold(storage)
        let tickets = (0..<200).map { log.append(["n": .int(Int64($0))], wait: .durable) }
        hold.release()
        for ticket in tickets { try await ticket.value() }
        #expect(storage.syncs == 1)
        let (records, damaged) = try RecordLog.read(dir + "/log.jsonl")
        #expect(damaged == 0)
        #expect(records.map { $0["n"]?.intValue ?? -1 } == (0..<200).map(Int64.init))
    }

    @Test func writtenRecordsAreNotSynced() async throws {
        let dir = temporaryDirectory()
        defer { FileSystem.removeTree(dir) }
        let storage = StorageThread()
        defer { storage.finish() }
        let log = try RecordLog(path: dir + "/log.jsonl", thread: storage)
        try await log.append(["a": 1], wait: .written).value()
        #expect(storage.syncs == 0)
        try await log.append(["b": 2], wait: .durable).value()
        #expect(storage.syncs == 1)
        #expect(try RecordLog.read(dir + "/log.jsonl").records.count == 2)
    }

    /// A compaction contains what was queued before it; what is queued after it follows it in the new file.
    @Test func aReplacementKeepsTheRecordsQueuedAfterIt() async throws {
        let dir = temporaryDirectory()
        defer { FileSystem.removeTree(dir) }
        let storage = StorageThread()
        defer { storage.finish() }
        let log = try RecordLog(path: dir + "/log.jsonl", thread: storage)
        try await log.append(["old": 1], wait: .written).value()
        let hold = Hold(storage)
        let before = log.append(["before": 1], wait: .durable)
        let replacement = log.replace(with: [["compacted": 1]])
        let after = log.append(["after": 1], wait: .written)
        hold.release()
        try await before.value()
        try await replacement.value()
        try await after.value()
        #expect(try RecordLog.read(dir + "/log.jsonl").records == [["compacted": 1], ["after": 1]])
        // The file written after a replacement is appended to, not overwritten.
        try await log.append(["last": 1], wait: .durable).value()
        #expect(try RecordLog.read(dir + "/log.jsonl").records.count == 3)
    }

    /// The journal spends two fsyncs per operation (`started`, `finished`); accepting and acknowledging only write.
    @Test func theJournalSyncsTwicePerOperation() async throws {
        let dir = temporaryDirectory()
        defer { FileSystem.removeTree(dir) }
        let storage = StorageThread()
        defer { storage.finish() }
        let journal = try Journal(directory: dir, storage: storage, logger: logger)
        let opened = storage.syncs
        for id in 1...10 {
            _ = try await journal.accept("\(id)", operation: ["id": .string("\(id)")], fragment: "c8y_Message")
            try await journal.started("\(id)")
            try await journal.finished("\(id)", status: "SUCCESSFUL", final: ["status": "SUCCESSFUL"])
            await journal.acknowledged("\(id)")
        }
        #expect(storage.syncs - opened == 20)
        // Acknowledgements are posted, not waited for: the agent drains the thread when it stops.
        await storage.drain()
        let reopened = try Journal(directory: dir, logger: logger)
        #expect(await reopened.entry("10")?.stage == .finished)
        #expect(await reopened.unacknowledged().isEmpty)
    }

    private func client(_ url: String, _ transport: CurlTransport, _ settings: Tenant.Settings) -> PlatformClient {
        PlatformClient(baseURL: url, transport: transport,
                       credentials: BasicCredentials(tenant: settings.tenantID, username: settings.username, password: settings.password))
    }

    /// Status updates are only written (the journal keeps the final one durably); any other request is fsynced.
    @Test func statusUpdatesAreWrittenOtherRequestsSynced() async throws {
        let dir = temporaryDirectory()
        defer { FileSystem.removeTree(dir) }
        let transport = try CurlTransport()
        defer { transport.shutdown() }
        let storage = StorageThread()
        defer { storage.finish() }
        let client = unreachableClient(transport)
        do {
            let outbox = try Outbox(directory: dir, client: client, storage: storage, logger: logger)
            let opened = storage.syncs
            try await outbox.enqueue(operationID: "1", ["status": "EXECUTING"])
            try await outbox.enqueue(operationID: "1", ["status": "SUCCESSFUL"])
            #expect(storage.syncs == opened)
            try await outbox.enqueue(.createEvent(["type": "acme_Event", "text": "x", "source": ["id": "1"]]))
            #expect(storage.syncs == opened + 1)
        }
        let reopened = try Outbox(directory: dir, client: client, logger: logger)
        #expect(await reopened.queuedRequests().map { $0.request.body?["status"]?.stringValue ?? $0.request.path }
            == ["EXECUTING", "SUCCESSFUL", "/event/events"])
    }

    /// An outbox of the older layout (a file per request) is taken over in order, and its files removed.
    @Test func theOlderOutboxLayoutIsTakenOver() async throws {
        let dir = temporaryDirectory()
        defer { FileSystem.removeTree(dir) }
        let transport = try CurlTransport()
        defer { transport.shutdown() }
        let client = unreachableClient(transport)
        for (sequence, status) in [(7, "EXECUTING"), (8, "SUCCESSFUL")] {
            write("{\"operationId\":\"5\",\"method\":\"PUT\",\"path\":\"/devicecontrol/operations/5\",\"accept\":\"application/json\",\"body\":{\"status\":\"\(status)\"}}",
                  to: dir + "/00000000000000\(sequence < 10 ? "0" : "")\(sequence).json")
        }
        write("not json", to: dir + "/0000000000000009.json")
        let outbox = try Outbox(directory: dir, client: client, logger: logger)
        #expect(await outbox.queuedRequests().map { $0.request.body?["status"]?.stringValue } == ["EXECUTING", "SUCCESSFUL"])
        #expect(try FileSystem.list(dir)?.sorted() == ["outbox.jsonl", "rejected"])
        #expect(try FileSystem.list(dir + "/rejected") == ["0000000000000009.json"])
        try await outbox.enqueue(operationID: "6", ["status": "EXECUTING"])
        let reopened = try Outbox(directory: dir, client: client, logger: logger)
        #expect(await reopened.pendingCount == 3)
    }

    /// Sequence numbers only grow across restarts, past the requests set aside: their file names
    /// sort by age (housekeeping keeps the newest), and a new one never overwrites an old one.
    @Test func numbersKeepGrowingPastTheRequestsSetAside() async throws {
        let dir = temporaryDirectory()
        defer { FileSystem.removeTree(dir) }
        let transport = try CurlTransport()
        defer { transport.shutdown() }
        write("{}", to: dir + "/rejected/0000000000000005.json")
        let outbox = try Outbox(directory: dir, client: unreachableClient(transport), logger: logger)
        try await outbox.enqueue(operationID: "1", ["status": "EXECUTING"])
        #expect(await outbox.queuedRequests().map(\.sequence) == [6])
    }

    /// A takeover of the older layout interrupted after the file was written, before the old files
    /// went, does not queue their requests twice.
    @Test func anInterruptedTakeoverDoesNotQueueTwice() async throws {
        let dir = temporaryDirectory()
        defer { FileSystem.removeTree(dir) }
        let transport = try CurlTransport()
        defer { transport.shutdown() }
        let request = "\"operationId\":\"5\",\"method\":\"PUT\",\"path\":\"/devicecontrol/operations/5\",\"accept\":\"application/json\",\"body\":{\"status\":\"EXECUTING\"}"
        write("{\(request)}", to: dir + "/0000000000000007.json")
        write("{\"sequence\":7,\(request)}\n", to: dir + "/outbox.jsonl")
        let outbox = try Outbox(directory: dir, client: unreachableClient(transport), logger: logger)
        #expect(await outbox.pendingCount == 1)
        #expect(try FileSystem.list(dir)?.sorted() == ["outbox.jsonl", "rejected"])
    }

    /// Requests of different operations are in flight together; one operation's updates keep their
    /// order: a held EXECUTING of one operation holds back its SUCCESSFUL, not another operation's.
    @Test func operationsDoNotWaitForEachOther() async throws {
        let server = try await SandboxServer.start(settings: .init(), logger: Logger(label: "sandbox", factory: { _ in SwiftLogNoOpLogHandler() }))
        defer { Task { await server.stop() } }
        let dir = temporaryDirectory()
        defer { FileSystem.removeTree(dir) }
        let transport = try CurlTransport()
        defer { transport.shutdown() }
        let settings = server.tenant.settings
        let client = client(server.url, transport, settings)
        let device = try #require(try await client.createManagedObject(["name": "d", "c8y_IsDevice": [:]])["id"]?.idValue)
        let slow = try #require(await server.tenant.createOperation(["deviceId": .string(device), "acme_Slow": [:]])?["id"]?.idValue)
        let quick = try #require(await server.tenant.createOperation(["deviceId": .string(device), "acme_Quick": [:]])?["id"]?.idValue)
        await server.tenant.delay(next: 1, by: .seconds(4), method: "PUT", pathPrefix: "/devicecontrol/operations/\(slow)")
        let outbox = try Outbox(directory: dir, client: client, logger: logger)
        let sender = Task { try await outbox.run() }
        defer { sender.cancel() }
        try await outbox.enqueue(operationID: slow, ["status": "EXECUTING"])
        try await outbox.enqueue(operationID: slow, ["status": "SUCCESSFUL"])
        try await outbox.enqueue(operationID: quick, ["status": "EXECUTING"])
        try await outbox.enqueue(operationID: quick, ["status": "SUCCESSFUL"])
        try await eventually("the quick operation SUCCESSFUL") { await server.tenant.operation(quick)?["status"] == "SUCCESSFUL" }
        #expect(await server.tenant.operation(slow)?["status"] == "PENDING")
        try await eventually("the slow operation SUCCESSFUL") { await server.tenant.operation(slow)?["status"] == "SUCCESSFUL" }
        #expect(await server.tenant.history(of: slow).compactMap { $0["status"]?.stringValue } == ["PENDING", "EXECUTING", "SUCCESSFUL"])
        await outbox.waitUntilEmpty()
    }
}

/// A client whose requests go nowhere (port 9): for outbox tests that only queue.
func unreachableClient(_ transport: CurlTransport) -> PlatformClient {
    PlatformClient(baseURL: "http://127.0.0.1:9", transport: transport,
                   credentials: BasicCredentials(tenant: nil, username: "u", password: "p"))
}

/// Operation logs are written off the cooperative pool, and a writer the disk holds up does not
/// hold up the end of a run.
struct LogWriterTests {
    @Test func aStalledWriterDoesNotHoldAFlushPastItsLimit() async throws {
        let dir = temporaryDirectory()
        defer { FileSystem.removeTree(dir) }
        let fifo = dir + "/stalled.log"
        #expect(mkfifo(fifo, 0o600) == 0)
        LogWriter.append(line: "waits for a reader", to: fifo)  // open(2) of a FIFO blocks the writer thread
        let started = ContinuousClock.now
        let flushed: Void? = await withTimeLimit(.milliseconds(300)) { await LogWriter.flush() }
        #expect(flushed == nil)
        #expect(ContinuousClock.now - started < .seconds(5))
        let reader = open(fifo, O_RDONLY | O_NONBLOCK)  // lets the writer go on
        defer { close(reader) }
        await LogWriter.flush()
        let file = dir + "/after.log"
        LogWriter.append(line: "in order", to: file)
        LogWriter.append(line: "after it", to: file)
        await LogWriter.flush()
        #expect(try FileSystem.readText(file) == "in order\nafter it\n")
    }
}

/// Time limits that end early leave nothing scheduled behind them.
@Suite(.closesHarnesses)
struct DeadlineTests {
    @Test func cancelledSleepsLeaveNothingBehind() async throws {
        let deadlines = Deadlines()
        for _ in 0..<1000 {
            let value = await withTimeLimit(.seconds(600), deadlines: deadlines) { 42 }
            #expect(value == 42)
        }
        #expect(deadlines.count == 0)
    }

    @Test func aSleepEndsAtItsDeadline() async throws {
        let deadlines = Deadlines()
        let started = ContinuousClock.now
        #expect(await deadlines.sleep(for: .milliseconds(50)))
        #expect(ContinuousClock.now - started >= .milliseconds(50))
        let timedOut = await withTimeLimit(.milliseconds(50), deadlines: deadlines) { () async -> Int in
            _ = await deadlines.sleep(for: .seconds(600))
            return 1
        }
        #expect(timedOut == nil)
        #expect(deadlines.count == 0)
    }

    /// The thread is woken only by a sleep that ends before the one it waits for: operations racing
    /// their time limits one after another leave it asleep, and a shorter sleep still ends on time.
    @Test func onlyAnEarlierDeadlineWakesTheThread() async throws {
        let deadlines = Deadlines()
        #expect(await deadlines.sleep(for: .milliseconds(1)))
        // The thread resumed that sleep and waits for nothing; a long sleep wakes it once.
        let before = deadlines.rounds
        let anchor = Task { await deadlines.sleep(for: .seconds(600)) }
        try await eventually("the thread waits for the long sleep") { deadlines.count == 1 && deadlines.rounds == before + 1 }
        for _ in 0..<200 { _ = await withTimeLimit(.seconds(600), deadlines: deadlines) { 0 } }
        #expect(deadlines.rounds == before + 1, "limits ending after the long sleep woke the thread")
        let started = ContinuousClock.now
        #expect(await deadlines.sleep(for: .milliseconds(50)))
        #expect(ContinuousClock.now - started < .seconds(5))
        anchor.cancel()
        #expect(await anchor.value == false)
        #expect(deadlines.count == 0)
    }

    @Test func aSleepCancelledBeforeItStartsEndsAtOnce() async throws {
        let deadlines = Deadlines()
        let task = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return await deadlines.sleep(for: .seconds(600))
        }
        #expect(await task.value == false)
        #expect(deadlines.count == 0)
    }
}

/// What durability costs an operation of the running agent: two fsyncs (the journal's `started` and
/// `finished`), whatever else it writes.
@Suite(.closesHarnesses, .serialized)
struct SyncsPerOperationTests {
    @Test func anOperationCostsTwoSyncs() async throws {
        let harness = try await Harness()
        harness.declare("message.yaml", "operation: c8y_Message\nswift: Message\n")
        let storage = StorageThread()
        var tuning = Harness.tuning
        tuning.storage = storage
        try await harness.startAgent(harness.configuration, tuning: tuning, waitForRegistration: true)
        let warmUp = try await harness.createOperation(["c8y_Message": ["text": "warm up"]])
        #expect(try await harness.waitForEnd(warmUp)["status"] == "SUCCESSFUL")
        let before = storage.syncs
        for index in 0..<20 {
            let id = try await harness.createOperation(["c8y_Message": ["text": .string("\(index)")]])
            #expect(try await harness.waitForEnd(id)["status"] == "SUCCESSFUL")
        }
        let perOperation = Double(storage.syncs - before) / 20
        #expect(perOperation <= 2, "\(perOperation) fsyncs per operation")
        await harness.close()
        storage.finish()
    }
}

/// The one wording of failure reasons, and the tail of standard error they carry.
@Suite(.closesHarnesses)
struct FailureReasonTests {
    @Test func theTailKeepsWholeLines() {
        let text = (1...300).map { "line \($0)" }.joined(separator: "\n")
        let tail = ExecResult.lastLines(text, limit: 100)
        #expect(tail.hasPrefix("…line "))
        #expect(tail.hasSuffix("line 300"))
        #expect(tail.count <= 101)
        #expect(ExecResult.lastLines(String(repeating: "x", count: 2000), limit: 10) == "…xxxxxxxxxx")
        #expect(ExecResult.lastLines("short") == "short")
    }

    @Test func endingsAreWordedOnce() {
        #expect(ExecResult.Ending.exited(3).reason(program: "/p", tail: "") == "exited with code 3 (no error output)")
        #expect(ExecResult.Ending.exited(3).reason(program: "/p", tail: "boom") == "exited with code 3: boom")
        #expect(ExecResult.Ending.signalled(9).reason(program: "/p", tail: "") == "killed by signal 9")
        #expect(ExecResult.Ending.timedOut(.seconds(5)).reason(program: "/p", tail: "").hasPrefix("timed out after 5"))
        #expect(ExecResult.Ending.couldNotStart("No such file").reason(program: "/p", tail: "x") == "could not start /p: No such file")
    }
}
