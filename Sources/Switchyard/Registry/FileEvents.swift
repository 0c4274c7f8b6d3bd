import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Changes in a few directories, from inotify, as wake-ups: something in one of them was created,
/// written, removed, renamed or had its mode changed. A thread of its own waits in `poll` for the
/// inotify descriptor (and a pipe that ends it), so nothing polls while nothing happens.
///
/// Only a hint: what changed is found out by looking (``HandlerDirectoryWatcher`` compares
/// fingerprints), and a file system without inotify (some network ones) is covered by the watcher's
/// slow fallback check.
final class FileEvents: Sendable {
    /// One element per burst of events read together.
    let wakeups: AsyncStream<Void>
    private let sink: AsyncStream<Void>.Continuation
    private let descriptor: Int32
    private let stopPipe: (read: Int32, write: Int32)
    private let watched = Mutex<Set<String>>([])

    /// `nil` when inotify is not available (then only the fallback check notices changes).
    init?() {
        let descriptor = inotify_init1(Int32(IN_CLOEXEC | IN_NONBLOCK))
        guard descriptor >= 0 else { return nil }
        var ends: [Int32] = [0, 0]
        guard pipe(&ends) == 0 else {
            close(descriptor)
            return nil
        }
        for end in ends { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        self.descriptor = descriptor
        self.stopPipe = (ends[0], ends[1])
        (wakeups, sink) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        guard startThread(named: "sy-file-events", { [self] in read() }) else { return nil }
    }

    /// Watches `directories` too (those watched already stay watched; a missing one is skipped).
    func watch(_ directories: some Sequence<String>) {
        let mask = UInt32(IN_CREATE | IN_DELETE | IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_ATTRIB
                          | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)
        let new = watched.withLock { watched -> [String] in
            let new = Set(directories).subtracting(watched)
            watched.formUnion(new)
            return Array(new)
        }
        for directory in new { _ = inotify_add_watch(descriptor, directory, mask) }
    }

    /// Ends the thread (and the stream).
    func stop() {
        var byte: UInt8 = 1
        _ = write(stopPipe.write, &byte, 1)
    }

    /// The thread: wait for events, drain them, yield one wake-up, until stopped.
    private func read() {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            var fds = [pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: stopPipe.read, events: Int16(POLLIN), revents: 0)]
            let ready = poll(&fds, 2, -1)
            if ready < 0 && errno == EINTR { continue }
            if ready < 0 || fds[1].revents != 0 { break }
            while buffer.withUnsafeMutableBytes({ Glibc.read(descriptor, $0.baseAddress, $0.count) }) > 0 {}
            sink.yield()
        }
        sink.finish()
        close(descriptor)
        close(stopPipe.read)
        close(stopPipe.write)
    }
}
