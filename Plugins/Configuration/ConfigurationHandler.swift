import HandlerKit

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Text configuration: `c8y_Configuration` writes `c8y_Configuration.config` to a file and applies it;
/// `c8y_SendConfiguration` reports the file as it is. The current configuration is reported at start.
///
/// Options: `file` (required), `apply` (argv run after writing; optional), `maxBytes` (default 1 MiB),
/// `applyTimeout` (seconds, default 60).
/// The file is replaced atomically (temporary file beside it, fsync, rename) keeping its owner and
/// mode; the previous version is kept as `<file>.previous`. If `apply` fails, the previous file is
/// restored, `apply` runs again, and the operation fails with the reason.
public struct ConfigurationHandler: OperationHandler {
    let file: String
    let apply: [String]?
    let maxBytes: Int
    let applyTimeout: Duration

    struct Options: Decodable {
        var file: String
        var apply: [String]?
        var maxBytes: Int?
        var applyTimeout: Int64?
    }

    public init(options: JSONValue) throws(HandlerOptionsError) {
        let options = try options.decode(Options.self)
        guard options.file.hasPrefix("/") else {
            throw HandlerOptionsError("options.file must be the absolute path of the configuration file")
        }
        file = options.file
        if let apply = options.apply, apply.first?.hasPrefix("/") != true {
            throw HandlerOptionsError("options.apply must be a list starting with an absolute program path")
        }
        apply = options.apply
        maxBytes = options.maxBytes ?? 1 << 20
        guard maxBytes > 0 else { throw HandlerOptionsError("options.maxBytes must be positive") }
        let seconds = options.applyTimeout ?? 60
        guard seconds > 0 else { throw HandlerOptionsError("options.applyTimeout must be a positive number of seconds") }
        applyTimeout = .seconds(seconds)
    }

    public func execute(_ operation: Operation, context: any HandlerContext) async throws -> Outcome {
        if operation.fragment == "c8y_SendConfiguration" {
            guard let current = readAll(file) else { return .failed("cannot read \(file): \(errorText())") }
            try await context.updateInventory(["c8y_Configuration": ["config": .string(current)]])
            return .successful
        }
        guard let text = operation.payload["config"]?.stringValue else {
            return .failed("c8y_Configuration.config is missing or not text")
        }
        guard text.utf8.count <= maxBytes else {
            return .failed("the configuration is \(text.utf8.count) bytes; this device accepts at most \(maxBytes)")
        }
        let previous = readAll(file)
        if let previous {
            guard replaceAtomically(file + ".previous", with: previous, like: file) else {
                return .failed("cannot keep the previous configuration as \(file).previous: \(errorText())")
            }
        }
        guard replaceAtomically(file, with: text, like: file) else {
            return .failed("cannot write \(file): \(errorText())")
        }
        await context.log("wrote \(text.utf8.count) bytes to \(file)")
        if let apply {
            let result = await context.runCommand(apply, timeout: applyTimeout)
            if !result.succeeded {
                let reason = "applying the configuration failed: \(result.failureDescription)"
                guard let previous else {
                    return .failed(reason + "; there was no previous configuration to restore")
                }
                guard replaceAtomically(file, with: previous, like: file) else {
                    return .failed(reason + "; restoring the previous configuration also failed: \(errorText())")
                }
                let again = await context.runCommand(apply, timeout: applyTimeout)
                let restored = again.succeeded ? "the previous configuration was restored and applied"
                    : "the previous configuration was restored, but applying it failed too: \(again.failureDescription)"
                return .failed(reason + "; " + restored)
            }
        }
        try await context.updateInventory(["c8y_Configuration": ["config": .string(text)]])
        return .successful
    }

    public func report(context: any DeviceContext) async throws {
        guard let current = readAll(file) else { return }
        try await context.updateInventory(["c8y_Configuration": ["config": .string(current)]])
    }
}

func errorText() -> String { String(cString: strerror(errno)) }

func readAll(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if count < 0 { if errno == EINTR { continue } else { return nil } }
        if count == 0 { return String(decoding: bytes, as: UTF8.self) }
        bytes += chunk[0..<count]
    }
}

/// Writes `text` to a temporary file beside `path`, fsyncs it, gives it the owner and mode of
/// `reference` (when that exists), renames it over `path` and fsyncs the directory.
func replaceAtomically(_ path: String, with text: String, like reference: String) -> Bool {
    var info = stat()
    let hasReference = stat(reference, &info) == 0
    let temporary = path + ".switchyard-tmp"
    let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, hasReference ? info.st_mode & 0o7777 : 0o644)
    guard fd >= 0 else { return false }
    let bytes = Array(text.utf8)
    var offset = 0
    while offset < bytes.count {
        let written = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        if written < 0 { if errno == EINTR { continue }; close(fd); unlink(temporary); return false }
        offset += written
    }
    if hasReference {
        _ = fchown(fd, info.st_uid, info.st_gid)
        _ = fchmod(fd, info.st_mode & 0o7777)
    }
    guard fsync(fd) == 0 else { close(fd); unlink(temporary); return false }
    close(fd)
    guard rename(temporary, path) == 0 else { unlink(temporary); return false }
    let slash = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? "."
    let directory = open(slash.isEmpty ? "/" : slash, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    if directory >= 0 { fsync(directory); close(directory) }
    return true
}
