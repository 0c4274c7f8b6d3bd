import Synchronization
import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A failed file-system call, with the path and the system's reason.
public struct FileSystemError: Error, CustomStringConvertible, Sendable {
    public let operation: String
    public let path: String
    public let code: Int32
    /// Why, when it is not a system error (`code` is then 0).
    public let detail: String?

    public init(operation: String, path: String, code: Int32) {
        self.operation = operation
        self.path = path
        self.code = code
        self.detail = nil
    }

    public init(operation: String, path: String, detail: String) {
        self.operation = operation
        self.path = path
        self.code = 0
        self.detail = detail
    }

    /// The disk (or the quota) is full: the write may succeed once space returns.
    public var isDiskFull: Bool { code == ENOSPC || code == EDQUOT }

    public var description: String { "\(operation) \(path): \(detail ?? String(cString: strerror(code)))" }
}

/// Makes temporary names unique among concurrent writers in this process.
private let temporaryCounter = Atomic<UInt64>(0)

/// The few file operations the runtime needs, done with POSIX calls so that durability
/// (fsync of files and of their directories) is explicit.
public enum FileSystem {
    /// Reads a whole file, or `nil` when it does not exist.
    public static func read(_ path: String) throws(FileSystemError) -> [UInt8]? {
        let file: FileDescriptor
        do {
            file = try FileDescriptor.open(FilePath(path), .readOnly, options: [.closeOnExec])
        } catch {
            let code = (error as? Errno) ?? .ioError
            if code == .noSuchFileOrDirectory { return nil }
            throw FileSystemError(operation: "open", path: path, code: code.rawValue)
        }
        defer { try? file.close() }
        return try readToEnd(file, path: path)
    }

    /// Reads the rest of an open file, `sizeHint` bytes at a time (EINTR is retried by swift-system).
    static func readToEnd(_ file: FileDescriptor, path: String, limit: Int = .max, sizeHint: Int = 64 << 10) throws(FileSystemError) -> [UInt8] {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: sizeHint)
        while bytes.count <= limit {
            let count: Int
            do {
                count = try chunk.withUnsafeMutableBytes { try file.read(into: $0) }
            } catch {
                throw FileSystemError(operation: "read", path: path, code: (error as? Errno)?.rawValue ?? EIO)
            }
            if count == 0 { return bytes }
            bytes += chunk[0..<count]
        }
        return bytes
    }

    /// Reads a file that may be hostile (a handler declaration anyone with write access to the
    /// directory dropped there): it must be a regular file (a symbolic link is followed and its target
    /// checked), is opened without blocking (a FIFO cannot stall the caller), and may hold at most
    /// `limit` bytes. `nil` when it does not exist.
    public static func readRegularFile(_ path: String, limit: Int) throws(FileSystemError) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC)
        if fd < 0 {
            if errno == ENOENT { return nil }
            throw FileSystemError(operation: "open", path: path, code: errno)
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw FileSystemError(operation: "stat", path: path, code: errno) }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw FileSystemError(operation: "read", path: path, detail: "not a regular file (\(kindName(info.st_mode)))")
        }
        guard info.st_size <= limit else {
            throw FileSystemError(operation: "read", path: path, detail: "\(info.st_size) bytes, more than the limit of \(limit)")
        }
        let bytes = try readToEnd(FileDescriptor(rawValue: fd), path: path, limit: limit, sizeHint: max(1, Int(info.st_size) + 1))
        // The file grew while being read: its size at open counts, anything more is over the limit.
        guard bytes.count <= limit else {
            throw FileSystemError(operation: "read", path: path, detail: "more than the limit of \(limit) bytes")
        }
        return bytes
    }

    /// What kind of file a mode describes, for messages.
    static func kindName(_ mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFDIR: return "a directory"
        case S_IFIFO: return "a FIFO"
        case S_IFCHR: return "a character device"
        case S_IFBLK: return "a block device"
        case S_IFSOCK: return "a socket"
        case S_IFLNK: return "a symbolic link"
        default: return "a regular file"
        }
    }

    public static func readText(_ path: String) throws(FileSystemError) -> String? {
        try read(path).map { String(decoding: $0, as: UTF8.self) }
    }

    /// Replaces a file atomically and durably: write a temporary file beside it, fsync, rename, fsync the directory.
    /// With `durable: false` nothing is synced: the file is whole or absent after a crash of the
    /// process, but may be lost in a power cut.
    /// `sync` replaces `fsync` for the file and the directory (a ``StorageThread`` counts its syncs).
    public static func writeAtomically(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o644,
                                       durable: Bool = true, sync: ((Int32) -> Bool)? = nil) throws(FileSystemError) {
        let syncFile: (Int32) -> Bool = sync ?? { fsync($0) == 0 }
        let temporary = path + ".tmp-\(getpid())-\(temporaryCounter.add(1, ordering: .relaxed).newValue)"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else { throw FileSystemError(operation: "create", path: temporary, code: errno) }
        do throws(FileSystemError) {
            try writeAll(fd, bytes, path: temporary)
            if durable, !syncFile(fd) { throw FileSystemError(operation: "fsync", path: temporary, code: errno) }
            fchmod(fd, mode)
            close(fd)
        } catch {
            close(fd)
            unlink(temporary)
            throw error
        }
        guard rename(temporary, path) == 0 else {
            let code = errno
            unlink(temporary)
            throw FileSystemError(operation: "rename", path: path, code: code)
        }
        if durable { syncDirectory(of: path, sync: syncFile) }
    }

    /// Replaces a file's content in place, not atomically and not synced, never through a symbolic
    /// or hard link: for a file whose only reader starts after the write (or finds it whole, a single
    /// small write). It is not truncated before the write, only after it if it was longer: ext4
    /// writes back a file truncated to zero as soon as it is closed, which is I/O for nothing here.
    public static func overwrite(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o644) throws(FileSystemError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, mode)
        guard fd >= 0 else { throw FileSystemError(operation: "create", path: path, code: errno) }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, isPlainFileOfItsOwn(info) else {
            throw FileSystemError(operation: "create", path: path, detail: "not a plain file of its own")
        }
        try writeAll(fd, bytes, path: path)
        if Int(info.st_size) > bytes.count, ftruncate(fd, off_t(bytes.count)) != 0 {
            throw FileSystemError(operation: "truncate", path: path, code: errno)
        }
    }

    /// Empties a file in place, never through a symbolic or hard link: the file stays, for the next
    /// ``overwrite(_:_:mode:)``, instead of being removed and made again. Whether it is now an empty
    /// plain file of its own (and `owner`'s, when given); `false` when it is absent or anything else.
    @discardableResult
    public static func empty(_ path: String, ownedBy owner: uid_t? = nil) -> Bool {
        let fd = open(path, O_WRONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, isPlainFileOfItsOwn(info), owner.map({ $0 == info.st_uid }) ?? true else { return false }
        return info.st_size == 0 || ftruncate(fd, 0) == 0
    }

    /// A regular file with one name: what is written in place may not reach another file through a link.
    private static func isPlainFileOfItsOwn(_ info: stat) -> Bool {
        (info.st_mode & S_IFMT) == S_IFREG && info.st_nlink == 1
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8], path: String) throws(FileSystemError) {
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if written < 0 {
                if errno == EINTR { continue }
                throw FileSystemError(operation: "write", path: path, code: errno)
            }
            offset += written
        }
    }

    /// Fsyncs the directory holding `path`, so a rename or unlink in it survives a power cut.
    public static func syncDirectory(of path: String, sync: ((Int32) -> Bool)? = nil) {
        let directory = parent(of: path)
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return }
        if let sync { _ = sync(fd) } else { fsync(fd) }
        close(fd)
    }

    public static func parent(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    /// Creates a directory and its parents (like `mkdir -p`).
    public static func makeDirectories(_ path: String, mode: mode_t = 0o755) throws(FileSystemError) {
        // Most calls find the parents there: one mkdir instead of one per component.
        if mkdir(path, mode) == 0 || errno == EEXIST { return }
        var current = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            current += "/" + component
            if mkdir(current, mode) != 0 && errno != EEXIST {
                throw FileSystemError(operation: "mkdir", path: current, code: errno)
            }
        }
    }

    /// Names in a directory (without `.` and `..`), sorted; `nil` when it does not exist.
    public static func list(_ path: String) throws(FileSystemError) -> [String]? {
        guard let dir = opendir(path) else {
            if errno == ENOENT { return nil }
            throw FileSystemError(operation: "opendir", path: path, code: errno)
        }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    public static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }
    public static func isExecutable(_ path: String) -> Bool { access(path, X_OK) == 0 }

    public static func isDirectory(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
    }

    /// When a file was last modified, in seconds since the epoch.
    public static func modificationTime(_ path: String) -> Int? {
        var info = stat()
        return stat(path, &info) == 0 ? Int(info.st_mtim.tv_sec) : nil
    }

    /// Permission bits of a file, or `nil` when it cannot be examined.
    public static func mode(_ path: String) -> mode_t? {
        var info = stat()
        return stat(path, &info) == 0 ? info.st_mode & 0o7777 : nil
    }

    /// Identifies a file's current content cheaply (inode, size, modification time): it changes when
    /// the file is replaced or rewritten. `nil` when the file cannot be examined.
    public static func fingerprint(_ path: String) -> String? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return "\(info.st_ino):\(info.st_size):\(info.st_mtim.tv_sec).\(info.st_mtim.tv_nsec)"
    }

    public static func remove(_ path: String) {
        unlink(path)
    }

    /// Removes a file or a directory tree; a symbolic link is removed, never followed.
    public static func removeTree(_ path: String) {
        var info = stat()
        if lstat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR {
            for name in (try? list(path)) ?? [] { removeTree(path + "/" + name) }
            rmdir(path)
        } else {
            unlink(path)
        }
    }

    /// An absolute, normalised form of `path` (no `.` or `..`), relative paths taken from `base`.
    public static func resolve(_ path: String, relativeTo base: String) -> String {
        if path.hasPrefix("/") { return normalised(path) }
        if base.isEmpty || base == "." { return normalised(absolute(path)) }
        return normalised(absolute(base + "/" + path))
    }

    /// Removes `.` and `..` components and repeated slashes from an absolute path.
    public static func normalised(_ path: String) -> String {
        var parts: [Substring] = []
        for part in path.split(separator: "/") {
            if part == "." { continue }
            if part == ".." { _ = parts.popLast() } else { parts.append(part) }
        }
        return "/" + parts.joined(separator: "/")
    }

    /// `path` made absolute against the working directory (not normalised beyond that).
    public static func absolute(_ path: String) -> String {
        if path.hasPrefix("/") { return path }
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        guard getcwd(&buffer, buffer.count) != nil else { return path }
        let cwd = String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return path == "." ? cwd : cwd + "/" + (path.hasPrefix("./") ? String(path.dropFirst(2)) : path)
    }
}
