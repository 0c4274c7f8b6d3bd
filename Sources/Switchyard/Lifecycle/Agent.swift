public import Cumulocity
import JSONSupport
public import HandlerKit
public import Logging
public import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The device agent: the start-up phase (seed steps 1–4 and 6), then the cycle phase (step 7).
///
/// Start-up: find the device by its external id, create and register it if absent, otherwise update
/// it (never its `name`); settle operations left unfinished by the previous run; then subscribe to
/// real-time operations and, only once subscribed, query PENDING ones. From then on every operation
/// goes through the ``Dispatcher``, and status updates through the ``Outbox``.
public struct Agent: Service {
    /// Tunables that tests and the demo shorten.
    public struct Tuning: Sendable {
        public var bayeux = BayeuxListener.Configuration()
        public var outboxBackoff = Backoff()
        /// How many platform requests the outbox has in flight at once (of different operations), at
        /// least; twice `operations.concurrency` when that is more (each operation sends two updates).
        public var outboxConcurrency = 8
        /// The thread the journal and the outbox write on; a new one per run when `nil` (a test or the
        /// benchmark passes its own, to count the fsyncs).
        public var storage: StorageThread?
        public var startupBackoff = Backoff(initial: .seconds(1), maximum: .seconds(60))
        /// How often `handlers.d` is checked for changes without being told (inotify and SIGHUP tell
        /// at once; this covers file systems without inotify).
        public var reloadInterval: Duration = .seconds(30)
        /// Whether inotify tells of changes in `handlers.d` (off: only the `reloadInterval` check and SIGHUP).
        public var fileEvents = true
        /// How often the device certificate is checked for rotation and expiry (`auth.mode: certificate`).
        public var certificateCheckInterval: Duration = .seconds(60)
        /// How many finished operation directories are kept, and for how long.
        var retention = Housekeeping.Retention()
        /// How often a full state directory is probed for space.
        public var diskProbeInterval: Duration = .seconds(5)
        /// Quiet time before an availability heartbeat; half of each device's required interval when `nil`.
        public var heartbeatAfter: Duration?
        public init() {}
    }

    /// The agent's version, reported in the `c8y_Agent` fragment.
    public static let version = switchyardVersion

    let configuration: AgentConfiguration
    let catalog: [String: any OperationHandler.Type]
    let tuning: Tuning
    let logger: Logger
    /// systemd's notify socket, when run as a `Type=notify` service: READY, STATUS, WATCHDOG, STOPPING.
    let notifier: SystemdNotifier?
    /// The loops the watchdog watches (the notification listener).
    let liveness = Liveness()

    public init(configuration: AgentConfiguration, catalog: [String: any OperationHandler.Type],
                tuning: Tuning = .init(), notifier: SystemdNotifier? = nil, logger: Logger) {
        self.configuration = configuration
        self.catalog = catalog
        self.tuning = tuning
        self.notifier = notifier
        self.logger = logger
    }

    /// Runs until cancelled, or until a graceful shutdown when run in a `ServiceGroup` (SIGTERM/SIGINT).
    /// Handlers still running then are stopped and their operations settled at the next start.
    /// - Throws: only for a state directory that cannot be used; platform trouble is retried, never fatal.
    public func run() async throws {
        let parts = RunningParts()
        let work = Task { try await self.runUntilCancelled(parts) }
        await withGracefulShutdownHandler {
            await withTaskCancellationHandler {
                _ = await work.result
            } onCancel: {
                work.cancel()
            }
        } onGracefulShutdown: {
            notifier?.notify(["STOPPING=1", "STATUS=shutting down: letting running operations finish"])
            logger.notice("shutting down: letting running operations finish", metadata: ["grace": "\(configuration.operations.shutdownGrace.readable)"])
            Task {
                // Still starting up: nothing runs that needs finishing.
                if await !parts.shutDown() { work.cancel() }
            }
        }
        if case .failure(let error) = await work.result, !(error is CancellationError) { throw error }
    }

    func runUntilCancelled(_ parts: RunningParts) async throws {
        signal(SIGPIPE, SIG_IGN)
        let watchdog = notifier.flatMap { notifier in
            notifier.watchdogInterval.map { interval in
                Task { await Watchdog(notifier: notifier, interval: interval, liveness: liveness, probe: { await parts.probe() },
                                      logger: logger).run() }
            }
        }
        defer { watchdog?.cancel() }
        if configuration.tls.insecure {
            logger.warning("auth.insecure is set: the tenant's TLS certificate is NOT verified; anyone on the network path can impersonate it")
        }
        var tls = configuration.tls
        if case .certificate(let settings) = configuration.auth.mode {
            // Every connection carries the device certificate, as the vendor's mTLS clients do: an
            // endpoint that asks for one on all requests (REST, Bayeux, logout) gets it.
            tls.clientCertificate = settings.certificate
        }
        let transport = try CurlTransport(tls: tls)
        defer { transport.shutdown() }
        let credentials: any CredentialProvider
        var tokens: DeviceTokenProvider?
        switch configuration.auth.mode {
        case .basic(let basic):
            credentials = basic
        case .bootstrap(let bootstrap, let interval):
            try FileSystem.makeDirectories(configuration.stateDir, mode: 0o711)
            if !FileSystem.exists(configuration.stateDir + "/credentials.json") {
                notifier?.status("bootstrap: waiting for the operator to accept device \(configuration.device.externalId) in device registration")
            }
            guard let obtained = try await Bootstrap(
                baseURL: configuration.c8y.url, transport: transport, bootstrap: bootstrap, externalId: configuration.device.externalId,
                interval: interval, stateDirectory: configuration.stateDir, logger: logger
            ).obtain() else { return }
            credentials = obtained
        case .certificate(let settings):
            let provider = DeviceTokenProvider(settings: settings.tokenSettings(tenantURL: configuration.c8y.url),
                                               transport: transport, logger: logger)
            credentials = provider
            tokens = provider
        }
        var client = PlatformClient(baseURL: configuration.c8y.url, transport: transport, credentials: credentials,
                                    requestTimeout: configuration.c8y.timeout)
        // Artifacts and plugins' streams on a thread of their own, at a lower priority.
        let bulk = try CurlTransport(tls: tls, background: true)
        defer { bulk.shutdown() }
        client.bulkTransport = bulk
        for (origin, settings) in configuration.oauth2 {
            client.hostCredentials[origin] = OAuth2ClientCredentials(settings: settings, transport: transport, logger: logger)
        }
        var failure: (any Error)?
        do {
            try await runCycle(parts, client: client, tokens: tokens)
        } catch {
            failure = error
        }
        // The session ends with the agent, however it ends: revoke the token so it cannot be misused
        // (seed 000). Detached, as this task is cancelled by then.
        if let tokens { await Task.detached { await tokens.logout() }.value }
        if let failure { throw failure }
    }

    func runCycle(_ parts: RunningParts, client: PlatformClient, tokens: DeviceTokenProvider?) async throws {

        var fingerprints = [configuration.handlers: HandlerDirectoryWatcher.fingerprint(configuration.handlers)]
        let registry = Registry.load(directory: configuration.handlers, catalog: catalog, limits: configuration.limits.declarations)
        fingerprints[configuration.handlers, default: []] += HandlerDirectoryWatcher.programEntries(registry.programs)
        for problem in registry.problems {
            logger.error("handler declaration rejected", metadata: ["problem": "\(problem)"])
        }
        registry.logDormant(logger)
        logger.info("handlers loaded", metadata: [
            "directory": "\(registry.directory)", "operations": "\(registry.supportedOperations.joined(separator: ","))",
        ])

        let state = configuration.stateDir
        try FileSystem.makeDirectories(state, mode: 0o711)
        // The journal's and the outbox's writes and fsyncs happen on a thread of their own.
        let storage = tuning.storage ?? StorageThread()
        defer {
            // What durability cost this run (switchyard-bench reads it).
            logger.notice("stopped", metadata: ["fsyncs": "\(storage.syncs)"])
            if tuning.storage == nil { storage.finish() }
        }
        let journal = try Journal(directory: state, storage: storage, logger: logger)
        let outbox = try Outbox(directory: state + "/outbox", client: client, backoff: tuning.outboxBackoff, journal: journal,
                                concurrency: max(tuning.outboxConcurrency, 2 * configuration.operations.concurrency), storage: storage,
                                logger: logger)
        await parts.set(outbox: outbox)

        let proxy = startProxy(client: client, state: state)
        defer {
            proxy?.stop()
            FileSystem.remove(state + "/" + PluginProxy.file)
        }

        notifier?.status("registering the device")
        guard let device = await retrying("register the device", { () async throws(PlatformError) in
            try await DeviceRegistration(client: client, configuration: configuration, stateDirectory: state, logger: logger)
                .register(supportedOperations: registry.supportedOperations)
        }) else { return }

        let dispatcher = Dispatcher(registry: registry, journal: journal, outbox: outbox, client: client, device: device,
                                    stateDirectory: state, concurrency: configuration.operations.concurrency,
                                    pluginVariables: proxy?.environment ?? [:], logger: logger)
        await parts.set(dispatcher: dispatcher)
        let reconciler = Reconciler(client: client, dispatcher: dispatcher, agentID: device.id,
                                    backoff: tuning.startupBackoff, logger: logger)
        let diskWatch = StateDiskWatch(directory: state, client: client, deviceID: device.id,
                                       interval: tuning.diskProbeInterval, logger: logger)
        await diskWatch.setOnWritable {
            await dispatcher.settleAll()
            await reconciler.request("state directory writable again")
        }
        await dispatcher.setDiskWatch(diskWatch)

        // Step 5: child devices, each with its own handlers.d/<external id>/.
        var keepers: [(RegistryKeeper, String)] = []
        var reportedChildren: [(String, Registry)] = []
        var monitored: [(id: String, minutes: Int?)] = [(device.id, configuration.device.requiredInterval)]
        for child in await childDevices() {
            let directory = configuration.handlers + "/" + child.externalId
            fingerprints[directory] = HandlerDirectoryWatcher.fingerprint(directory)
            let childRegistry = Registry.loadOptional(directory: directory, catalog: catalog, limits: configuration.limits.declarations)
            fingerprints[directory, default: []] += HandlerDirectoryWatcher.programEntries(childRegistry.programs)
            for problem in childRegistry.problems {
                logger.error("handler declaration rejected", metadata: ["child": "\(child.externalId)", "problem": "\(problem)"])
            }
            guard let identity = await retrying("register child device \(child.externalId)", attempts: 5, { () async throws(PlatformError) in
                try await ChildRegistration(client: client, agent: device, logger: logger)
                    .register(child, supportedOperations: childRegistry.supportedOperations)
            }) else {
                logger.error("child device skipped; its operations will be refused", metadata: ["child": "\(child.externalId)"])
                continue
            }
            await dispatcher.update(registry: childRegistry, for: identity.id, externalId: child.externalId)
            reportedChildren.append((identity.id, childRegistry))
            monitored.append((identity.id, child.requiredInterval))
            let keeper = RegistryKeeper(registry: childRegistry, advertised: childRegistry.supportedOperations, catalog: catalog,
                                        dispatcher: dispatcher, client: client, deviceID: identity.id, logger: logger,
                                        optional: true, limits: configuration.limits.declarations,
                                        report: { [self] in await report($0, of: identity.id, outbox: outbox, client: client, state: state) })
            keepers.append((keeper, directory))
        }

        // Step 6: operations that were running when the agent (or the device) went down.
        guard let executing = await retrying("query EXECUTING operations", { () async throws(PlatformError) in
            try await client.operations(agentID: device.id, status: "EXECUTING")
        }) else { return }
        await dispatcher.recover(executingOnPlatform: executing)
        await report(registries: [(device.id, registry)] + reportedChildren, outbox: outbox, client: client, state: state)
        let housekeeping = Housekeeping(stateDirectory: state, journal: journal, retention: tuning.retention, logger: logger)
        await dispatcher.setHousekeeping(housekeeping)

        // From here on every part runs as a service of one group, started in this order and stopped
        // in the reverse one: stop listening, stop watching, let running operations finish (the
        // proxy serves them until then), then let the outbox empty, within operations.shutdownGrace.
        var services: [AgentService] = []
        if let tokens { services.append(AgentService("token refresher", loop: { await tokens.keepFresh() })) }
        services.append(AgentService("outbox", loop: { try await outbox.run() }, finish: { await outbox.waitUntilEmpty() }))
        if let tokens, case .certificate(let settings) = configuration.auth.mode {
            let watch = CertificateWatch(settings: settings, provider: tokens, client: client, deviceID: device.id, logger: logger)
            services.append(AgentService("certificate watch", loop: { await watch.run(interval: tuning.certificateCheckInterval) }))
        }
        if let proxy { services.append(AgentService("plugin proxy", loop: {}, finish: { await BlockingPool.run { proxy.stop() } })) }
        services.append(AgentService("dispatcher", loop: { await dispatcher.run() }, finish: {
            await dispatcher.drain()
            if Task.isCancelled { logger.warning("shutdown grace period over; stopping what still runs (settled at the next start)") }
        }))
        let heartbeat = Heartbeat(client: client, devices: monitored, quietOverride: tuning.heartbeatAfter, logger: logger)
        if !heartbeat.devices.isEmpty { services.append(AgentService("availability heartbeat", loop: { await heartbeat.run() })) }
        // In the background: thousands of old directories must not delay the subscription.
        services.append(AgentService("housekeeping", loop: {
            await withDiscardingTaskGroup { group in group.addTask(priority: .background) { await housekeeping.prune() } }
        }))

        // handlers.d is live: changes (and SIGHUP) reload it; alarms name invalid files.
        let keeper = RegistryKeeper(registry: registry, advertised: registry.supportedOperations, catalog: catalog,
                                    dispatcher: dispatcher, client: client, deviceID: device.id, logger: logger,
                                    limits: configuration.limits.declarations,
                                    report: { [self] in await report($0, of: device.id, outbox: outbox, client: client, state: state) })
        for (keeper, directory) in [(keeper, registry.directory)] + keepers {
            await keeper.sync()
            let watcher = HandlerDirectoryWatcher(directory: directory, interval: tuning.reloadInterval,
                                                  initial: fingerprints[directory], retry: min(tuning.reloadInterval, .seconds(1)),
                                                  fileEvents: tuning.fileEvents)
            services.append(AgentService("handlers.d watcher \(directory)", loop: {
                await watcher.run(programs: { await keeper.registry.programs }, changed: { await keeper.reload() },
                                  tick: { await keeper.sync() })
            }))
        }

        // Subscribe first; each (re)subscription then queries PENDING (and EXECUTING), so nothing
        // falls between the two. An interrupted long-poll and a timer do the same: a lost answer
        // or a lost final status is found there.
        services.append(AgentService("reconciler", loop: { await reconciler.runPeriodically(every: configuration.operations.reconcileInterval) }))
        let listener = BayeuxListener(client: client, channel: "/\(device.id)", configuration: tuning.bayeux,
                                      liveness: liveness, logger: logger)
        services.append(AgentService("notification listener", loop: {
            notifier?.status("subscribing to operations of device \(device.id)")
            await listener.run(onSubscribed: {
                notifier?.notify(["READY=1", "STATUS=handling operations of device \(device.id) (\(configuration.device.externalId))"])
                await reconciler.request("subscribed")
            }, onInterrupted: {
                await reconciler.request("long-poll interrupted")
            }, onRetry: { _, delay in
                notifier?.status("reconnecting: a notification request failed; retrying in \(delay.readable)")
            }, onMessage: { item in
                await dispatcher.submit(item, source: .notification)
            })
        }))

        var groupConfiguration = ServiceGroupConfiguration(services: services.map { .init(service: $0) }, logger: logger)
        groupConfiguration.maximumGracefulShutdownDuration = configuration.operations.shutdownGrace
        let group = ServiceGroup(configuration: groupConfiguration)
        guard await parts.set(group: group) else { return }
        let ended: Result<Void, any Error>
        do {
            try await group.run()
            ended = .success(())
        } catch {
            ended = .failure(error)
        }
        // Records posted without a wait (acknowledgements) reach the file before the agent stops,
        // unless the disk holds the storage thread up: then the stop is not held back for them.
        _ = await withTimeLimit(.seconds(2)) { await storage.drain() }
        try ended.get()
    }

    /// Starts the plugin proxy and records its URL and secret for `switchyard token` (mode 0600);
    /// without it (port taken, or `proxy.port: off`) plugins simply get no proxy variables.
    func startProxy(client: PlatformClient, state: String) -> PluginProxy? {
        guard let port = configuration.proxy.port else { return nil }
        let proxy = PluginProxy(client: client, spoolDirectory: state, maxUpload: configuration.proxy.maxUpload, logger: logger)
        do {
            try proxy.start(port: port)
            let record: JSONValue = ["url": .string(proxy.url), "secret": .string(proxy.secret)]
            // Written again at every start: it need not survive a power cut (no fsync on the way to the subscription).
            try FileSystem.writeAtomically(state + "/" + PluginProxy.file, record.encoded(), mode: 0o600, durable: false)
        } catch {
            logger.error("the plugin proxy is not available; plugins get no SWITCHYARD_PROXY_URL", metadata: ["error": "\(error)"])
            proxy.stop()
            return nil
        }
        logger.info("plugin proxy listening", metadata: ["url": "\(proxy.url)"])
        return proxy
    }

    /// Lets every compiled handler report its device's current state (configuration, software, …).
    func report(registries: [(deviceID: String, registry: Registry)], outbox: Outbox, client: PlatformClient, state: String) async {
        for (deviceID, registry) in registries {
            await report(registry.declarations, of: deviceID, outbox: outbox, client: client, state: state)
        }
    }

    /// Lets the compiled handlers among `declarations` report the state of device `deviceID`.
    func report(_ declarations: [HandlerDeclaration], of deviceID: String, outbox: Outbox, client: PlatformClient, state: String) async {
        let directory = state + "/reports"
        try? FileSystem.makeDirectories(directory, mode: 0o700)
        for declaration in declarations {
            let context = ReportContext(deviceID: deviceID, directory: directory, outbox: outbox, client: client)
            if case .exec(let spec) = declaration.kind, spec.handlerOptions != nil {
                await reportThroughExecutable(spec, declaration: declaration, context: context)
                continue
            }
            guard case .swift(let name, let handler) = declaration.kind else { continue }
            do {
                try await handler.report(context: context)
            } catch {
                logger.warning("handler could not report the device's state",
                               metadata: ["handler": "\(name)", "declaration": "\(declaration.location)", "error": "\(error)"])
            }
        }
    }

    /// A compiled handler built as its own executable reports with phase `report`: its inventory,
    /// event, measurement and alarm directives concern the device, as a compiled handler's calls do.
    func reportThroughExecutable(_ spec: ExecSpec, declaration: HandlerDeclaration, context: ReportContext) async {
        let (directives, sink) = AsyncStream.makeStream(of: Directive.self)
        let applying = Task {
            for await directive in directives {
                do {
                    switch directive {
                    case .inventory(let fragments): try await context.updateInventory(fragments)
                    case .alarm(let type, let severity, let text, _):
                        try await context.raiseAlarm(type: type, severity: AlarmSeverity(rawValue: severity) ?? .major, text: text)
                    case .clearAlarm(let type): try await context.clearAlarm(type: type)
                    case .event(let type, let text, let fragments):
                        var event = fragments
                        event["source"] = ["id": .string(context.deviceID)]
                        event["type"] = .string(type)
                        event["text"] = .string(text)
                        event["time"] = .string(timestamp())
                        try await context.outbox.enqueue(.createEvent(.object(event)))
                    default: break
                    }
                } catch {
                    logger.warning("report directive failed", metadata: ["declaration": "\(declaration.location)", "error": "\(error)"])
                }
            }
        }
        let environment = ["SWITCHYARD_PHASE": "report", "SWITCHYARD_DEVICE_ID": context.deviceID, "SWITCHYARD_STATE_DIR": context.directory,
                           "SWITCHYARD_FRAGMENT": declaration.operation].merging(spec.handlerEnvironment) { first, _ in first }
        let result = await ExecRunner().run(spec, operation: .null, environment: environment, timeout: .seconds(60),
                                            workingDirectory: context.directory, logFile: context.directory + "/report.log",
                                            user: geteuid() == 0 ? spec.user : nil, templated: false, stdin: [],
                                            onDirective: { sink.yield($0) })
        sink.finish()
        await applying.value
        if result.ending != .exited(0) {
            logger.warning("handler could not report the device's state", metadata: [
                "handler": "\(declaration.handlerName)", "declaration": "\(declaration.location)",
                "error": "\(result.outcome(program: spec.command[0]))",
            ])
        }
    }

    /// The parts the watchdog probes and a graceful shutdown stops, once they exist.
    actor RunningParts {
        private var dispatcher: Dispatcher?
        private var outbox: Outbox?
        private var group: ServiceGroup?
        private var stopping = false

        func set(dispatcher: Dispatcher) { self.dispatcher = dispatcher }
        func set(outbox: Outbox) { self.outbox = outbox }

        /// Takes the group that runs the services; `false` when the agent is stopping already.
        func set(group: ServiceGroup) -> Bool {
            guard !stopping else { return false }
            self.group = group
            return true
        }

        /// Returns once the dispatcher and the outbox answer (the watchdog's probe).
        func probe() async {
            let (dispatcher, outbox) = (self.dispatcher, self.outbox)
            await dispatcher?.ping()
            await outbox?.ping()
        }

        /// Shuts the services down gracefully; `false` while start-up is still under way (no group yet).
        func shutDown() async -> Bool {
            stopping = true
            guard let group else { return false }
            await group.triggerGracefulShutdown()
            return true
        }
    }

    /// The configured child devices and those the discovery command reports (first one wins per external id).
    func childDevices() async -> [AgentConfiguration.ChildDevice] {
        var children = configuration.children
        if let command = configuration.childDiscovery {
            children += await discoverChildren(command, logger: logger)
        }
        var seen = Set<String>()
        return children.filter { seen.insert($0.externalId).inserted && $0.externalId != configuration.device.externalId }
    }

    /// Retries a platform call with backoff until it succeeds, the task is cancelled, or `attempts`
    /// are used up (`nil` for the last two).
    func retrying<T: Sendable>(_ what: String, attempts: Int = .max, _ body: () async throws(PlatformError) -> T) async -> T? {
        var attempt = 0
        while !Task.isCancelled {
            do {
                return try await body()
            } catch where error.isCancellation {
                return nil
            } catch {
                attempt += 1
                if attempt >= attempts || (attempts != .max && !error.isRetryable) {
                    logger.error("cannot \(what); giving up", metadata: ["error": "\(error)"])
                    return nil
                }
                let delay = tuning.startupBackoff.delay(attempt: attempt)
                // A wrong password must not fill the journal, nor go unsaid.
                if tuning.startupBackoff.isLogged(attempt: attempt) {
                    var metadata: Logger.Metadata = ["error": "\(error)", "retryIn": "\(delay.readable)", "attempt": "\(attempt)",
                                                     "backoffCeiling": "\(tuning.startupBackoff.maximum.readable)"]
                    if error.status == 401 || error.status == 403 {
                        metadata["hint"] = "the tenant refused the device's credentials: check auth.* (switchyard config check)"
                    }
                    logger.error("cannot \(what); retrying", metadata: metadata)
                }
                notifier?.status("cannot \(what); retrying in \(delay.readable)")
                do { try await Task.sleep(for: delay) } catch { return nil }
            }
        }
        return nil
    }
}
