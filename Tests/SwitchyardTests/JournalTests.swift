import Cumulocity
import Foundation
import Logging
import JSONSupport
import Sandbox
import Testing
@testable import Switchyard

struct JournalTests {
    let logger = Logger(label: "test")

    @Test func acceptedOperationsAreRememberedAcrossReopen() async throws {
        let dir = temporaryDirectory()
        defer { FileSystem.removeTree(dir) }
        do {
            let journal = try Journal(directory: dir, logger: logger)
            #expect(try await journal.accept("1", operation: ["id": "1"], fragment: "c8y_A"))
            #expect(try await !journal.accept("1", operation: ["id": "1"], fragment: "c8y_A"))
            #expect(try await journal.accept("2", operation: ["id": "2"], fragment: nil))
            try await journal.started("1")
            try await journal.finished("2", status: "SUCCESSFUL")
        }
        let reopened = try Journal(directory: dir, logger: logger)
        #expect(try await !reopened.accept("1", operation: [:], fragment: nil))
        #expect(try await !reopened.accept("2", operation: [:], fragment: nil))
        let unfinished = await reopened.unfinished()
        #expect(unfinished.map(\.id) == ["1"])
        #expect(unfinished.first?.stage == .started)
        #expect(unfinished.first?.operation == ["id": "1"])
    }

    /// What housekeeping may prune: finished operations (or ones compacted away), the most recently
    /// taken on of them marked, never an unfinished one.
    @Test func finishedAmongNamesMarksTheRecentOnes() async throws {
        let dir = temporaryDirectory()
        defer { FileSystem.removeTree(dir) }
        let journal = try Journal(directory: dir, logger: logger)
        for index in 1...8 {
            #expect(try await journal.accept("\(index)", operation: [:], fragment: nil))
            if index != 7 { try await journal.finished("\(index)", status: "SUCCESSFUL") }
        }
        let answer = await journal.finished(among: ["1", "3", "5", "6", "7", "8", "gone"], recentFinished: 3)
        #expect(answer.map(\.id) == ["1", "3", "5", "6", "8", "gone"])
        #expect(answer.filter(\.recent).map(\.id) == ["5", "6", "8"])
        #expect(await journal.finished(among: ["8"], recentFinished: 0).map(\.recent) == [false])
    }

    @Test func aTornLastLineIsSkipped() async throws {
        let dir = temporaryDirectory()
        defer { FileSystem.removeTree(dir) }
        write("{\"id\":\"7\",\"stage\":\"accepted\",\"operation\":{\"id\":\"7\"}}\n{\"id\":\"8\",\"sta", to: dir + "/journal.jsonl")
        let journal = try Journal(directory: dir, logger: logger)
        #expect(await journal.unfinished().map(\.id) == ["7"])
    }

    @Test func compactionKeepsUnfinishedAndRecentFinished() async throws {
        let dir = temporaryDirectory()
        defer { FileSystem.removeTree(dir) }
        do {
            let journal = try Journal(directory: dir, keepFinished: 2, logger: logger)
            for id in 1...5 {
                _ = try await journal.accept("\(id)", operation: [:], fragment: nil)
                if id != 3 { try await journal.finished("\(id)", status: "SUCCESSFUL") }
            }
        }
        let journal = try Journal(directory: dir, keepFinished: 2, logger: logger)
        #expect(await journal.entry("1") == nil)
        #expect(await journal.entry("3")?.stage == .accepted)
        #expect(await journal.entry("5")?.stage == .finished)
    }

    /// Acknowledged entries beyond the retention leave the file while the journal is open, so a
    /// long-running agent's journal stays bounded; unacknowledged finals are never dropped.
    @Test func theFileIsCompactedWhileOpen() async throws {
        let dir = temporaryDirectory()
        defer { FileSystem.removeTree(dir) }
        let journal = try Journal(directory: dir, keepFinished: 10, logger: logger)
        _ = try await journal.accept("kept", operation: [:], fragment: nil)
        try await journal.finished("kept", status: "FAILED", final: ["status": "FAILED", "failureReason": "x"])
        for id in 1...1500 {
            _ = try await journal.accept("\(id)", operation: ["id": .string("\(id)"), "big": .string(String(repeating: "y", count: 200))], fragment: nil)
            try await journal.started("\(id)")
            try await journal.finished("\(id)", status: "SUCCESSFUL", final: ["status": "SUCCESSFUL"])
            await journal.acknowledged("\(id)")
        }
        let lines = (try FileSystem.read(dir + "/journal.jsonl") ?? []).split(separator: UInt8(ascii: "\n")).count
        #expect(lines < 1100, "\(lines) lines")
        #expect(await journal.entry("1") == nil)
        #expect(await journal.entry("1500")?.stage == .finished)
        #expect(await journal.unacknowledged().map(\.id) == ["kept"])
        let reopened = try Journal(directory: dir, keepFinished: 10, logger: logger)
        #expect(await reopened.unacknowledged().first?.final?["failureReason"] == "x")
    }

    /// A record cut short (a crash or a full disk mid-write) does not swallow the next one.
    @Test func aTornRecordDoesNotSwallowTheNext() async throws {
        let dir = temporaryDirectory()
        defer { FileSystem.removeTree(dir) }
        write("{\"id\":\"7\",\"stage\":\"accepted\",\"operation\":{}}\n{\"id\":\"8\",\"sta", to: dir + "/journal.jsonl")
        do {
            let journal = try Journal(directory: dir, logger: logger)
            _ = try await journal.accept("9", operation: [:], fragment: nil)
        }
        let reopened = try Journal(directory: dir, logger: logger)
        #expect(await reopened.unfinished().map(\.id) == ["7", "9"])
    }

    /// A full disk at start-up does not keep the journal from opening: it is appended to as it is,
    /// after a newline when its last record was cut short, and compacted at the next open.
    @Test func aFullDiskAtOpenAppendsToTheFileAsItIs() async throws {
        let dir = temporaryDirectory()
        defer { FileSystem.removeTree(dir) }
        guard run("/bin/mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", dir) == 0 else {
            Issue.record("cannot mount a tmpfs for the full-disk test (not root?)")
            return
        }
        defer { run("/bin/umount", "-l", dir) }
        write("{\"id\":\"7\",\"stage\":\"accepted\",\"operation\":{}}\n{\"id\":\"8\",\"sta", to: dir + "/journal.jsonl")
        let filler = dir + "/filler"
        let fd = open(filler, O_WRONLY | O_CREAT, 0o600)
        let chunk = [UInt8](repeating: 0x41, count: 512)
        while chunk.withUnsafeBytes({ Glibc.write(fd, $0.baseAddress, $0.count) }) > 0 {}
        close(fd)
        do {
            let journal = try Journal(directory: dir, logger: logger)
            #expect(await journal.unfinished().map(\.id) == ["7"])
            let big: JSONValue = ["text": .string(String(repeating: "b", count: 8192))]
            await #expect(throws: FileSystemError.self) { try await journal.accept("9", operation: big, fragment: nil) }
            #expect(await journal.entry("9") == nil)
            unlink(filler)
            _ = try await journal.accept("10", operation: [:], fragment: nil)
        }
        let reopened = try Journal(directory: dir, logger: logger)
        #expect(await reopened.unfinished().map(\.id) == ["7", "10"])
    }

    @Test func outboxKeepsUpdatesInOrderAcrossReopen() async throws {
        let dir = temporaryDirectory()
        defer { FileSystem.removeTree(dir) }
        let transport = try CurlTransport()
        defer { transport.shutdown() }
        let client = unreachableClient(transport)
        do {
            let outbox = try Outbox(directory: dir, client: client, logger: logger)
            try await outbox.enqueue(operationID: "1", ["status": "EXECUTING"])
            try await outbox.enqueue(operationID: "1", ["status": "SUCCESSFUL"])
        }
        let reopened = try Outbox(directory: dir, client: client, logger: logger)
        #expect(await reopened.pendingCount == 2)
        #expect(await reopened.hasUpdate(for: "1", status: "EXECUTING"))
        try await reopened.enqueue(operationID: "2", ["status": "EXECUTING"])
        let again = try Outbox(directory: dir, client: client, logger: logger)
        let order = await again.queuedRequests().map { "\($0.operationID ?? "-") \($0.request.body?["status"]?.stringValue ?? "-")" }
        #expect(order == ["1 EXECUTING", "1 SUCCESSFUL", "2 EXECUTING"])
    }
}
