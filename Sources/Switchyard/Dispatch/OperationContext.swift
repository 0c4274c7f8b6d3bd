import Cumulocity
import FoundationEssentials
import HandlerKit

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The managed object the agent runs as, once registered.
public struct DeviceIdentity: Sendable, Equatable {
    public let id: String
    public let externalId: String
    public let externalIdType: String
}

/// The ``HandlerContext`` given to compiled handlers: platform calls go to the operation's target device.
struct OperationContext: HandlerContext {
    let phase: Phase
    let stateDirectory: String
    let logFile: String
    let deviceID: String
    let client: PlatformClient

    func log(_ message: String) async {
        let line = Array((message + "\n").utf8)
        let fd = open(logFile, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return }
        _ = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
    }

    func updateInventory(_ fragments: [String: JSONValue]) async throws {
        try await client.updateManagedObject(id: deviceID, fragments: fragments)
    }

    func sendEvent(type: String, text: String, fragments: [String: JSONValue]) async throws {
        var event = fragments
        event["source"] = ["id": .string(deviceID)]
        event["type"] = .string(type)
        event["text"] = .string(text)
        event["time"] = .string(timestamp())
        try await client.createEvent(.object(event))
    }

    func sendMeasurement(type: String, fragments: [String: JSONValue]) async throws {
        var measurement = fragments
        measurement["source"] = ["id": .string(deviceID)]
        measurement["type"] = .string(type)
        measurement["time"] = .string(timestamp())
        try await client.createMeasurement(.object(measurement))
    }
}

/// The current time as the platform writes it (ISO 8601, UTC, milliseconds).
func timestamp(_ date: Date = Date()) -> String {
    date.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
}
