import Cumulocity
import Logging

/// Asks the platform which operations are PENDING or EXECUTING for this agent (its own and its
/// children's) and hands them to the ``Dispatcher`` to square with the journal.
///
/// The platform is the source of truth: a notification lost in transit, an operation that could
/// not be journalled on a full disk, or a final status that never reached the platform is found
/// here. Requests come from every (re)subscription, every interrupted long-poll and a jittered
/// timer; they are coalesced (one query at a time, at most one more queued behind it), and a
/// query that fails is retried with backoff until it goes through.
actor Reconciler {
    private let client: PlatformClient
    private let dispatcher: Dispatcher
    private let agentID: String
    private let backoff: Backoff
    private let logger: Logger
    private var running = false
    private var again = false
    /// Reconciliations done, for tests and logs.
    private(set) var completed = 0

    init(client: PlatformClient, dispatcher: Dispatcher, agentID: String, backoff: Backoff, logger: Logger) {
        self.client = client
        self.dispatcher = dispatcher
        self.agentID = agentID
        self.backoff = backoff
        self.logger = logger
    }

    /// Reconciles now, or right after the one in progress; returns when that one is done (or cancelled).
    func request(_ reason: String) async {
        if running {
            again = true
            return
        }
        running = true
        defer { running = false }
        var failures = 0
        repeat {
            again = false
            do {
                // EXECUTING first: an operation that moves from PENDING to EXECUTING in between is
                // then seen at least once (in both at worst, which the journal makes harmless).
                let executing = try await client.operations(agentID: agentID, status: "EXECUTING")
                let pending = try await client.operations(agentID: agentID, status: "PENDING")
                await dispatcher.reconcile(open: executing + pending)
                completed += 1
                failures = 0
                logger.debug("reconciled with the platform", metadata: [
                    "reason": "\(reason)", "executing": "\(executing.count)", "pending": "\(pending.count)",
                ])
            } catch where error.isCancellation {
                return
            } catch {
                failures += 1
                let delay = backoff.delay(attempt: failures)
                logger.log(level: failures == 1 ? .warning : .debug, "cannot ask the platform for open operations; retrying",
                           metadata: ["reason": "\(reason)", "error": "\(error)", "retryIn": "\(delay.readable)"])
                do { try await Task.sleep(for: delay) } catch { return }
                again = true
            }
        } while again && !Task.isCancelled
    }

    /// Reconciles every `interval`, ±10 %, until cancelled.
    func runPeriodically(every interval: Duration) async {
        while !Task.isCancelled {
            // On the timer thread: a pending Task.sleep wakes the process every second on Linux.
            guard await Deadlines.shared.sleep(for: interval * Double.random(in: 0.9...1.1)) else { return }
            await request("periodic")
        }
    }
}
