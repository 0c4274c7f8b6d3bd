import HandlerKit

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// `c8y_Restart`: records the boot id, runs the reboot command, and after the restart reports
/// SUCCESSFUL if the boot id changed.
///
/// Options: `command` (argv, default `[/sbin/reboot]`), `bootIdFile` (default
/// `/proc/sys/kernel/random/boot_id`), `restartTimeout` (seconds the device may take to go down
/// once the command succeeded; default 300). Declare it `resumable: true`: the agent restarts with
/// the device and calls ``resume(_:context:)``.
public struct RestartHandler: OperationHandler {
    let command: [String]
    let bootIDFile: String
    let restartTimeout: Duration

    struct Options: Decodable {
        var command: [String]?
        var bootIdFile: String?
        var restartTimeout: Int64?
    }

    public init(options: JSONValue) throws(HandlerOptionsError) {
        let options = try options.decode(Options.self)
        command = options.command ?? ["/sbin/reboot"]
        guard command.first?.hasPrefix("/") == true else {
            throw HandlerOptionsError("options.command must be a list: the program (an absolute path), then its arguments")
        }
        bootIDFile = options.bootIdFile ?? "/proc/sys/kernel/random/boot_id"
        let seconds = options.restartTimeout ?? 300
        guard seconds > 0 else { throw HandlerOptionsError("options.restartTimeout must be a positive number of seconds") }
        restartTimeout = .seconds(seconds)
    }

    public func execute(_ operation: Operation, context: any HandlerContext) async throws -> Outcome {
        guard let bootID = readTrimmed(bootIDFile) else {
            return .failed("cannot read the boot id from \(bootIDFile)")
        }
        try await context.saveState(bootID, forKey: "boot_id")
        await context.log("boot id before restart: \(bootID); running \(command.joined(separator: " "))")
        let result = await context.runCommand(command, timeout: .seconds(60))
        guard result.succeeded else {
            return .failed("the reboot command failed: \(result.failureDescription)")
        }
        // The device should go down now, taking the agent with it; the operation then ends in resume().
        try await Task.sleep(for: restartTimeout)
        return .failed("the device did not restart within \(restartTimeout) of the reboot command")
    }

    public func resume(_ operation: Operation, context: any HandlerContext) async throws -> Outcome {
        guard let before = await context.loadState(forKey: "boot_id") else {
            return .failed("the agent restarted before the restart began (no boot id was recorded)")
        }
        guard let now = readTrimmed(bootIDFile) else {
            return .failed("cannot read the boot id from \(bootIDFile)")
        }
        await context.log("boot id after restart: \(now) (before: \(before))")
        return now != before ? .successful : .failed("device did not restart (the agent did, but the boot id is unchanged)")
    }
}

func readTrimmed(_ path: String) -> String? {
    guard let file = fopen(path, "r") else { return nil }
    defer { fclose(file) }
    var buffer = [CChar](repeating: 0, count: 256)
    guard fgets(&buffer, Int32(buffer.count), file) != nil else { return nil }
    let text = String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    let trimmed = text.filter { !$0.isWhitespace }
    return trimmed.isEmpty ? nil : trimmed
}
