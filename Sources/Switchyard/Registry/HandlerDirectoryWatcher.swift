import Synchronization
import UnixSignals

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Notices changes in a handlers directory: it compares a fingerprint of the declaration files
/// (names, sizes, modification times, inodes) every `interval`, and reacts at once to SIGHUP.
struct HandlerDirectoryWatcher: Sendable {
    let directory: String
    let interval: Duration
    /// The directory's fingerprint taken just before the registry was read from it.
    var initial: [String]? = nil

    /// What identifies the directory's current contents.
    static func fingerprint(_ directory: String) -> [String] {
        var entries: [String] = []
        for name in (try? FileSystem.list(directory)) ?? [] where name.hasSuffix(".yaml") || name.hasSuffix(".yml") {
            var info = stat()
            guard stat(directory + "/" + name, &info) == 0 else { continue }
            entries.append("\(name):\(info.st_ino):\(info.st_size):\(info.st_mtim.tv_sec).\(info.st_mtim.tv_nsec)")
        }
        return entries
    }

    /// Calls `changed` after every change (and after SIGHUP, changed or not) until cancelled.
    /// `tick` is called on every check, for work that must be retried until it succeeds.
    func run(changed: @escaping @Sendable () async -> Void, tick: @escaping @Sendable () async -> Void) async {
        let hangup = HangupFlag()
        let signals = await UnixSignalsSequence(trapping: .sighup)
        await withDiscardingTaskGroup { group in
            group.addTask {
                for await _ in signals { hangup.raise() }
            }
            group.addTask {
                // The fingerprint taken before the registry was loaded: a file changed since is noticed.
                var last = initial ?? Self.fingerprint(directory)
                while !Task.isCancelled {
                    do { try await Task.sleep(for: interval) } catch { break }
                    let now = Self.fingerprint(directory)
                    if now != last || hangup.take() {
                        last = now
                        await changed()
                    }
                    await tick()
                }
            }
        }
    }
}

/// Set by SIGHUP, taken by the watcher.
final class HangupFlag: Sendable {
    private let raised = Atomic<Bool>(false)
    func raise() { raised.store(true, ordering: .relaxed) }
    func take() -> Bool { raised.exchange(false, ordering: .relaxed) }
}
