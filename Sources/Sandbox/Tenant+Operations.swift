import FoundationEssentials
import JSONSupport

/// Device control: operations and their status rules.
extension Tenant {
    // MARK: Operations

    /// Creates a PENDING operation (the platform side) and notifies subscribed agents.
    public func createOperation(_ body: JSONValue) -> JSONValue? {
        guard let deviceID = body["deviceId"]?.idValue, managedObjects[deviceID] != nil else { return nil }
        let id = newID()
        var operation = body.objectValue ?? [:]
        operation["id"] = .string(id)
        operation["deviceId"] = .string(deviceID)
        operation["status"] = "PENDING"
        operation["creationTime"] = .string(Self.now())
        operations[id] = .object(operation)
        operationOrder.append(id)
        statusHistory[id] = [["status": "PENDING", "time": .string(Self.now())]]
        recordStatus(id, "PENDING")
        originals[id] = .object(operation)
        deliver(.object(operation))
        return .object(operation)
    }

    /// Sends an operation's notification to subscribers again, as first sent (a duplicate delivery).
    public func redeliver(_ id: String) {
        if let operation = originals[id] { deliver(operation) }
    }

    public func operation(_ id: String) -> JSONValue? { operations[id] }

    /// Every status the operation went through with its time (`status`, `time`, optional `failureReason`).
    public func history(of id: String) -> [JSONValue] { statusHistory[id] ?? [] }

    func agentID(of deviceID: String) -> String {
        if managedObjects[deviceID]?["com_cumulocity_model_Agent"] != nil { return deviceID }
        for (id, object) in managedObjects {
            let children = object["childDevices"]?["references"]?.arrayValue ?? []
            if children.contains(where: { $0["managedObject"]?["id"]?.idValue == deviceID }) { return id }
        }
        return deviceID
    }

    func queryOperations(agentID: String?, deviceID: String?, status: String?) -> [JSONValue] {
        operationOrder.compactMap { operations[$0] }.filter { operation in
            let device = operation["deviceId"]?.idValue ?? ""
            if let status, operation["status"]?.stringValue != status { return false }
            if let deviceID, device != deviceID { return false }
            if let agentID, self.agentID(of: device) != agentID { return false }
            return true
        }
    }

    enum UpdateResult { case updated(JSONValue), notFound, rejected(String) }

    static let transitions: [String: Set<String>] = ["PENDING": ["EXECUTING"], "EXECUTING": ["SUCCESSFUL", "FAILED"]]

    /// Applies a status update. A platform user may also cancel a PENDING operation (PENDING →
    /// FAILED with a `failureReason`), as the platform allows; a device may not.
    func updateOperation(_ id: String, _ body: JSONValue, byPlatformUser: Bool = false) -> UpdateResult {
        guard let current = operations[id] else { return .notFound }
        var changes = body.objectValue ?? [:]
        changes["id"] = nil
        changes["deviceId"] = nil
        if let next = changes["status"]?.stringValue {
            let from = current["status"]?.stringValue ?? "PENDING"
            let cancel = byPlatformUser && from == "PENDING" && next == "FAILED"
            guard cancel || Self.transitions[from]?.contains(next) == true else {
                return .rejected("status cannot change from \(from) to \(next)")
            }
            var entry: [String: JSONValue] = ["status": .string(next), "time": .string(Self.now())]
            if let reason = changes["failureReason"] { entry["failureReason"] = reason }
            statusHistory[id, default: []].append(.object(entry))
        }
        let updated = current.merging(.object(changes))
        operations[id] = updated
        if let next = changes["status"]?.stringValue { recordStatus(id, next) }
        return .updated(updated)
    }

    /// Removes the operations that match (`DELETE /devicecontrol/operations`); how many went.
    func deleteOperations(matching keep: (JSONValue) -> Bool) -> Int {
        let gone = operationOrder.filter { operations[$0].map(keep) ?? false }
        for id in gone { operations[id] = nil }
        operationOrder.removeAll { operations[$0] == nil }
        return gone.count
    }

}
