import Cumulocity
import JSONSupport

/// The alarms the agent raises about itself on one device (invalid handler files, the certificate's
/// expiry, a full state disk), kept as wanted: raised when missing, updated when the text or the
/// severity changed, cleared when no longer wanted.
///
/// What is active on the platform is asked once (the alarms of ``Scope``) and then tracked, so a
/// restart finds the alarms an earlier run left. Sent directly, not through the outbox: they are
/// about the agent's own state, which a full disk may be keeping from the outbox.
actor AgentAlarms {
    /// The alarm types this instance owns.
    enum Scope: Sendable {
        case type(String)
        case prefix(String)

        func contains(_ type: String) -> Bool {
            switch self {
            case .type(let owned): type == owned
            case .prefix(let prefix): type.hasPrefix(prefix)
            }
        }
    }

    struct Alarm: Sendable, Equatable {
        var text: String
        var severity: String
    }

    /// What ``sync(_:)`` changed on the platform.
    enum Change: Sendable, Equatable {
        case raised(String), updated(String), cleared(String)
    }

    let client: PlatformClient
    let device: String
    let scope: Scope
    private var active: [String: (id: String, alarm: Alarm)]?

    init(client: PlatformClient, device: String, scope: Scope) {
        self.client = client
        self.device = device
        self.scope = scope
    }

    /// Makes the platform's active alarms of the scope be exactly `wanted` (type → alarm). A failure
    /// leaves what was done so far recorded; the next call goes on from there.
    @discardableResult
    func sync(_ wanted: [String: Alarm]) async throws(PlatformError) -> [Change] {
        if active == nil {
            let type: String? = if case .type(let type) = scope { type } else { nil }
            var found: [String: (id: String, alarm: Alarm)] = [:]
            for alarm in try await client.alarms(source: device, status: "ACTIVE", type: type) {
                guard let type = alarm["type"]?.stringValue, scope.contains(type), let id = alarm["id"]?.idValue else { continue }
                found[type] = (id, Alarm(text: alarm["text"]?.stringValue ?? "", severity: alarm["severity"]?.stringValue ?? ""))
            }
            active = found
        }
        var changes: [Change] = []
        for (type, alarm) in wanted.sorted(by: { $0.key < $1.key }) where scope.contains(type) {
            if let existing = active?[type] {
                guard existing.alarm != alarm else { continue }
                try await client.updateAlarm(id: existing.id, ["text": .string(alarm.text), "severity": .string(alarm.severity)])
                active?[type] = (existing.id, alarm)
                changes.append(.updated(type))
            } else {
                let created = try await client.createAlarm(alarmBody(device: device, type: type, severity: alarm.severity, text: alarm.text))
                active?[type] = (created["id"]?.idValue ?? "", alarm)
                changes.append(.raised(type))
            }
        }
        for (type, existing) in (active ?? [:]).sorted(by: { $0.key < $1.key }) where wanted[type] == nil {
            if existing.id.isEmpty {
                try await client.send(.clearAlarms(source: device, type: type))
            } else {
                try await client.updateAlarm(id: existing.id, ["status": "CLEARED"])
            }
            active?[type] = nil
            changes.append(.cleared(type))
        }
        return changes
    }
}
