@_exported public import JSONSupport
import FoundationEssentials

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// One device operation as a handler sees it.
public struct Operation: Sendable {
    /// The platform's operation id.
    public let id: String
    /// The managed object id of the device the operation targets (the agent or one of its children).
    public let deviceId: String
    /// The target device's external id, when known.
    public let externalId: String?
    /// The fragment that selected this handler, e.g. `c8y_Restart`.
    public let fragment: String
    /// The whole operation as the platform sent it.
    public let json: JSONValue

    public init(id: String, deviceId: String, externalId: String?, fragment: String, json: JSONValue) {
        self.id = id
        self.deviceId = deviceId
        self.externalId = externalId
        self.fragment = fragment
        self.json = json
    }

    /// The value of the selecting fragment (`json[fragment]`), `.null` when absent.
    public var payload: JSONValue { json[fragment] ?? .null }
}

/// Why a handler is being called.
public enum Phase: String, Sendable {
    /// The first run of the operation.
    case execute
    /// The operation was running when the agent or the device restarted; finish what was started.
    case resume
}

/// How a handler ended an operation.
public enum Outcome: Sendable, Equatable {
    /// SUCCESSFUL; `result` fragments are merged into the final status update.
    case successful(result: [String: JSONValue] = [:])
    /// FAILED with a reason a person can act on; `result` fragments are merged too.
    case failed(reason: String, result: [String: JSONValue] = [:])
    /// The device must restart to go on: the runtime restarts it through its `c8y_Restart` handler and
    /// then calls ``OperationHandler/resume(_:context:)``. Only for declarations marked `resumable: true`.
    case restartRequired

    public static var successful: Outcome { .successful(result: [:]) }
    public static func failed(_ reason: String) -> Outcome { .failed(reason: reason, result: [:]) }
}

/// The current time as the platform writes it: ISO 8601 in UTC with milliseconds
/// (`2026-12-01T09:30:00.000Z`), for the `time` of fragments a handler reports.
public func platformTimestamp() -> String {
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    return platformTimestamp(seconds: Int64(now.tv_sec), nanoseconds: Int(now.tv_nsec))
}

/// A time (`seconds` since 1970-01-01 UTC, plus `nanoseconds`) as ``platformTimestamp()`` writes it,
/// the milliseconds truncated, as `Date.ISO8601FormatStyle(includingFractionalSeconds: true)` does.
/// Plain arithmetic: the formatter costs a hundred times more, and the agent stamps every log line.
public func platformTimestamp(seconds: Int64, nanoseconds: Int) -> String {
    let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
    let secondOfDay = Int(seconds - days * 86_400)
    // The civil date of a day count (days since 1970-01-01), in 400-year eras of 146,097 days
    // whose years start on March 1st, so that the leap day ends a year.
    let shifted = days + 719_468
    let era = (shifted >= 0 ? shifted : shifted - 146_096) / 146_097
    let dayOfEra = shifted - era * 146_097
    let yearOfEra = (dayOfEra - dayOfEra / 1_460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
    let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
    let monthFromMarch = (5 * dayOfYear + 2) / 153
    let day = Int(dayOfYear - (153 * monthFromMarch + 2) / 5 + 1)
    let month = Int(monthFromMarch < 10 ? monthFromMarch + 3 : monthFromMarch - 9)
    let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)

    var bytes: [UInt8] = []
    bytes.reserveCapacity(24)
    func digits(_ value: Int, _ count: Int) {
        var divisor = 1
        for _ in 1..<count { divisor *= 10 }
        while divisor > 0 {
            bytes.append(UInt8(ascii: "0") + UInt8(value / divisor % 10))
            divisor /= 10
        }
    }
    if year < 0 { bytes.append(UInt8(ascii: "-")) }
    digits(Int(abs(year)), max(4, String(abs(year)).count))
    bytes.append(UInt8(ascii: "-")); digits(month, 2)
    bytes.append(UInt8(ascii: "-")); digits(day, 2)
    bytes.append(UInt8(ascii: "T")); digits(secondOfDay / 3_600, 2)
    bytes.append(UInt8(ascii: ":")); digits(secondOfDay / 60 % 60, 2)
    bytes.append(UInt8(ascii: ":")); digits(secondOfDay % 60, 2)
    bytes.append(UInt8(ascii: ".")); digits(nanoseconds / 1_000_000, 3)
    bytes.append(UInt8(ascii: "Z"))
    return String(decoding: bytes, as: UTF8.self)
}
