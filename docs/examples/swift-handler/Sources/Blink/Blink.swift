import HandlerKit

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// `acme_Blink` (`{times}`): blinks the device's LED `times` times (1–20, default 3) by writing
/// 1 and 0 to its brightness file, reports the last count as `acme_Blink.lastTimes` in the
/// inventory, and returns `acme_Blink.blinked: true`.
///
/// Options: `led` (the brightness file, required), `intervalMilliseconds` (default 100).
public struct Blink: OperationHandler {
    let led: String
    let interval: Duration

    struct Options: Decodable {
        var led: String
        var intervalMilliseconds: Int?
    }

    public init(options: JSONValue) throws(HandlerOptionsError) {
        let options = try options.decode(Options.self)
        guard options.led.hasPrefix("/") else { throw HandlerOptionsError("options.led must be the absolute path of the LED's brightness file") }
        led = options.led
        interval = .milliseconds(options.intervalMilliseconds ?? 100)
    }

    public func execute(_ operation: Operation, context: any HandlerContext) async throws -> Outcome {
        let times = operation.payload["times"]?.intValue ?? 3
        guard (1...20).contains(times) else { return .failed("acme_Blink.times must be from 1 to 20, found \(times)") }
        for blink in 1...times {
            guard await context.blocking({ [led] in Self.set(led, on: true) }) else {
                return .failed("cannot write \(led): \(String(cString: strerror(errno)))")
            }
            try await Task.sleep(for: interval)
            _ = await context.blocking { [led] in Self.set(led, on: false) }
            try await Task.sleep(for: interval)
            await context.log("blink \(blink) of \(times)")
        }
        try await context.updateInventory(["acme_Blink": ["lastTimes": .int(Int64(times))]])
        return .successful(result: ["acme_Blink": ["times": .int(Int64(times)), "blinked": true]])
    }

    public func report(context: any DeviceContext) async throws {
        try await context.updateInventory(["acme_Blink": ["led": .string(led)]])
    }

    /// Writes `1` or `0` to the brightness file (a blocking write: called through `context.blocking`).
    static func set(_ path: String, on: Bool) -> Bool {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return write(fd, on ? "1\n" : "0\n", 2) == 2
    }
}
