import COpenSSL

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A file that could not be digested.
public struct DigestError: Error, CustomStringConvertible {
    public let path: String
    public let detail: String
    public var description: String { "cannot compute the SHA-256 of \(path): \(detail)" }
}

/// The SHA-256 of a file as lower-case hex, read in 1 MiB blocks (never the whole file in memory).
/// Blocking: call it off the cooperative pool.
public func sha256Hex(ofFile path: String) throws(DigestError) -> String {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw DigestError(path: path, detail: String(cString: strerror(errno))) }
    defer { close(fd) }
    guard let context = EVP_MD_CTX_new() else { throw DigestError(path: path, detail: "EVP_MD_CTX_new failed") }
    defer { EVP_MD_CTX_free(context) }
    guard EVP_DigestInit_ex(context, EVP_sha256(), nil) == 1 else { throw DigestError(path: path, detail: "EVP_DigestInit_ex failed") }
    var block = [UInt8](repeating: 0, count: 1 << 20)
    while true {
        let count = block.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if count < 0 && errno == EINTR { continue }
        guard count >= 0 else { throw DigestError(path: path, detail: String(cString: strerror(errno))) }
        if count == 0 { break }
        _ = block.withUnsafeBytes { EVP_DigestUpdate(context, $0.baseAddress, count) }
    }
    var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
    var length: UInt32 = 0
    guard EVP_DigestFinal_ex(context, &digest, &length) == 1 else { throw DigestError(path: path, detail: "EVP_DigestFinal_ex failed") }
    let hex = Array("0123456789abcdef")
    return String(digest.prefix(Int(length)).flatMap { [hex[Int($0 >> 4)], hex[Int($0 & 0xF)]] })
}
