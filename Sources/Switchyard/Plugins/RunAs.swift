#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Who an executable handler runs as (`user:` in its declaration, when the agent runs as root).
struct RunAs: Sendable, Equatable {
    let name: String
    let uid: uid_t
    let gid: gid_t

    /// Looks a user up in the system's user database.
    static func lookup(_ name: String) -> RunAs? {
        guard let entry = getpwnam(name) else { return nil }
        return RunAs(name: name, uid: entry.pointee.pw_uid, gid: entry.pointee.pw_gid)
    }
}
