import Cumulocity
import JSONSupport
import Logging

/// Seed steps 1–4: find the device by its external id; create and register it, or update it.
struct DeviceRegistration {
    let client: PlatformClient
    let configuration: AgentConfiguration
    let stateDirectory: String
    let logger: Logger

    /// Remembers a created device until its external id is registered, so a crash between the two
    /// steps does not create a second device at the next start.
    var pendingFile: String { stateDirectory + "/created-device.json" }

    func register(supportedOperations: [String]) async throws(PlatformError) -> DeviceIdentity {
        let device = configuration.device
        if let id = try await client.managedObjectID(externalIdType: device.externalIdType, externalId: device.externalId) {
            try await update(id: id, supportedOperations: supportedOperations)
            FileSystem.remove(pendingFile)
            return DeviceIdentity(id: id, externalId: device.externalId, externalIdType: device.externalIdType)
        }
        var id: String? = nil
        if let bytes = try? FileSystem.read(pendingFile), let saved = try? JSONValue.parse(bytes),
           let savedID = saved["id"]?.idValue, saved["externalId"]?.stringValue == device.externalId {
            do {
                _ = try await client.managedObject(id: savedID)
                id = savedID
                logger.notice("registering the device created by the previous run", metadata: ["device": "\(savedID)"])
            } catch where error.status == 404 {
                id = nil
            }
        }
        if id == nil {
            let created = try await client.createManagedObject(creationBody(supportedOperations: supportedOperations))
            id = created["id"]?.idValue
            if let id {
                try? FileSystem.writeAtomically(pendingFile, JSONValue.object(["id": .string(id), "externalId": .string(device.externalId)]).encoded(), mode: 0o600)
            }
            logger.notice("device created", metadata: ["device": "\(id ?? "?")"])
        }
        // createManagedObject refuses an answer without an id; this only keeps the compiler certain.
        guard let id else {
            throw PlatformError.malformed("POST", "/inventory/managedObjects", status: 201, body: [], "the created device has no id")
        }
        try await client.registerExternalID(type: device.externalIdType, externalId: device.externalId, managedObjectID: id)
        FileSystem.remove(pendingFile)
        logger.notice("device registered", metadata: ["device": "\(id)", "externalId": "\(device.externalIdType)/\(device.externalId)"])
        return DeviceIdentity(id: id, externalId: device.externalId, externalIdType: device.externalIdType)
    }

    var agentFragment: JSONValue {
        ["name": "switchyard", "version": .string(Agent.version), "url": "https://github.com/switchyard-agent/switchyard"]
    }

    func creationBody(supportedOperations: [String]) -> JSONValue {
        let device = configuration.device
        var body: [String: JSONValue] = [
            "name": .string(device.name ?? device.externalId),
            "type": .string(device.type),
            "c8y_IsDevice": [:],
            "com_cumulocity_model_Agent": [:],
            SupportedOperations.fragment: SupportedOperations.value(supportedOperations),
            "c8y_Agent": agentFragment,
        ]
        if !device.hardware.isEmpty {
            body["c8y_Hardware"] = .object(device.hardware.mapValues(JSONValue.string))
        }
        if let minutes = device.requiredInterval { body[RequiredAvailability.fragment] = RequiredAvailability.value(minutes) }
        return .object(body)
    }

    /// Step 4: a PUT with what may have changed; `name` is never part of it.
    func update(id: String, supportedOperations: [String]) async throws(PlatformError) {
        let current = try await client.managedObject(id: id)
        var wanted: [String: JSONValue] = [SupportedOperations.fragment: SupportedOperations.value(supportedOperations),
                                           "c8y_Agent": agentFragment]
        let hardware = configuration.device.hardware
        if !hardware.isEmpty { wanted["c8y_Hardware"] = .object(hardware.mapValues(JSONValue.string)) }
        if let minutes = configuration.device.requiredInterval { wanted[RequiredAvailability.fragment] = RequiredAvailability.value(minutes) }
        var fragments = changedFragments(wanted, in: current)
        if current["com_cumulocity_model_Agent"] == nil { fragments["com_cumulocity_model_Agent"] = [:] }
        guard !fragments.isEmpty else {
            logger.info("device found; inventory up to date", metadata: ["device": "\(id)"])
            return
        }
        try await client.updateManagedObject(id: id, fragments: fragments)
        logger.info("device found; inventory updated", metadata: ["device": "\(id)", "fragments": "\(fragments.keys.sorted().joined(separator: ","))"])
    }
}

/// What a device advertises it can do: the fragments of its declarations (`c8y_SupportedOperations`).
enum SupportedOperations {
    static let fragment = "c8y_SupportedOperations"

    static func value(_ operations: [String]) -> JSONValue { .array(operations.map(JSONValue.string)) }
}

/// The fragments of `wanted` whose value in the managed object `current` differs (what a PUT must send).
func changedFragments(_ wanted: [String: JSONValue], in current: JSONValue) -> [String: JSONValue] {
    wanted.filter { current[$0.key] != $0.value }
}

/// Availability monitoring (device-management reference, "Device availability"): the platform marks
/// a device UNAVAILABLE, and raises `c8y_UnavailabilityAlarm`, when it sent nothing (event,
/// measurement, alarm, or an update of its own managed object) for `responseInterval` minutes.
enum RequiredAvailability {
    static let fragment = "c8y_RequiredAvailability"

    static func value(_ minutes: Int) -> JSONValue { ["responseInterval": .int(Int64(minutes))] }
}
