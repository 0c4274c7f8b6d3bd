import COpenSSL
import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A file that could not be digested.
struct DigestError: Error, CustomStringConvertible {
    let path: String
    let detail: String
    var description: String { "cannot compute the SHA-256 of \(path): \(detail)" }
}

/// The SHA-256 of a file as lower-case hex, read in 1 MiB blocks (never the whole file in memory).
func sha256Hex(ofFile path: String) throws(DigestError) -> String {
    let file: FileDescriptor
    do {
        file = try FileDescriptor.open(FilePath(path), .readOnly, options: [.closeOnExec])
    } catch {
        throw DigestError(path: path, detail: String(cString: strerror((error as? Errno)?.rawValue ?? EIO)))
    }
    defer { try? file.close() }
    guard let context = EVP_MD_CTX_new() else { throw DigestError(path: path, detail: "EVP_MD_CTX_new failed") }
    defer { EVP_MD_CTX_free(context) }
    guard EVP_DigestInit_ex(context, EVP_sha256(), nil) == 1 else { throw DigestError(path: path, detail: "EVP_DigestInit_ex failed") }
    var block = [UInt8](repeating: 0, count: 1 << 20)
    while true {
        let count: Int
        do {
            count = try block.withUnsafeMutableBytes { try file.read(into: $0) }
        } catch {
            throw DigestError(path: path, detail: String(cString: strerror((error as? Errno)?.rawValue ?? EIO)))
        }
        if count == 0 { break }
        _ = block.withUnsafeBytes { EVP_DigestUpdate(context, $0.baseAddress, count) }
    }
    var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
    var length: UInt32 = 0
    guard EVP_DigestFinal_ex(context, &digest, &length) == 1 else { throw DigestError(path: path, detail: "EVP_DigestFinal_ex failed") }
    let hex = Array("0123456789abcdef")
    return String(digest.prefix(Int(length)).flatMap { [hex[Int($0 >> 4)], hex[Int($0 & 0xF)]] })
}
