import FoundationEssentials
import JSONSupport

/// Identity, inventory and device credentials.
extension Tenant {
    // MARK: Identity and inventory

    func lookup(type: String, externalId: String) -> String? { externalIDs["\(type)/\(externalId)"] }

    func register(type: String, externalId: String, for id: String) -> Bool {
        guard managedObjects[id] != nil else { return false }
        externalIDs["\(type)/\(externalId)"] = id
        return true
    }

    /// The managed object with its availability, as the platform computes it (device-management
    /// reference, "Device availability"): `c8y_Availability {lastMessage, status}` for a device with
    /// `c8y_RequiredAvailability` — MAINTENANCE for a `responseInterval` ≤ 0, AVAILABLE while its
    /// last event, measurement, alarm or update of itself is younger than the interval, else UNAVAILABLE.
    public func managedObject(_ id: String) -> JSONValue? {
        guard let object = managedObjects[id] else { return nil }
        guard let minutes = object["c8y_RequiredAvailability"]?["responseInterval"]?.intValue else { return object }
        let last = lastMessage[id]
        let status = minutes <= 0 ? "MAINTENANCE"
            : last.map { Int64(Date().timeIntervalSince1970) - $0.seconds < minutes * 60 } == true ? "AVAILABLE" : "UNAVAILABLE"
        var availability: [String: JSONValue] = ["status": .string(status)]
        if let last { availability["lastMessage"] = .string(last.text) }
        return object.merging(["c8y_Availability": .object(availability)])
    }

    /// A message from `device` that shows it is alive.
    func heardFrom(_ device: String?) {
        guard let device else { return }
        lastMessage[device] = (Int64(Date().timeIntervalSince1970), Self.now())
    }

    /// The managed objects of a type, in order of creation.
    public func managedObjects(type: String) -> [JSONValue] {
        managedObjects.values.filter { $0["type"]?.stringValue == type }.sorted { ($0["id"]?.idValue ?? "") < ($1["id"]?.idValue ?? "") }
    }

    /// The bodies of every PUT to a managed object, in order.
    public func updates(of id: String) -> [JSONValue] { putHistory[id] ?? [] }

    /// The managed object registered for an external id.
    public func device(externalIdType: String = "c8y_Serial", externalId: String) -> JSONValue? {
        lookup(type: externalIdType, externalId: externalId).flatMap { managedObjects[$0] }
    }

    func createManagedObject(_ body: JSONValue, owner: String? = nil) -> JSONValue {
        let id = newID()
        var object = body.objectValue ?? [:]
        object["id"] = .string(id)
        if let owner { object["owner"] = .string(owner) }
        object["creationTime"] = .string(Self.now())
        object["lastUpdated"] = .string(Self.now())
        for collection in ["childDevices", "childAssets", "deviceParents", "assetParents"] {
            object[collection] = ["references": []]
        }
        managedObjects[id] = .object(object)
        return .object(object)
    }

    func updateManagedObject(_ id: String, _ body: JSONValue) -> JSONValue? {
        guard let current = managedObjects[id] else { return nil }
        putHistory[id, default: []].append(body)
        heardFrom(id)
        var updated = current.merging(body)
        if case .object(var members) = updated {
            members["id"] = .string(id)
            members["owner"] = current["owner"]
            members["lastUpdated"] = .string(Self.now())
            updated = .object(members)
        }
        managedObjects[id] = updated
        return updated
    }

    /// Adds a child device reference to a parent; `false` when either does not exist.
    func addChild(_ childID: String, to parentID: String, kind: String = "childDevices") -> Bool {
        guard var parent = managedObjects[parentID]?.objectValue, let child = managedObjects[childID] else { return false }
        var references = parent[kind]?["references"]?.arrayValue ?? []
        if !references.contains(where: { $0["managedObject"]?["id"]?.idValue == childID }) {
            references.append(["managedObject": ["id": .string(childID), "name": child["name"] ?? .null]])
        }
        parent[kind] = ["references": .array(references)]
        managedObjects[parentID] = .object(parent)
        return true
    }

    /// A parent's references of one kind (`childDevices`, `childAssets`, `childAdditions`); `nil` without the parent.
    func children(of parentID: String, kind: String) -> [JSONValue]? {
        guard let parent = managedObjects[parentID] else { return nil }
        return parent[kind]?["references"]?.arrayValue ?? []
    }

    /// Removes a reference; whether it was there.
    func removeChild(_ childID: String, from parentID: String, kind: String) -> Bool {
        guard var parent = managedObjects[parentID]?.objectValue else { return false }
        let references = parent[kind]?["references"]?.arrayValue ?? []
        let kept = references.filter { $0["managedObject"]?["id"]?.idValue != childID }
        guard kept.count < references.count else { return false }
        parent[kind] = ["references": .array(kept)]
        managedObjects[parentID] = .object(parent)
        return true
    }

    /// Removes an external id; whether it existed.
    func deleteExternalID(type: String, value: String) -> Bool {
        externalIDs.removeValue(forKey: "\(type)/\(value)") != nil
    }

    // MARK: Device credentials (seed step 0)


    /// Accepts a device in the device registration: its next credentials request is answered.
    public func accept(deviceId: String) {
        accepted.insert(deviceId)
    }

    /// Issues credentials to an accepted device (once), or `nil` (404) while it is not accepted.
    func issueCredentials(for deviceId: String) -> JSONValue? {
        credentialRequests += 1
        guard accepted.remove(deviceId) != nil else { return nil }
        let username = "device_" + deviceId
        var generator = SystemRandomNumberGenerator()
        let password = String((0..<20).map { _ in "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789".randomElement(using: &generator) ?? "x" })
        deviceUsers[settings.tenantID + "/" + username] = password
        recordSecret(password)
        return ["id": .string(deviceId), "tenantId": .string(settings.tenantID), "username": .string(username), "password": .string(password)]
    }

    /// Whether `user:password` may use the platform routes (the device user or an issued device user;
    /// the bootstrap user only for the credentials request).
    func authorized(user: String, password: String, credentialsRequest: Bool) -> Bool {
        if credentialsRequest {
            return password == settings.bootstrapPassword
                && [settings.bootstrapTenantID + "/" + settings.bootstrapUsername, settings.bootstrapUsername].contains(user)
        }
        if password == settings.password && [settings.tenantID + "/" + settings.username, settings.username].contains(user) { return true }
        if isPlatformUser(user, password: password) { return true }
        return deviceUsers[user] == password
    }

    /// Every managed object, oldest first.
    func managedObjectList() -> [JSONValue] {
        Self.oldestFirst(managedObjects.values)
    }

    /// Documents in the order their ids were given out (ids are increasing numbers).
    static func oldestFirst(_ documents: some Sequence<JSONValue>) -> [JSONValue] {
        documents.sorted { (Int($0["id"]?.idValue ?? "") ?? 0) < (Int($1["id"]?.idValue ?? "") ?? 0) }
    }

    /// The external ids bound to a managed object.
    func externalIDs(of id: String) -> [(type: String, value: String)] {
        externalIDs.filter { $0.value == id }.keys.sorted().compactMap { key in
            guard let slash = key.firstIndex(of: "/") else { return nil }
            return (String(key[..<slash]), String(key[key.index(after: slash)...]))
        }
    }


    /// Whether these are the platform user's credentials (`<tenant>/<user>` or `<user>`).
    nonisolated func isPlatformUser(_ user: String, password: String) -> Bool {
        password == settings.platformPassword
            && [settings.tenantID + "/" + settings.platformUsername, settings.platformUsername].contains(user)
    }

    /// Removes a managed object and its external ids; whether it existed.
    func deleteManagedObject(_ id: String) -> Bool {
        guard managedObjects.removeValue(forKey: id) != nil else { return false }
        externalIDs = externalIDs.filter { $0.value != id }
        return true
    }

}
