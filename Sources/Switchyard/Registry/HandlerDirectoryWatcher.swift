import Synchronization
import UnixSignals

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Notices changes in a handlers directory: inotify (``FileEvents``) on the directory and on the
/// directories of the programs its declarations name wakes it, SIGHUP wakes it, and a slow fallback
/// check every `interval` covers file systems without inotify. Each wake-up compares a fingerprint
/// of the declaration files and the programs (names, sizes, modes, modification times, inodes) with
/// the last one; SIGHUP reloads whether or not anything changed. Nothing runs while nothing happens.
struct HandlerDirectoryWatcher: Sendable {
    let directory: String
    /// The fallback check's period (a file system without inotify, a change inotify does not report
    /// such as a program replaced behind a symbolic link).
    let interval: Duration
    /// The directory's fingerprint taken just before the registry was read from it.
    var initial: [String]? = nil
    /// How soon `tick` is called again after it reported unfinished work (`false`).
    var retry: Duration = .seconds(1)
    /// Whether inotify wakes the watcher (off: only the fallback check and SIGHUP do).
    var fileEvents = true

    /// What identifies the directory's current contents.
    static func fingerprint(_ directory: String, programs: [String] = []) -> [String] {
        var entries: [String] = []
        for name in (try? FileSystem.list(directory)) ?? [] where name.hasSuffix(".yaml") || name.hasSuffix(".yml") {
            entries.append(name + ":" + identity(directory + "/" + name))
        }
        return entries + programEntries(programs)
    }

    /// The programs' part of a fingerprint.
    static func programEntries(_ programs: [String]) -> [String] {
        programs.map { "program " + $0 + ":" + identity($0) }
    }

    /// What changes when a file is replaced, written, or has its mode changed.
    static func identity(_ path: String) -> String {
        var info = stat()
        guard stat(path, &info) == 0 else { return "absent" }
        return "\(info.st_ino):\(info.st_size):\(info.st_mode):\(info.st_mtim.tv_sec).\(info.st_mtim.tv_nsec)"
            + ":\(info.st_ctim.tv_sec).\(info.st_ctim.tv_nsec)"
    }

    /// Calls `changed` after every change (and after SIGHUP, changed or not) until cancelled.
    /// `tick` is called after every check, for work that must be retried until it succeeds: when it
    /// returns `false` it is called again after `retry`. `programs` names the programs the current
    /// declarations use.
    func run(programs: @escaping @Sendable () async -> [String] = { [] },
             changed: @escaping @Sendable () async -> Void, tick: @escaping @Sendable () async -> Bool) async {
        let hangup = HangupFlag()
        let signals = await UnixSignalsSequence(trapping: .sighup)
        let (wakeups, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        let events = fileEvents ? FileEvents() : nil
        defer { events?.stop() }
        let (directory, interval, retry, initial) = (self.directory, self.interval, self.retry, self.initial)
        await withDiscardingTaskGroup { group in
            group.addTask {
                for await _ in signals {
                    hangup.raise()
                    wake.yield()
                }
            }
            if let events {
                group.addTask {
                    for await _ in events.wakeups {
                        // An editor writes in several steps: look once they are done.
                        try? await Task.sleep(for: .milliseconds(50))
                        wake.yield()
                    }
                }
            }
            group.addTask {
                while !Task.isCancelled {
                    guard await Deadlines.shared.sleep(for: interval) else { break }
                    wake.yield()
                }
            }
            group.addTask {
                // The fingerprint taken before the registry was loaded: a file changed since is noticed.
                var current = await programs()
                var last = initial ?? Self.fingerprint(directory, programs: current)
                events?.watch([directory] + Self.directories(of: current))
                // Look once now: a change between loading and watching raised no event (without
                // events, the next periodic look finds it).
                if events != nil { wake.yield() }
                for await _ in wakeups {
                    current = await programs()
                    let now = Self.fingerprint(directory, programs: current)
                    if now != last || hangup.take() {
                        last = now
                        await changed()
                        // `last` was taken before the reload read the files, so a change during it, or
                        // before the new watches are set, is noticed at the look this asks for.
                        events?.watch([directory] + Self.directories(of: await programs()))
                        if events != nil { wake.yield() }
                    }
                    if await !tick() {
                        // One short-lived timer per failed attempt.
                        Task {
                            try? await Task.sleep(for: retry)
                            wake.yield()
                        }
                    }
                }
            }
        }
    }

    /// The directories holding `programs` (watched: a program replaced or changed there is an event in it).
    static func directories(of programs: [String]) -> Set<String> {
        Set(programs.map(FileSystem.parent(of:)))
    }
}

/// Set by SIGHUP, taken by the watcher.
final class HangupFlag: Sendable {
    private let raised = Atomic<Bool>(false)
    func raise() { raised.store(true, ordering: .relaxed) }
    func take() -> Bool { raised.exchange(false, ordering: .relaxed) }
}
