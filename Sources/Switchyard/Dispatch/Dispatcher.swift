import Cumulocity
import HandlerKit
import Logging

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The one entry point for operations, whatever brought them (start-up queries, notifications,
/// recovery after a restart).
///
/// For each operation: read its id (none → logged and skipped), record it in the ``Journal``
/// (already there → a duplicate delivery, skipped), find the handler for its fragment, wait for a
/// slot (per-declaration `concurrency` and the agent-wide limit), queue EXECUTING in the
/// ``Outbox``, run the handler, and queue SUCCESSFUL or FAILED with the handler's result fragments.
/// Nothing one operation does (bad JSON, a crashing or hanging handler) stops the others.
public actor Dispatcher {
    /// Where an operation came from (for logs).
    public enum Source: String, Sendable {
        case startup, notification, recovery, reconciliation
    }

    struct Job: Sendable {
        let operation: Operation
        let declaration: HandlerDeclaration?
        let phase: Phase
        /// FAILED straight away with this reason (no handler, wrong target).
        let refusal: String?
        /// Whether EXECUTING must still be reported.
        let reportExecuting: Bool
    }

    /// The handlers of each device this agent manages (itself and its children), by managed object id.
    private var devices: [String: (registry: Registry, externalId: String)]
    private let journal: Journal
    private let outbox: Outbox
    private let client: PlatformClient
    private let device: DeviceIdentity
    private let stateDirectory: String
    /// More variables for executable plugins (the plugin proxy's URL and secret).
    private let pluginVariables: [String: String]
    private let logger: Logger
    private let execRunner = ExecRunner()
    private let global: AsyncSemaphore
    private var perDeclaration: [String: AsyncSemaphore] = [:]
    private var draining = false
    private var active = 0
    private var drainWaiters = Waiters()
    /// Running operations of resumable declarations: a shutdown stops them at once (they resume at the next start).
    private var resumableRuns: [String: Task<Outcome?, Never>] = [:]
    private var interrupted: Set<String> = []
    /// Operations whose end could not be written (a full state directory): retried until it is.
    private var unsettled: [String: Unsettled] = [:]
    /// Operations whose EXECUTING could not be queued: it goes out before their end.
    private var executingMissing: Set<String> = []
    private var diskWatch: StateDiskWatch?
    private var housekeeping: Housekeeping?
    /// Operations that could not get a workspace for lack of space: started again once there is.
    private var deferred: [Job] = []
    private let jobs: AsyncStream<Job>
    private let jobSink: AsyncStream<Job>.Continuation

    struct Unsettled {
        let update: JSONValue
        /// Whether the journal has the end already (only queueing it in the outbox is missing).
        var journalled = false
    }

    /// Operation keys that are not fragments.
    static let standardKeys: Set<String> = [
        "id", "self", "status", "creationTime", "deviceId", "deviceName", "description", "bulkOperationId",
        "failureReason", "delivery", "agentId", "deviceExternalIDs", "com_cumulocity_model_Agent",
    ]

    public init(registry: Registry, journal: Journal, outbox: Outbox, client: PlatformClient, device: DeviceIdentity,
                stateDirectory: String, concurrency: Int, pluginVariables: [String: String] = [:], logger: Logger) {
        self.devices = [device.id: (registry, device.externalId)]
        self.pluginVariables = pluginVariables
        self.journal = journal
        self.outbox = outbox
        self.client = client
        self.device = device
        self.stateDirectory = stateDirectory
        self.logger = logger
        self.global = AsyncSemaphore(permits: concurrency)
        (jobs, jobSink) = AsyncStream.makeStream(of: Job.self)
    }

    /// Replaces a device's registry (the agent's by default); running operations keep the
    /// declaration they started with.
    public func update(registry: Registry, for deviceID: String? = nil, externalId: String? = nil) {
        let id = deviceID ?? device.id
        devices[id] = (registry, externalId ?? devices[id]?.externalId ?? "")
        // Slots of declarations gone from every registry go too (a running operation keeps its own).
        let live = Set(devices.values.flatMap { $0.registry.declarations.map(\.location) })
        perDeclaration = perDeclaration.filter { live.contains($0.key) }
    }

    private func registry(for deviceID: String) -> Registry? { devices[deviceID]?.registry }

    /// Where failed writes for lack of space are reported.
    public func setDiskWatch(_ watch: StateDiskWatch) { diskWatch = watch }

    /// Told of every finished operation, to prune old operation directories while running.
    func setHousekeeping(_ housekeeping: Housekeeping) { self.housekeeping = housekeeping }

    /// Runs queued jobs until cancelled; cancelling stops running handlers (executables get SIGTERM, then SIGKILL).
    public func run() async {
        await withDiscardingTaskGroup { group in
            for await job in jobs {
                group.addTask { await self.execute(job) }
            }
        }
    }

    /// Takes an element of a list of operations: a decoded one is submitted; one the decoder refused
    /// is FAILED with the decoder's reason when its id can be read (logged with its start otherwise),
    /// and nothing else is held up by it.
    public func submit(_ item: OperationItem, source: Source) async {
        switch item {
        case .operation(let json):
            await submit(json, source: source)
        case .undecodable(let id?, let problem, let excerpt):
            guard !draining else { return }
            do {
                guard try await journal.accept(id, operation: .null, fragment: nil) else { return }
            } catch {
                logger.error("cannot record operation in the journal; not settled now, it stays PENDING",
                             metadata: ["operation": "\(id)", "error": "\(error)"])
                await diskWatch?.failed(error)
                return
            }
            logger.error("operation cannot be decoded; FAILED", metadata: [
                "operation": "\(id)", "source": "\(source)", "problem": "\(problem)", "excerpt": "\(excerpt)",
            ])
            let operation = Operation(id: id, deviceId: device.id, externalId: nil, fragment: "", json: .null)
            jobSink.yield(Job(operation: operation, declaration: nil, phase: .execute,
                              refusal: "the agent cannot decode this operation: \(problem)", reportExecuting: true))
        case .undecodable(nil, let problem, let excerpt):
            logger.error("an operation cannot be decoded, nor its id read; skipped (it stays PENDING on the platform)",
                         metadata: ["source": "\(source)", "problem": "\(problem)", "excerpt": "\(excerpt)"])
        }
    }

    /// Takes an operation from any source. Returns quickly: the handler runs in the background.
    public func submit(_ json: JSONValue, source: Source) async {
        guard !draining else {
            logger.debug("shutting down; operation left for the next start", metadata: ["source": "\(source)"])
            return
        }
        guard case .object = json else {
            logger.error("operation is not a JSON object; skipped", metadata: ["source": "\(source)", "operation": "\(JSONValue.excerpt(json.encoded()))"])
            return
        }
        guard let id = json["id"]?.idValue else {
            logger.error("operation without an id; skipped", metadata: ["source": "\(source)", "operation": "\(JSONValue.excerpt(json.encoded()))"])
            return
        }
        let status = json["status"]?.stringValue ?? "PENDING"
        guard status == "PENDING" else {
            logger.debug("operation not PENDING; not taken", metadata: ["operation": "\(id)", "status": "\(status)"])
            return
        }
        let job = makeJob(id: id, json: json, phase: .execute, reportExecuting: true)
        let fragment = job.declaration == nil ? nil : job.operation.fragment
        do {
            guard try await journal.accept(id, operation: json, fragment: fragment) else {
                logger.debug("operation delivered again; already taken", metadata: ["operation": "\(id)", "source": "\(source)"])
                return
            }
        } catch {
            logger.error("cannot record operation in the journal; not run now, it stays PENDING until the journal can be written",
                         metadata: ["operation": "\(id)", "error": "\(error)"])
            await diskWatch?.failed(error)
            return
        }
        logger.info("operation received", metadata: ["operation": "\(id)", "fragment": "\(fragment ?? "-")", "source": "\(source)"])
        jobSink.yield(job)
    }

    /// Returns at once: that it returns at all tells the watchdog the actor is not stuck.
    public func ping() {}

    /// Stops taking operations and waits until the running ones have ended (their final status is then
    /// in the outbox). Operations not yet started stay recorded and run at the next start.
    public func drain() async {
        draining = true
        for (id, task) in resumableRuns {
            interrupted.insert(id)
            task.cancel()
        }
        if active == 0 { return }
        let key = drainWaiters.newKey()
        await withTaskCancellationHandler {
            await withCheckedContinuation { drainWaiters.add($0, key: key) }
        } onCancel: {
            Task { await self.releaseDrainWaiter(key) }
        }
    }

    private func releaseDrainWaiter(_ key: UInt64) {
        drainWaiters.resume(key)
    }

    /// Settles what the previous run left unfinished (from the journal), then operations the platform
    /// says are EXECUTING that this agent has no record of. Call before listening for new operations.
    public func recover(executingOnPlatform: [OperationItem]) async {
        for entry in await journal.unfinished() {
            // A plugin the killed agent left running is stopped before its operation is settled.
            if await ExecRunner.terminateLeftover(in: stateDirectory + "/operations/" + entry.id, grace: .seconds(5)) {
                logger.notice("stopped the plugin the previous run left running", metadata: ["operation": "\(entry.id)"])
            }
            let platformStatus: String
            do {
                platformStatus = try await client.operation(id: entry.id)["status"]?.stringValue ?? "PENDING"
            } catch where error.status == 404 {
                logger.notice("operation from the journal no longer exists on the platform", metadata: ["operation": "\(entry.id)"])
                try? await journal.finished(entry.id, status: "DELETED")
                continue
            } catch {
                // Unknown: assume the most recent state the journal implies.
                logger.warning("cannot read operation status; recovering from the journal alone",
                               metadata: ["operation": "\(entry.id)", "error": "\(error)"])
                platformStatus = entry.stage == .started ? "EXECUTING" : "PENDING"
            }
            guard platformStatus == "PENDING" || platformStatus == "EXECUTING" else {
                try? await journal.finished(entry.id, status: platformStatus)
                continue
            }
            let queued = await outbox.hasUpdate(for: entry.id, status: "EXECUTING")
            let reportExecuting = platformStatus == "PENDING" && !queued
            let phase: Phase = entry.stage == .started ? .resume : .execute
            logger.notice("resolving operation left by the previous run",
                          metadata: ["operation": "\(entry.id)", "stage": "\(entry.stage.rawValue)", "platformStatus": "\(platformStatus)"])
            jobSink.yield(makeJob(id: entry.id, json: entry.operation, phase: phase, reportExecuting: reportExecuting))
        }
        for item in executingOnPlatform {
            guard case .operation(let json) = item, let id = json["id"]?.idValue else {
                await submit(item, source: .recovery)
                continue
            }
            await adopt(executing: json, id: id)
        }
    }

    /// Squares the platform's view with the journal's: `open` is every operation the platform lists
    /// as PENDING or EXECUTING for this agent (and its children), queried after the journal was read.
    ///
    /// - Unknown to the journal: taken on now (PENDING), or settled as one left by a previous run
    ///   (EXECUTING with no local record).
    /// - Finished here, not final there, nothing queued: the final status is sent again from the journal.
    /// - Running or queued here: left alone.
    /// Finished operations whose final status is neither queued nor open on the platform are
    /// acknowledged: the platform has it.
    public func reconcile(open: [OperationItem]) async {
        guard !draining else { return }
        let unacknowledged = await journal.unacknowledged()
        var openIDs = Set<String>()
        for item in open {
            guard case .operation(let json) = item, let id = json["id"]?.idValue else {
                await submit(item, source: .reconciliation)
                continue
            }
            openIDs.insert(id)
            let status = json["status"]?.stringValue ?? "PENDING"
            guard let entry = await journal.entry(id) else {
                if status == "EXECUTING" {
                    await adopt(executing: json, id: id)
                } else {
                    await submit(json, source: .reconciliation)
                }
                continue
            }
            guard entry.stage == .finished, !entry.acknowledged, !(await outbox.hasUpdate(for: id)) else { continue }
            let final = entry.final ?? ["status": .string(entry.status ?? "FAILED")]
            guard OperationItem.finalStatuses.contains(final["status"]?.stringValue ?? "") else { continue }
            logger.notice("operation finished here but still open on the platform; its final status is sent again",
                          metadata: ["operation": "\(id)", "platformStatus": "\(status)", "status": "\(entry.status ?? "-")"])
            do {
                // The platform moves an operation to a final status from EXECUTING only.
                if status == "PENDING" { try await outbox.enqueue(operationID: id, ["status": "EXECUTING"]) }
                try await outbox.enqueue(operationID: id, final)
            } catch {
                logger.error("cannot queue the final status again", metadata: ["operation": "\(id)", "error": "\(error)"])
            }
        }
        for entry in unacknowledged where !openIDs.contains(entry.id) {
            if await !outbox.hasUpdate(for: entry.id) { await journal.acknowledged(entry.id) }
        }
    }

    /// An operation the platform says is EXECUTING that this agent has no record of: left by a run
    /// whose journal is gone, so it is resumed (or FAILED, if its handler is not resumable).
    private func adopt(executing json: JSONValue, id: String) async {
        let job = makeJob(id: id, json: json, phase: .resume, reportExecuting: false)
        do {
            guard try await journal.accept(id, operation: json, fragment: job.declaration == nil ? nil : job.operation.fragment) else { return }
            try await journal.started(id)
        } catch {
            logger.error("cannot record operation in the journal", metadata: ["operation": "\(id)", "error": "\(error)"])
            return
        }
        logger.notice("operation EXECUTING on the platform with no local record", metadata: ["operation": "\(id)"])
        jobSink.yield(job)
    }

    /// The handled fragment of an operation: the first key, in sorted order, that a declaration handles.
    func match(_ json: JSONValue) -> String? {
        guard let keys = json.objectValue?.keys.sorted(),
              let registry = registry(for: json["deviceId"]?.idValue ?? device.id) else { return nil }
        return keys.first { registry.declaration(for: $0) != nil }
    }

    private func makeJob(id: String, json: JSONValue, phase: Phase, reportExecuting: Bool) -> Job {
        let target = json["deviceId"]?.idValue ?? device.id
        let fragment = match(json)
        let operation = Operation(id: id, deviceId: target, externalId: devices[target]?.externalId,
                                  fragment: fragment ?? "", json: json)
        var refusal: String?
        if devices[target] == nil {
            refusal = "operation targets device \(target), which this agent does not manage"
        } else if fragment == nil {
            let candidates = (json.objectValue ?? [:]).keys.filter { !Self.standardKeys.contains($0) }.sorted()
            refusal = candidates.isEmpty
                ? "no handler: the operation has no fragment"
                : "no handler for \(candidates.joined(separator: ", "))"
        }
        return Job(operation: operation, declaration: fragment.flatMap { registry(for: target)?.declaration(for: $0) },
                   phase: phase, refusal: refusal, reportExecuting: reportExecuting)
    }

    private func semaphore(for declaration: HandlerDeclaration) -> AsyncSemaphore {
        if let existing = perDeclaration[declaration.location] { return existing }
        let created = AsyncSemaphore(permits: declaration.concurrency)
        perDeclaration[declaration.location] = created
        return created
    }

    // MARK: Running one operation

    private func execute(_ job: Job) async {
        let operation = job.operation
        var metadata: Logger.Metadata = ["operation": "\(operation.id)", "fragment": "\(operation.fragment)"]
        guard let declaration = job.declaration, job.refusal == nil else {
            let reason = job.refusal ?? "no handler"
            logger.warning("operation refused", metadata: metadata.merging(["reason": "\(reason)"]) { $1 })
            await report(operation.id, executing: job.reportExecuting)
            await finish(operation.id, .failed(reason), metadata: metadata)
            return
        }
        metadata["handler"] = "\(declaration.handlerName)"
        let slot = semaphore(for: declaration)
        do {
            try await global.acquire()
            do { try await slot.acquire() } catch { await global.release(); throw error }
        } catch {
            return  // shutting down; the journal still says `accepted`, so it runs at the next start
        }
        if draining {
            await slot.release()
            await global.release()
            return  // likewise: not started, so it runs at the next start
        }
        active += 1
        defer {
            active -= 1
            if active == 0 { drainWaiters.resumeAll() }
        }
        let started = ContinuousClock.now
        // EXECUTING is written before `started` is queued: its request goes out while `started` is
        // synced (queued together, its write would wait behind that fsync on the storage thread).
        await report(operation.id, executing: job.reportExecuting)
        // The workspace exists before `started` is recorded: an operation the journal says was
        // started did get as far as its handler (a full disk fails it here, with that reason).
        if let problem = prepareWorkspace(operation, for: declaration) {
            await diskWatch?.failed(problem)
            await slot.release()
            await global.release()
            if problem.isDiskFull, diskWatch != nil {
                // Not the operation's fault: it runs once the state directory takes writes.
                logger.warning("operation waits for space in the state directory", metadata: metadata)
                deferred.append(Job(operation: operation, declaration: declaration, phase: job.phase, refusal: nil,
                                    reportExecuting: false))
                return
            }
            await finish(operation.id, .failed("cannot prepare the operation's directory: \(problem)"), metadata: metadata)
            return
        }
        do {
            try await journal.started(operation.id)
        } catch {
            logger.error("cannot record operation start in the journal", metadata: metadata.merging(["error": "\(error)"]) { $1 })
            await diskWatch?.failed(error)
        }
        let ran: Outcome?
        if declaration.resumable {
            let task = Task { await self.run(operation, declaration, phase: job.phase) }
            resumableRuns[operation.id] = task
            ran = await withTaskCancellationHandler { await task.value } onCancel: { task.cancel() }
            resumableRuns[operation.id] = nil
        } else {
            ran = await run(operation, declaration, phase: job.phase)
        }
        await slot.release()
        await global.release()
        if interrupted.remove(operation.id) != nil {
            logger.notice("resumable operation stopped by shutdown; it resumes at the next start", metadata: metadata)
            return
        }
        guard let outcome = ran else {
            logger.notice("operation waits for the device restart; it resumes at the next start", metadata: metadata)
            return
        }
        if Task.isCancelled, case .failed = outcome {
            // Stopped by the agent's shutdown, not by its own doing: leave it `started` so the next
            // start resolves it (resume or FAILED with the restart as reason).
            logger.notice("operation interrupted by shutdown", metadata: metadata)
            return
        }
        metadata["duration"] = "\(ContinuousClock.now - started)"
        await finish(operation.id, outcome, metadata: metadata)
    }

    /// Creates the operation's workspace (with `operation.json` for an executable plugin); the error when that fails.
    private func prepareWorkspace(_ operation: Operation, for declaration: HandlerDeclaration) -> FileSystemError? {
        do {
            let isExec = if case .exec = declaration.kind { true } else { false }
            try OperationWorkspace(stateDirectory: stateDirectory, operationID: operation.id)
                .prepare(operation.json, writeOperationFile: isExec, spares: housekeeping?.spares)
            return nil
        } catch {
            return error
        }
    }

    /// The runner of a declaration's handler: in-process for a compiled one, a process for an executable.
    private func runner(for declaration: HandlerDeclaration) -> any HandlerRunner {
        switch declaration.kind {
        case .swift(_, let handler):
            return CompiledHandlerRunner(handler: handler)
        case .exec(let spec):
            return ExecPluginRunner(spec: spec, declaration: declaration.location, runner: execRunner, baseURL: client.baseURL,
                                    variables: pluginVariables, logger: logger)
        }
    }

    /// The context a handler runs with: its phase, its workspace, the log `log` names, the outbox.
    private func context(_ operation: Operation, phase: Phase, workspace: OperationWorkspace, log: String) -> OperationContext {
        var context = OperationContext(phase: phase, stateDirectory: workspace.directory, logFile: workspace.logFile(log),
                                       deviceID: operation.deviceId, operationID: operation.id, outbox: outbox, client: client,
                                       variables: pluginVariables)
        context.steps = { [self] step, fragment, payload, phase in
            await runStep(step, of: operation, in: workspace, fragment: fragment, payload: payload, phase: phase)
        }
        return context
    }

    /// One step of an operation: the handler this device declares for `fragment`, run on `payload`
    /// in the step's own workspace, under the operation's id and within the parent's concurrency slot.
    private func runStep(_ step: String, of operation: Operation, in parent: OperationWorkspace, fragment: String,
                         payload: JSONValue, phase: Phase) async -> Outcome {
        guard let declaration = registry(for: operation.deviceId)?.declaration(for: fragment) else {
            return .failed("this device has no handler for \(fragment)")
        }
        if phase == .resume && !declaration.resumable {
            return .failed("the device restarted during the \(step) step, and its handler (\(declaration.handlerName)) is not resumable")
        }
        var json = operation.json.objectValue ?? [:]
        json[fragment] = payload
        let request = Operation(id: operation.id, deviceId: operation.deviceId, externalId: operation.externalId,
                                fragment: fragment, json: .object(json))
        let workspace = parent.step(step)
        do {
            let isExec = if case .exec = declaration.kind { true } else { false }
            try workspace.prepare(request.json, writeOperationFile: isExec)
        } catch {
            return .failed("cannot prepare the directory of the \(step) step: \(error)")
        }
        let context = context(request, phase: phase, workspace: workspace, log: phase.rawValue)
        switch await runner(for: declaration).run(request, phase: phase, timeout: declaration.timeout, context: context,
                                                  workspace: workspace) {
        case .outcome(let outcome): return outcome
        case .restartRequested:
            return declaration.resumable ? .restartRequired
                : .failed("the \(step) step asked for a device restart, but its handler (\(declaration.handlerName)) is not resumable")
        }
    }

    /// Runs the handler; `nil` when the operation stays open across a device restart it asked for.
    private func run(_ operation: Operation, _ declaration: HandlerDeclaration, phase: Phase) async -> Outcome? {
        if phase == .resume && !declaration.resumable {
            return .failed("the agent restarted while this operation was executing; its handler (\(declaration.handlerName)) is not resumable")
        }
        let workspace = OperationWorkspace(stateDirectory: stateDirectory, operationID: operation.id)
        let context = context(operation, phase: phase, workspace: workspace, log: phase.rawValue)
        switch await runner(for: declaration).run(operation, phase: phase, timeout: declaration.timeout, context: context,
                                                  workspace: workspace) {
        case .outcome(let outcome): return outcome
        case .restartRequested: return await restartDevice(for: operation, declaration: declaration, workspace: workspace)
        }
    }

    /// A handler asked for a device restart: hand it to the device's `c8y_Restart` handler, run like
    /// any other (an executable one as its declared user, its directives applied). The operation stays
    /// `started` in the journal, so after the restart it is resumed (phase `resume`).
    private func restartDevice(for operation: Operation, declaration: HandlerDeclaration, workspace: OperationWorkspace) async -> Outcome? {
        guard declaration.resumable else {
            return .failed("the plugin asked for a device restart, but its declaration is not resumable: it could not finish after the restart")
        }
        guard let restart = registry(for: operation.deviceId)?.declaration(for: "c8y_Restart") else {
            return .failed("the plugin asked for a device restart, but this device has no c8y_Restart handler")
        }
        logger.notice("plugin asked for a device restart", metadata: ["operation": "\(operation.id)", "restartHandler": "\(restart.handlerName)"])
        let request = Operation(id: operation.id, deviceId: operation.deviceId, externalId: operation.externalId,
                                fragment: "c8y_Restart", json: operation.json.merging(["c8y_Restart": [:]]))
        // A compiled handler's workspace has no operation.json: the restart plugin reads the request.
        if case .exec = restart.kind, !FileSystem.exists(workspace.operationFile) { try? workspace.writeOperation(request.json) }
        let context = context(request, phase: .execute, workspace: workspace, log: "restart")
        let end = await runner(for: restart).run(request, phase: .execute, timeout: restart.timeout, context: context, workspace: workspace)
        if case .outcome(.failed(let reason, _)) = end {
            return .failed("the plugin asked for a device restart, which failed: \(reason)")
        }
        return nil
    }

    private func report(_ id: String, executing: Bool) async {
        guard executing else { return }
        do {
            try await outbox.enqueue(operationID: id, ["status": "EXECUTING"])
        } catch {
            logger.error("cannot queue EXECUTING; it goes out before the operation's end", metadata: ["operation": "\(id)", "error": "\(error)"])
            executingMissing.insert(id)
            await diskWatch?.failed(error)
        }
    }

    private func finish(_ id: String, _ outcome: Outcome, metadata: Logger.Metadata) async {
        var update: [String: JSONValue]
        switch outcome {
        case .successful(let result):
            update = result
            update["status"] = "SUCCESSFUL"
            logger.info("operation SUCCESSFUL", metadata: metadata)
        case .failed(let reason, let result):
            update = result
            update["status"] = "FAILED"
            update["failureReason"] = .string(reason)
            logger.warning("operation FAILED", metadata: metadata.merging(["reason": "\(reason)"]) { $1 })
        case .restartRequired:
            // Only reachable from a restart handler that itself asks for a restart.
            update = ["status": "FAILED", "failureReason": "the handler asked for a restart while restarting"]
            logger.warning("operation FAILED: restart requested during a restart", metadata: metadata)
        }
        unsettled[id] = Unsettled(update: .object(update))
        await settle(id, metadata: metadata)
    }

    /// Records an operation's end in the journal (fsynced: the final status is kept there until the
    /// platform acknowledges it), then queues it in the outbox; on failure (a full disk) it stays in
    /// `unsettled` and is tried again by ``settleAll()`` once the state directory takes writes.
    private func settle(_ id: String, metadata: Logger.Metadata) async {
        guard let pending = unsettled[id] else { return }
        do {
            if !pending.journalled {
                try await journal.finished(id, status: pending.update["status"]?.stringValue ?? "", final: pending.update)
                unsettled[id]?.journalled = true
            }
            if executingMissing.contains(id) {
                try await outbox.enqueue(operationID: id, ["status": "EXECUTING"])
                executingMissing.remove(id)
            }
            try await outbox.enqueue(operationID: id, pending.update)
            unsettled[id] = nil
            await housekeeping?.operationFinished()
        } catch {
            logger.error("cannot record the operation's end; kept in memory and retried once the state directory takes writes",
                         metadata: metadata.merging(["operation": "\(id)", "error": "\(error)"]) { $1 })
            await diskWatch?.failed(error)
        }
    }

    /// Retries recording the ends that could not be written, and starts the operations that waited for space.
    public func settleAll() async {
        for id in unsettled.keys.sorted() { await settle(id, metadata: ["operation": "\(id)"]) }
        let waiting = deferred
        deferred = []
        for job in waiting { jobSink.yield(job) }
    }
}
