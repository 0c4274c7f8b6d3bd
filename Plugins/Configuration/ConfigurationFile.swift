import HandlerKit

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// One configuration file the device lets the platform read and replace, and the one way it is
/// replaced, whether the new content arrives as text (`c8y_Configuration`) or as a download
/// (`c8y_DownloadConfigFile`, a device profile's configuration step):
///
/// 1. the new content is staged in a file beside the target (same file system), given the declared
///    owner, group and mode, or else those of the current file, and fsynced;
/// 2. the current file is kept as `<path>.previous` (a hard link: no copy, whatever its size);
/// 3. the staged file is renamed over the target and the directory fsynced: readers see the old or
///    the new file, never a mix, even after a power cut (2 fsyncs);
/// 4. `apply` runs; if it fails, the previous file is put back the same way and `apply` runs again,
///    and the operation fails saying both.
struct ConfigurationFile: Sendable {
    let type: String
    let path: String
    let owner: String?
    let group: String?
    let mode: mode_t?
    let apply: [String]?
    let applyTimeout: Duration
    let maxBytes: Int64

    var staged: String { path + ".switchyard-new" }
    var previous: String { path + ".previous" }
    var fileName: String { path.split(separator: "/").last.map(String.init) ?? type }

    /// Replaces the file with `staged` (already written, not yet synced) and applies it; the
    /// failure reason, or `nil` when the new file is in place and applied.
    func install(_ context: any HandlerContext) async -> String? {
        let file = self
        let hadPrevious: Bool
        do {
            hadPrevious = try await context.blocking { () throws(InstallError) in try file.swapIn() }
        } catch {
            unlink(staged)
            return error.description
        }
        await context.log("installed \(path)" + (hadPrevious ? " (the previous version kept as \(previous))" : ""))
        guard let apply else { return nil }
        let result = await context.runCommand(apply, input: nil, environment: [:], timeout: applyTimeout)
        guard !result.succeeded else { return nil }
        let reason = "applying the configuration failed: \(result.failureDescription)"
        guard hadPrevious else { return reason + "; there was no previous configuration to restore" }
        do {
            try await context.blocking { () throws(InstallError) in try file.restorePrevious() }
        } catch {
            return reason + "; restoring the previous configuration also failed: \(error)"
        }
        let again = await context.runCommand(apply, input: nil, environment: [:], timeout: applyTimeout)
        return reason + "; " + (again.succeeded ? "the previous configuration was restored and applied"
            : "the previous configuration was restored, but applying it failed too: \(again.failureDescription)")
    }

    /// Writes `bytes` as the staged file (for text configuration).
    func stage(_ bytes: [UInt8], _ context: any HandlerContext) async -> String? {
        let path = staged
        do {
            try await context.blocking { () throws(InstallError) in
                let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
                guard fd >= 0 else { throw InstallError("cannot write \(path): \(errorText())") }
                defer { close(fd) }
                var offset = 0
                while offset < bytes.count {
                    let written = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                    if written < 0 && errno == EINTR { continue }
                    guard written > 0 else { throw InstallError("cannot write \(path): \(errorText())") }
                    offset += written
                }
            }
            return nil
        } catch {
            unlink(path)
            return error.description
        }
    }

    /// Steps 1–3; whether there was a file before (now `previous`).
    func swapIn() throws(InstallError) -> Bool {
        var current = stat()
        let exists = stat(path, &current) == 0
        let uid = try owner.map { name throws(InstallError) in try userID(name) } ?? (exists ? current.st_uid : nil)
        let gid = try group.map { name throws(InstallError) in try groupID(name) } ?? (exists ? current.st_gid : nil)
        let mode = self.mode ?? (exists ? current.st_mode & 0o7777 : 0o644)
        let fd = open(staged, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw InstallError("cannot open the new \(type) configuration \(staged): \(errorText())") }
        defer { close(fd) }
        if uid != nil || gid != nil {
            guard fchown(fd, uid ?? UInt32.max, gid ?? UInt32.max) == 0 else {
                throw InstallError("cannot give \(path) its owner \(owner ?? "") \(group ?? ""): \(errorText())")
            }
        }
        guard fchmod(fd, mode) == 0 else { throw InstallError("cannot set the mode of \(path): \(errorText())") }
        guard fsync(fd) == 0 else { throw InstallError("cannot sync \(staged): \(errorText())") }
        if exists { try keepPrevious() }
        guard rename(staged, path) == 0 else { throw InstallError("cannot replace \(path): \(errorText())") }
        syncDirectory()
        return exists
    }

    /// `previous` becomes a second name of the current file.
    func keepPrevious() throws(InstallError) {
        let temporary = previous + ".switchyard-tmp"
        unlink(temporary)
        guard link(path, temporary) == 0, rename(temporary, previous) == 0 else {
            let reason = errorText()
            unlink(temporary)
            throw InstallError("cannot keep the previous configuration as \(previous): \(reason)")
        }
    }

    /// The previous file back in place (it stays `previous` too).
    func restorePrevious() throws(InstallError) {
        let temporary = path + ".switchyard-restore"
        unlink(temporary)
        guard link(previous, temporary) == 0, rename(temporary, path) == 0 else {
            let reason = errorText()
            unlink(temporary)
            throw InstallError(reason)
        }
        syncDirectory()
    }

    func syncDirectory() {
        let slash = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? "."
        let directory = open(slash.isEmpty ? "/" : slash, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directory >= 0 { fsync(directory); close(directory) }
    }
}

struct InstallError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

func errorText() -> String { String(cString: strerror(errno)) }

func userID(_ name: String) throws(InstallError) -> uid_t {
    if let number = uid_t(name) { return number }
    var entry = passwd()
    var result: UnsafeMutablePointer<passwd>?
    var buffer = [CChar](repeating: 0, count: 4096)
    guard getpwnam_r(name, &entry, &buffer, buffer.count, &result) == 0, result != nil else {
        throw InstallError("no user named \(name) on this device")
    }
    return entry.pw_uid
}

func groupID(_ name: String) throws(InstallError) -> gid_t {
    if let number = gid_t(name) { return number }
    var entry = group()
    var result: UnsafeMutablePointer<group>?
    var buffer = [CChar](repeating: 0, count: 4096)
    guard getgrnam_r(name, &entry, &buffer, buffer.count, &result) == 0, result != nil else {
        throw InstallError("no group named \(name) on this device")
    }
    return entry.gr_gid
}

/// The content of a (small) file as text; `nil` when it cannot be read.
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
