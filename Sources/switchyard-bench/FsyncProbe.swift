import Cumulocity
import Foundation

/// The physical limit of the one-core benchmark: how long a small append and fsync (what a journal
/// record costs) takes on this disk idle, and while an image of the same size is written the way the
/// agent writes a download (1 MiB pieces, write-behind in 8 MiB windows, one fsync at the end). Runs
/// in a process of its own pinned to CPU 0, where the agent runs.
enum FsyncProbe {
    /// Samples of one append+fsync, in ms: 300 idle, then as many as fit while the image is written.
    static func run(imageMiB: Int, directory: String) -> (idle: [Double], loaded: [Double]) {
        let small = open(directory + "/probe.log", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        defer { close(small); unlink(directory + "/probe.log") }
        func sample() -> Double {
            let started = ContinuousClock.now
            _ = Array(repeating: UInt8(ascii: "y"), count: 100).withUnsafeBytes { write(small, $0.baseAddress, $0.count) }
            fsync(small)
            return (ContinuousClock.now - started).inSeconds * 1000
        }
        var idle: [Double] = []
        for _ in 0..<300 {
            idle.append(sample())
            usleep(3000)
        }
        let done = Atomic(false)
        let writer = Thread {
            let path = directory + "/probe.image"
            let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
            var sink = FileSink(fd: fd, offset: 0, maxBytes: Int64.max)
            let piece = [UInt8](repeating: 0x5A, count: 1 << 20)
            for _ in 0..<imageMiB {
                _ = piece.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                sink.offset += Int64(piece.count)
                sink.writeBehind()
            }
            fsync(fd)
            close(fd)
            unlink(path)
            done.store(true)
        }
        writer.start()
        var loaded: [Double] = []
        while !done.load() {
            loaded.append(sample())
            usleep(3000)
        }
        return (idle, loaded)
    }
}

/// A flag two threads share.
final class Atomic: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Bool
    init(_ value: Bool) { self.value = value }
    func load() -> Bool { lock.withLock { value } }
    func store(_ new: Bool) { lock.withLock { value = new } }
}
