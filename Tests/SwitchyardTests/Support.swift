import Foundation
import JSONSupport
import Sandbox
import Testing
@testable import Switchyard

/// A fresh temporary directory, removed by the caller with `FileSystem.removeTree`.
func temporaryDirectory(_ name: String = #function) -> String {
    let base = FileManager.default.temporaryDirectory.path + "/switchyard-tests-\(getpid())-\(UUID().uuidString.prefix(8))"
    try? FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
    return base
}

func write(_ text: String, to path: String, mode: Int = 0o644) {
    try? FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
    FileManager.default.createFile(atPath: path, contents: Data(text.utf8))
    chmod(path, mode_t(mode))
}

/// Waits until `condition` holds, checking every 20 ms, and fails the test after `seconds`.
func eventually(_ what: String, within seconds: Double = 20, sourceLocation: SourceLocation = #_sourceLocation,
                _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
    while ContinuousClock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(20))
    }
    Issue.record("timed out after \(seconds) s waiting for: \(what)", sourceLocation: sourceLocation)
    throw TimedOut(what: what)
}

struct TimedOut: Error { let what: String }

/// Tests that assert a latency (handlers.d reload within 2 s) and tests that saturate the CPU on
/// purpose (100 MB output floods) take turns, so the former measure the agent, not the load.
let cpuHeavyOrTimed = AsyncSemaphore(permits: 1)

func takingTurns<T>(_ body: () async throws -> T) async throws -> T {
    try await cpuHeavyOrTimed.acquire()
    do {
        let result = try await body()
        await cpuHeavyOrTimed.release()
        return result
    } catch {
        await cpuHeavyOrTimed.release()
        throw error
    }
}

/// Starts a Foundation `Process`, one at a time for the whole test process: concurrent
/// `Process.run()` calls from several threads crashed inside this toolchain's Foundation (a `memcpy`
/// in `libFoundation.so`, seen once in CI while two helpers started programs at the same moment).
func launch(_ process: Process) throws {
    processLaunches.lock()
    defer { processLaunches.unlock() }
    try process.run()
}

private let processLaunches = NSLock()

/// How a program run by a test ended: its exit status and what it printed (standard output and error).
struct ProgramRun {
    let status: Int32
    let output: String
}

/// Runs a program to its end, with `input` on its standard input. The waiting happens on a thread
/// of its own, never on the cooperative pool, which the agents of concurrent tests need (with two
/// cores it has two threads: two tests blocked in a wait would stall every agent in the process).
func runProgram(_ path: String, _ arguments: [String], input: String? = nil) async throws -> ProgramRun {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread {
            continuation.resume(with: Result { try runProgramBlocking(path, arguments, input: input) })
        }
    }
}

private func runProgramBlocking(_ path: String, _ arguments: [String], input: String?) throws -> ProgramRun {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    let out = Pipe()
    let stdin = Pipe()
    process.standardOutput = out
    process.standardError = out
    process.standardInput = stdin
    try launch(process)
    if let input { stdin.fileHandleForWriting.write(Data(input.utf8)) }
    try stdin.fileHandleForWriting.close()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return ProgramRun(status: process.terminationStatus, output: String(decoding: data, as: UTF8.self))
}
