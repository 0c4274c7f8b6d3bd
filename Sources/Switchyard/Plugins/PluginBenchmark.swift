import HandlerKit

/// Measures what starting an executable plugin costs through the same runner operations use:
/// from the call until the plugin has read the first byte of its input and exited.
package enum PluginBenchmark {
    /// Runs `command` (which should read one byte of stdin and exit) `runs` times.
    /// - Returns: the duration of each run, in order.
    package static func measure(command: [String], runs: Int, directory: String) async throws -> [Duration] {
        try FileSystem.makeDirectories(directory, mode: 0o700)
        let spec = ExecSpec(command: command, environment: [:], gracePeriod: .seconds(1), user: nil)
        let runner = ExecRunner()
        var durations: [Duration] = []
        let operation: JSONValue = ["id": "bench", "acme_Bench": ["payload": .string(String(repeating: "x", count: 512))]]
        for _ in 0..<runs {
            let start = ContinuousClock.now
            let result = await runner.run(spec, operation: operation, environment: ["SWITCHYARD_PHASE": "execute"],
                                          timeout: .seconds(10), workingDirectory: directory, logFile: directory + "/bench.log")
            durations.append(ContinuousClock.now - start)
            guard result.ending == .exited(0) else {
                throw BenchmarkError(detail: "plugin run ended as \(result.ending): \(result.stderrTail)")
            }
        }
        FileSystem.remove(directory + "/bench.log")
        return durations
    }
}

package struct BenchmarkError: Error, CustomStringConvertible {
    package let detail: String
    package var description: String { detail }
}
