import Cumulocity
import HandlerKit
import JSONSupport
import Logging

/// Seed step 5: child devices are created (or updated) in the inventory and linked under the agent.
struct ChildRegistration {
    let client: PlatformClient
    let agent: DeviceIdentity
    let logger: Logger

    func register(_ child: AgentConfiguration.ChildDevice, supportedOperations: [String]) async throws(PlatformError) -> DeviceIdentity {
        var advertised = [SupportedOperations.fragment: SupportedOperations.value(supportedOperations)]
        if let minutes = child.requiredInterval { advertised[RequiredAvailability.fragment] = RequiredAvailability.value(minutes) }
        let type = agent.externalIdType
        if let id = try await client.managedObjectID(externalIdType: type, externalId: child.externalId) {
            let changed = changedFragments(advertised, in: try await client.managedObject(id: id))
            if !changed.isEmpty { try await client.updateManagedObject(id: id, fragments: changed) }
            let parent = try await client.managedObject(id: agent.id)
            let linked = parent["childDevices"]?["references"]?.arrayValue?.contains { $0["managedObject"]?["id"]?.idValue == id } ?? false
            if !linked { try await client.addChildDevice(parentID: agent.id, childID: id) }
            logger.info("child device found", metadata: ["child": "\(child.externalId)", "device": "\(id)"])
            return DeviceIdentity(id: id, externalId: child.externalId, externalIdType: type)
        }
        let created = try await client.createManagedObject(.object(advertised.merging([
            "name": .string(child.name ?? child.externalId),
            "type": .string(child.type ?? "switchyard_ChildDevice"),
            "c8y_IsDevice": [:],
        ]) { $1 }))
        // createManagedObject refuses an answer without an id.
        let id = created["id"]?.idValue ?? ""
        try await client.registerExternalID(type: type, externalId: child.externalId, managedObjectID: id)
        try await client.addChildDevice(parentID: agent.id, childID: id)
        logger.notice("child device created", metadata: ["child": "\(child.externalId)", "device": "\(id)"])
        return DeviceIdentity(id: id, externalId: child.externalId, externalIdType: type)
    }
}

/// Runs the `childDiscovery` command and reads the child devices it prints (a JSON array of
/// `{externalId, name, type}`). Problems are logged; what could be read is returned.
func discoverChildren(_ command: [String], timeout: Duration = .seconds(30), logger: Logger) async -> [AgentConfiguration.ChildDevice] {
    guard let program = command.first else { return [] }
    // The one process launcher (own process group, time limit, captured output).
    let result = await runTool(command, timeout: timeout)
    guard result.exitCode == 0 else {
        logger.error("child discovery failed", metadata: [
            "command": "\(program)", "reason": "\(result.exitCode.map { "exit status \($0)" } ?? result.detail)",
            "stderr": "\(result.exitCode == nil ? "" : result.detail)",
        ])
        return []
    }
    let output = result.output
    guard let list = (try? JSONValue.parse(output))?.arrayValue else {
        logger.error("child discovery printed something other than a JSON array",
                     metadata: ["command": "\(program)", "output": "\(JSONValue.excerpt(Array(output.utf8)))"])
        return []
    }
    var children: [AgentConfiguration.ChildDevice] = []
    for item in list {
        switch AgentConfiguration.ChildDevice.parse(item) {
        case .success(let child): children.append(child)
        case .failure(let error): logger.error("child discovery: entry skipped", metadata: ["problem": "\(error.detail)"])
        }
    }
    return children
}
