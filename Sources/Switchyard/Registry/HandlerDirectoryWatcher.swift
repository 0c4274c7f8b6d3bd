import Synchronization
import UnixSignals

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Notices changes in a handlers directory: it compares a fingerprint of the declaration files and of
/// the programs they name (names, sizes, modes, modification times, inodes) every `interval`, and
/// reacts at once to SIGHUP.
struct HandlerDirectoryWatcher: Sendable {
    let directory: String
    let interval: Duration
    /// The directory's fingerprint taken just before the registry was read from it.
    var initial: [String]? = nil

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
    /// `tick` is called on every check, for work that must be retried until it succeeds.
    /// `programs` names the programs the current declarations use.
    func run(programs: @escaping @Sendable () async -> [String] = { [] },
             changed: @escaping @Sendable () async -> Void, tick: @escaping @Sendable () async -> Void) async {
        let hangup = HangupFlag()
        let signals = await UnixSignalsSequence(trapping: .sighup)
        await withDiscardingTaskGroup { group in
            group.addTask {
                for await _ in signals { hangup.raise() }
            }
            group.addTask {
                // The fingerprint taken before the registry was loaded: a file changed since is noticed.
                var last: [String]
                if let initial { last = initial } else { last = Self.fingerprint(directory, programs: await programs()) }
                while !Task.isCancelled {
                    do { try await Task.sleep(for: interval) } catch { break }
                    let now = Self.fingerprint(directory, programs: await programs())
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
