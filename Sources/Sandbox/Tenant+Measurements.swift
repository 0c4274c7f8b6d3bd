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
        return stored
    }

    func addEvent(_ body: JSONValue) -> JSONValue {
        let stored = body.merging(["id": .string(newID()), "creationTime": .string(Self.now())])
        events.append(stored)
        return stored
    }

    /// Raises an alarm; an ACTIVE alarm of the same source and type is counted instead of duplicated.
    func addAlarm(_ body: JSONValue) -> JSONValue {
        let source = body["source"]?["id"]?.idValue
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

}
