import Cumulocity
import HandlerKit
import Logging

/// Keeps the device's view of its handlers in line with `handlers.d`: reloads the registry into the
/// dispatcher, advertises `c8y_SupportedOperations` when the set changes, and keeps one alarm per
/// invalid declaration file (raised with the file and the error, cleared when the file is fixed or removed).
/// Platform calls that fail are retried at the next check.
actor RegistryKeeper {
    static let alarmPrefix = "switchyard_InvalidHandlerFile_"

    private let directory: String
    private let catalog: [String: any OperationHandler.Type]
    private let dispatcher: Dispatcher
    private let client: PlatformClient
    private let deviceID: String
    private let logger: Logger
    private(set) var registry: Registry
    private var advertised: [String]?
    private let alarms: AgentAlarms
    private var synced = false
    /// A child's directory may be absent: then it simply has no handlers.
    private let optional: Bool

    private let limits: DeclarationReader.Limits
    /// Lets new or changed compiled handlers report the device's state (``OperationHandler/report(context:)``),
    /// as they do at start: a new log type or configuration file is advertised without a restart.
    private let report: @Sendable ([HandlerDeclaration]) async -> Void

    init(registry: Registry, advertised: [String], catalog: [String: any OperationHandler.Type], dispatcher: Dispatcher,
         client: PlatformClient, deviceID: String, logger: Logger, optional: Bool = false,
         limits: DeclarationReader.Limits = .init(), report: @escaping @Sendable ([HandlerDeclaration]) async -> Void = { _ in }) {
        self.report = report
        self.optional = optional
        self.limits = limits
        self.directory = registry.directory
        self.registry = registry
        self.advertised = advertised
        self.catalog = catalog
        self.dispatcher = dispatcher
        self.client = client
        self.deviceID = deviceID
        self.logger = logger
        self.alarms = AgentAlarms(client: client, device: deviceID, scope: .prefix(Self.alarmPrefix))
    }

    /// Re-reads the directory and applies it.
    func reload() async {
        let next = optional ? Registry.loadOptional(directory: directory, catalog: catalog, limits: limits)
                            : Registry.load(directory: directory, catalog: catalog, limits: limits)
        let before = Set(registry.problems.map(\.description))
        for problem in next.problems where !before.contains(problem.description) {
            logger.error("handler declaration rejected", metadata: ["problem": "\(problem)"])
        }
        next.logDormant(logger)
        logger.info("handlers reloaded", metadata: ["operations": "\(next.supportedOperations.joined(separator: ","))"])
        let known = Set(registry.declarations.map { $0.json.encoded() })
        registry = next
        await dispatcher.update(registry: next, for: deviceID)
        synced = false
        await sync()
        await report(next.declarations.filter { !known.contains($0.json.encoded()) })
    }

    /// Brings the platform in line with the registry, if it is not already; whether it is now.
    @discardableResult
    func sync() async -> Bool {
        logger.trace("handlers.d checked", metadata: ["directory": "\(directory)"])
        guard !synced else { return true }
        var ok = true
        if advertised != registry.supportedOperations {
            do {
                try await client.updateManagedObject(id: deviceID, fragments: [
                    SupportedOperations.fragment: SupportedOperations.value(registry.supportedOperations),
                ])
                advertised = registry.supportedOperations
                logger.notice("supported operations updated", metadata: ["operations": "\(registry.supportedOperations.joined(separator: ","))"])
            } catch {
                ok = false
                logger.warning("cannot update c8y_SupportedOperations; will retry", metadata: ["error": "\(error)"])
            }
        }
        do {
            try await syncAlarms()
        } catch {
            ok = false
            logger.warning("cannot update handler file alarms; will retry", metadata: ["error": "\(error)"])
        }
        synced = ok
        return ok
    }

    static func alarmType(for file: String) -> String {
        let name = file.split(separator: "/").last.map(String.init) ?? file
        return alarmPrefix + String(name.map { $0.isLetter || $0.isNumber ? $0 : "_" })
    }

    private func syncAlarms() async throws(PlatformError) {
        var wanted: [String: AgentAlarms.Alarm] = [:]
        for problem in registry.problems where wanted[Self.alarmType(for: problem.file)] == nil {
            wanted[Self.alarmType(for: problem.file)] = .init(text: "invalid handler declaration \(problem)", severity: "MAJOR")
        }
        try await alarms.sync(wanted)
    }
}
