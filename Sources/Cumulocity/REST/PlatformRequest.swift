public import JSONSupport

/// A request the agent sends to the platform on behalf of an operation or a handler: what the
/// outbox stores and ``PlatformClient/send(_:)`` executes.
///
/// Only this type knows the paths, the media types and the platform's rules for what may be sent
/// (an inventory update never carries `name`: the device's name belongs to its users once it
/// exists, seed step 4). Stored as one JSON object, `{"kind": …, …}` (``json``, or `Codable`).
public enum PlatformRequest: Sendable, Hashable {
    /// `PUT /devicecontrol/operations/{id}`: a status update (`status`, `failureReason`, result fragments).
    case updateOperation(id: String, update: JSONValue)
    /// `PUT /inventory/managedObjects/{id}` with these fragments (`name` left out).
    case updateManagedObject(id: String, fragments: [String: JSONValue])
    /// `POST /event/events`
    case createEvent(JSONValue)
    /// `POST /measurement/measurements`
    case createMeasurement(JSONValue)
    /// `POST /alarm/alarms`: raises an alarm (the platform counts a repeated raise of an active one).
    case createAlarm(JSONValue)
    /// Clears the source's ACTIVE alarms of a type: `GET /alarm/alarms?source&type&status=ACTIVE`, then
    /// `PUT /alarm/alarms/{id}` `{"status": "CLEARED"}` for each (the bulk `PUT /alarm/alarms` cannot
    /// select by type). Sending it again clears nothing twice.
    case clearAlarms(source: String, type: String)

    /// The HTTP method and the path of the request (for `clearAlarms`, of its query).
    public var method: String {
        switch self {
        case .updateOperation, .updateManagedObject: "PUT"
        case .createEvent, .createMeasurement, .createAlarm: "POST"
        case .clearAlarms: "GET"
        }
    }

    public var path: String {
        switch self {
        case .updateOperation(let id, _): "/devicecontrol/operations/" + percentEncoded(id)
        case .updateManagedObject(let id, _): "/inventory/managedObjects/" + percentEncoded(id)
        case .createEvent: "/event/events"
        case .createMeasurement: "/measurement/measurements"
        case .createAlarm, .clearAlarms: "/alarm/alarms"
        }
    }

    /// The media type of the body and of the answer asked for (the platform answers POST and PUT
    /// with an empty body unless `Accept` is set).
    public var mediaType: String {
        switch self {
        case .updateOperation: MediaType.operation
        case .updateManagedObject: MediaType.managedObject
        case .createEvent: MediaType.event
        case .createMeasurement: MediaType.measurement
        case .createAlarm: MediaType.alarm
        case .clearAlarms: MediaType.alarmCollection
        }
    }

    /// The body as sent.
    public var body: JSONValue? {
        switch self {
        case .updateOperation(_, let update): return update
        case .updateManagedObject(_, var fragments):
            fragments["name"] = nil  // never from an agent (seed step 4)
            return .object(fragments)
        case .createEvent(let body), .createMeasurement(let body), .createAlarm(let body): return body
        case .clearAlarms: return nil
        }
    }

    /// The device whose availability this request shows (its source, or the managed object it updates).
    public var showsActivityOf: String? {
        switch self {
        case .createEvent(let body), .createMeasurement(let body), .createAlarm(let body): body["source"]?["id"]?.idValue
        case .updateManagedObject(let id, _): id
        default: nil
        }
    }

    /// The operation whose status this request updates.
    public var updatedOperation: String? {
        if case .updateOperation(let id, _) = self { return id }
        return nil
    }

    /// The device and type of the alarms this request raises or clears.
    public var alarm: (source: String, type: String)? {
        switch self {
        case .createAlarm(let body):
            guard let source = body["source"]?["id"]?.idValue, let type = body["type"]?.stringValue else { return nil }
            return (source, type)
        case .clearAlarms(let source, let type): return (source, type)
        default: return nil
        }
    }

    // MARK: Stored form

    /// The request as stored: `{"kind": "updateOperation", "id": …, "body": …}` and alike.
    public var json: JSONValue {
        switch self {
        case .updateOperation(let id, let update): ["kind": "updateOperation", "id": .string(id), "body": update]
        case .updateManagedObject(let id, let fragments): ["kind": "updateManagedObject", "id": .string(id), "body": .object(fragments)]
        case .createEvent(let body): ["kind": "createEvent", "body": body]
        case .createMeasurement(let body): ["kind": "createMeasurement", "body": body]
        case .createAlarm(let body): ["kind": "createAlarm", "body": body]
        case .clearAlarms(let source, let type): ["kind": "clearAlarms", "source": .string(source), "type": .string(type)]
        }
    }

    /// Reads the stored form; `nil` for anything else.
    public init?(json: JSONValue) {
        let body = json["body"]
        switch json["kind"]?.stringValue {
        case "updateOperation":
            guard let id = json["id"]?.stringValue, let body else { return nil }
            self = .updateOperation(id: id, update: body)
        case "updateManagedObject":
            guard let id = json["id"]?.stringValue, let fragments = body?.objectValue else { return nil }
            self = .updateManagedObject(id: id, fragments: fragments)
        case "createEvent":
            guard let body else { return nil }
            self = .createEvent(body)
        case "createMeasurement":
            guard let body else { return nil }
            self = .createMeasurement(body)
        case "createAlarm":
            guard let body else { return nil }
            self = .createAlarm(body)
        case "clearAlarms":
            guard let source = json["source"]?.stringValue, let type = json["type"]?.stringValue else { return nil }
            self = .clearAlarms(source: source, type: type)
        default:
            return nil
        }
    }

    /// Reads a request stored by version 0.2 as `{method, path, body}`; `nil` for one it did not send.
    public init?(method: String, path: String, body: JSONValue) {
        let segments = path.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        switch (method, segments.count > 1 ? segments[1] : "", segments.count) {
        case ("PUT", "devicecontrol", 4) where segments[2] == "operations":
            guard let id = segments[3].removingPercentEncoding else { return nil }
            self = .updateOperation(id: id, update: body)
        case ("PUT", "inventory", 4) where segments[2] == "managedObjects":
            guard let id = segments[3].removingPercentEncoding, let fragments = body.objectValue else { return nil }
            self = .updateManagedObject(id: id, fragments: fragments)
        case ("POST", "event", 3) where segments[2] == "events": self = .createEvent(body)
        case ("POST", "measurement", 3) where segments[2] == "measurements": self = .createMeasurement(body)
        case ("POST", "alarm", 3) where segments[2] == "alarms": self = .createAlarm(body)
        default: return nil
        }
    }
}

extension PlatformRequest: Codable {
    public init(from decoder: any Decoder) throws {
        let json = try JSONValue(from: decoder)
        guard let request = Self(json: json) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath,
                                                    debugDescription: "not a platform request: \(JSONValue.excerpt(json.encoded()))"))
        }
        self = request
    }

    public func encode(to encoder: any Encoder) throws { try json.encode(to: encoder) }
}

extension String {
    /// The text with `%XX` escapes decoded; `nil` when an escape is malformed or the bytes are not UTF-8.
    var removingPercentEncoding: String? {
        var bytes: [UInt8] = []
        var iterator = utf8.makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "%") else { bytes.append(byte); continue }
            guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else { return nil }
            bytes.append(high << 4 | low)
        }
        return String(validating: bytes, as: UTF8.self)
    }
}

private func hexValue(_ byte: UInt8) -> UInt8? {
    switch byte {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
    default: nil
    }
}
