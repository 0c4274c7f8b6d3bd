import FoundationEssentials
import JSONSupport

/// Measurements, events and alarms.
extension Tenant {
    // MARK: Measurements, events, alarms

    public func eventList(type: String? = nil) -> [JSONValue] {
        events.filter { type == nil || $0["type"]?.stringValue == type }
    }

    public func measurementList(type: String? = nil) -> [JSONValue] {
        measurements.filter { type == nil || $0["type"]?.stringValue == type }
    }

    func addMeasurement(_ body: JSONValue) -> JSONValue {
        let stored = body.merging(["id": .string(newID())])
        measurements.append(stored)
        heardFrom(body["source"]?["id"]?.idValue)
        return stored
    }

    func addEvent(_ body: JSONValue) -> JSONValue {
        let stored = body.merging(["id": .string(newID()), "creationTime": .string(Self.now())])
        events.append(stored)
        heardFrom(body["source"]?["id"]?.idValue)
        return stored
    }

    /// Raises an alarm; an ACTIVE alarm of the same source and type is counted instead of duplicated.
    func addAlarm(_ body: JSONValue) -> JSONValue {
        let source = body["source"]?["id"]?.idValue
        heardFrom(source)
        let type = body["type"]?.stringValue
        if let existingID = alarmOrder.first(where: { id in
            let alarm = alarms[id]
            return alarm?["source"]?["id"]?.idValue == source && alarm?["type"]?.stringValue == type
                && alarm?["status"]?.stringValue != "CLEARED"
        }), let existing = alarms[existingID] {
            let updated = existing.merging(["count": .int((existing["count"]?.intValue ?? 1) + 1)])
            alarms[existingID] = updated
            return updated
        }
        let id = newID()
        let stored = body.merging(["id": .string(id), "count": 1, "status": body["status"] ?? "ACTIVE"])
        alarms[id] = stored
        alarmOrder.append(id)
        return stored
    }

    public func alarmList(source: String? = nil, status: String? = nil, type: String? = nil) -> [JSONValue] {
        alarmOrder.compactMap { alarms[$0] }.filter { alarm in
            (source == nil || alarm["source"]?["id"]?.idValue == source)
                && (status == nil || alarm["status"]?.stringValue == status)
                && (type == nil || alarm["type"]?.stringValue == type)
        }
    }

    func updateAlarm(_ id: String, _ body: JSONValue) -> JSONValue? {
        guard let current = alarms[id] else { return nil }
        let updated = current.merging(body).merging(["id": .string(id)])
        alarms[id] = updated
        return updated
    }

    /// One measurement, event or alarm by id.
    func document(kind: String, id: String) -> JSONValue? {
        switch kind {
        case "measurement": measurements.first { $0["id"]?.idValue == id }
        case "event": events.first { $0["id"]?.idValue == id }
        case "alarm": alarms[id]
        default: nil
        }
    }


    /// Updates an event's mutable fields (`text`, custom fragments); `nil` when there is none with the id.
    func updateEvent(_ id: String, _ body: JSONValue) -> JSONValue? {
        guard let index = events.firstIndex(where: { $0["id"]?.idValue == id }) else { return nil }
        var changes = body.objectValue ?? [:]
        for key in ["id", "source", "type", "time", "creationTime"] { changes[key] = nil }
        events[index] = events[index].merging(.object(changes))
        return events[index]
    }

    /// Removes a measurement or an event; whether it existed.
    func deleteDocument(kind: String, id: String) -> Bool {
        switch kind {
        case "measurement":
            let before = measurements.count
            measurements.removeAll { $0["id"]?.idValue == id }
            return measurements.count < before
        case "event":
            let before = events.count
            events.removeAll { $0["id"]?.idValue == id }
            return events.count < before
        default:
            return false
        }
    }

    /// Sets the status of every alarm `select` picks (`PUT /alarm/alarms`); how many changed.
    func updateAlarms(status: String, where select: (JSONValue) -> Bool) -> Int {
        var changed = 0
        for id in alarmOrder where alarms[id].map(select) == true {
            alarms[id] = alarms[id]?.merging(["status": .string(status)])
            changed += 1
        }
        return changed
    }

}
