import HandlerKit

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// `c8y_Firmware` (`{name, version, url}`, optional `sha256`): streams the image to disk (resuming an
/// interrupted download), checks its SHA-256 when one is given, and hands it to a firmware installer
/// executable with a small protocol modelled on Mender update modules:
///
/// | call | meaning of exit 0 |
/// | --- | --- |
/// | `install FILE NAME VERSION` (or `install-provided NAME VERSION` for the url `$PROVIDED`) | installed into the inactive slot |
/// | `needs-reboot` | the device must restart to boot the new image (exit 1: it need not) |
/// | `verify` | the running system is good |
/// | `commit` | make the new image permanent |
/// | `rollback` | return to the previous image |
///
/// If the installer asks for a reboot, the handler returns ``Outcome/restartRequired``; after the restart
/// ``resume(_:context:)`` runs `verify`, then `commit` (SUCCESSFUL, `c8y_Firmware` updated) or `rollback`
/// (FAILED with the installer's reason). State that spans the reboot lives in the operation's state
/// directory (``HandlerContext/saveState(_:forKey:)``). A loop breaker fails the operation (after a rollback) once it has been resumed
/// `maxBoots` times, so a device that keeps rebooting does not do so forever.
///
/// Options: `installer` (argv, required), `timeout` (seconds per installer call, default 600),
/// `maxImageBytes` (default 2 GiB), `maxBoots` (default 3), `env` (variables for the installer).
public struct FirmwareHandler: OperationHandler {
    let installer: [String]
    let timeout: Duration
    let maxImageBytes: Int64
    let maxBoots: Int
    let environment: [String: String]

    struct Options: Decodable {
        var installer: [String]
        var timeout: Int64?
        var maxImageBytes: Int64?
        var maxBoots: Int?
        var env: [String: String]?
    }

    public init(options: JSONValue) throws(HandlerOptionsError) {
        let options = try options.decode(Options.self)
        guard options.installer.first?.hasPrefix("/") == true else {
            throw HandlerOptionsError("options.installer must be a list starting with the installer's absolute path")
        }
        installer = options.installer
        let seconds = options.timeout ?? 600
        guard seconds > 0 else { throw HandlerOptionsError("options.timeout must be a positive number of seconds") }
        timeout = .seconds(seconds)
        maxImageBytes = options.maxImageBytes ?? 2 << 30
        maxBoots = options.maxBoots ?? 3
        guard maxImageBytes > 0 else { throw HandlerOptionsError("options.maxImageBytes must be positive") }
        guard maxBoots >= 0 else { throw HandlerOptionsError("options.maxBoots must not be negative") }
        environment = options.env ?? [:]
    }

    struct Request {
        let name: String
        let version: String
        let url: String
        let sha256: String?
        var fragment: JSONValue { ["name": .string(name), "version": .string(version), "url": .string(url)] }
    }

    func request(_ operation: Operation) -> Request? {
        let payload = operation.payload
        guard let name = payload["name"]?.stringValue, !name.isEmpty,
              let version = payload["version"]?.stringValue, !version.isEmpty,
              let url = payload["url"]?.stringValue, !url.isEmpty else { return nil }
        return Request(name: name, version: version, url: url, sha256: payload["sha256"]?.stringValue?.lowercased())
    }

    public func execute(_ operation: Operation, context: any HandlerContext) async throws -> Outcome {
        guard let request = request(operation) else {
            return .failed("c8y_Firmware needs name, version and url")
        }
        var arguments: [String]
        if request.url == "$PROVIDED" {
            arguments = ["install-provided", request.name, request.version]
        } else {
            let image = context.stateDirectory + "/firmware.image"
            let size = try await context.download(request.url, to: image, maxBytes: maxImageBytes)
            await context.log("downloaded \(size) bytes of \(request.name) \(request.version)")
            if let expected = request.sha256 {
                let actual = try await context.sha256(ofFile: image)
                guard actual == expected else {
                    unlink(image)
                    return .failed("the image's SHA-256 is \(actual), not \(expected); nothing was installed")
                }
            }
            arguments = ["install", image, request.name, request.version]
        }
        let installed = await call(arguments, context)
        unlink(context.stateDirectory + "/firmware.image")
        guard installed.succeeded else {
            return .failed("the firmware installer failed to install \(request.name) \(request.version): \(installed.failureDescription)")
        }
        let reboot = await call(["needs-reboot"], context)
        switch reboot.exitCode {
        case 0?:
            try await context.saveState("installed", forKey: "firmware.stage")
            await context.log("installed; restarting the device to boot it")
            return .restartRequired
        case 1?:
            return try await verifyAndCommit(request, context)
        default:
            _ = await call(["rollback"], context)
            return .failed("the firmware installer could not say whether a reboot is needed: \(reboot.failureDescription)")
        }
    }

    public func resume(_ operation: Operation, context: any HandlerContext) async throws -> Outcome {
        guard let request = request(operation) else { return .failed("c8y_Firmware needs name, version and url") }
        guard await context.loadState(forKey: "firmware.stage") == "installed" else {
            return .failed("the agent restarted before the firmware was installed; nothing was changed, try again")
        }
        let boots = (await context.loadState(forKey: "firmware.boots")).flatMap { Int($0) }.map { $0 + 1 } ?? 1
        try await context.saveState(String(boots), forKey: "firmware.boots")
        guard boots <= maxBoots else {
            _ = await call(["rollback"], context)
            return .failed("the device restarted \(boots) times during this firmware update; rolled back to stop a reboot loop")
        }
        return try await verifyAndCommit(request, context)
    }

    func verifyAndCommit(_ request: Request, _ context: any HandlerContext) async throws -> Outcome {
        let verified = await call(["verify"], context)
        guard verified.succeeded else {
            let rollback = await call(["rollback"], context)
            let rolled = rollback.succeeded ? "rolled back" : "rollback failed too: \(rollback.failureDescription)"
            return .failed("the new firmware failed verification (\(verified.failureDescription)); \(rolled)")
        }
        let committed = await call(["commit"], context)
        guard committed.succeeded else {
            _ = await call(["rollback"], context)
            return .failed("committing the firmware failed: \(committed.failureDescription); rolled back")
        }
        try await context.updateInventory(["c8y_Firmware": request.fragment])
        return .successful
    }

    func call(_ arguments: [String], _ context: any HandlerContext) async -> CommandResult {
        await context.runCommand(installer + arguments, input: nil, environment: environment, timeout: timeout)
    }
}
