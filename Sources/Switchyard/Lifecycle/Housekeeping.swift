import Logging

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Keeps the state directory from growing while the agent runs: the directories of finished
/// operations (their logs and state) are kept up to a count and an age, the rest removed (or
/// emptied and kept as spares for new operations, ``WorkspaceSpares``); of the
/// updates the platform refused (`outbox/rejected/`), the newest `keep` are kept.
///
/// Runs at start-up and then after every `every` finished operations, in a background task, so
/// a gateway that runs for a year holds at most `keep + every` finished operation directories.
/// The journal compacts itself (see ``Journal``).
actor Housekeeping {
    struct Retention: Sendable {
        /// Finished operation directories kept, newest first.
        var keep = 100
        /// Finished operation directories older than this are removed even within `keep`.
        var maximumAge: Duration = .seconds(7 * 86_400)
        /// Finished operations between two prunings.
        var every = 25
    }

    private let directory: String
    /// Updates the platform refused, kept for inspection: the newest `retention.keep` of them.
    private let rejected: String
    private let journal: Journal
    private let retention: Retention
    /// Where pruned directories are kept for new operations (see ``WorkspaceSpares``).
    nonisolated let spares: WorkspaceSpares
    private let logger: Logger
    private var finishedSincePrune = 0
    private var pruning = false
    /// When the kept directories' ages were last looked at.
    private var lastAgeCheck = 0
    /// Directories removed in all, for logs and tests.
    private(set) var removed = 0

    init(stateDirectory: String, journal: Journal, retention: Retention, logger: Logger) {
        self.directory = stateDirectory + "/operations"
        self.rejected = stateDirectory + "/outbox/rejected"
        self.journal = journal
        self.retention = retention
        self.spares = WorkspaceSpares(stateDirectory: stateDirectory)
        self.logger = logger
    }

    /// Counts a finished operation; every `every` of them, prunes in the background.
    func operationFinished() {
        finishedSincePrune += 1
        guard finishedSincePrune >= retention.every, !pruning else { return }
        finishedSincePrune = 0
        pruning = true
        Task(priority: .background) { await self.prune() }
    }

    /// Removes the directories of finished operations beyond the retention (never an unfinished one's).
    ///
    /// The directory is listed before the journal is asked: an operation is journalled before its
    /// directory is made, so every listed directory's operation is known to the answer, and one that
    /// has just started is seen as unfinished rather than as a stranger.
    func prune() async {
        defer { pruning = false }
        // The file system's part on the blocking pool: removing trees is inode work for the kernel
        // that would otherwise hold a thread of the cooperative pool.
        let directory = self.directory, rejected = self.rejected, retention = self.retention
        let names = await BlockingPool.run { (try? FileSystem.list(directory)) ?? [] }
        let candidates = await journal.finished(among: names, recentFinished: retention.keep), spares = self.spares
        // The kept directories' ages (a stat each) are looked at once a minute, not at every pruning.
        let now = time(nil)
        let checkAges = now - lastAgeCheck >= 60
        if checkAges { lastAgeCheck = now }
        let count = await BlockingPool.run {
            let maximumAge = Int(retention.maximumAge.components.seconds)
            var count = 0
            for (name, recent) in candidates {
                let path = directory + "/" + name
                if recent {
                    // Kept among the most recent, unless older than the maximum age.
                    guard checkAges, let modified = FileSystem.modificationTime(path), now - modified > maximumAge else { continue }
                }
                if !spares.recycle(path) { FileSystem.removeTree(path) }
                count += 1
            }
            // Outbox file names are sequence numbers, so name order is age order.
            for name in ((try? FileSystem.list(rejected)) ?? []).dropLast(retention.keep) {
                FileSystem.remove(rejected + "/" + name)
                count += 1
            }
            return count
        }
        removed += count
        if count > 0 { logger.debug("removed finished operation directories", metadata: ["count": "\(count)"]) }
    }
}
