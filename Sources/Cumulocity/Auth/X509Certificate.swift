import COpenSSL
public import FoundationEssentials

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// What the agent needs to know of an X.509 certificate: its subject's common name, its validity
/// and its DER bytes. Parsed with the system's libcrypto (already loaded by libcurl).
public struct X509Certificate: Sendable, Equatable {
    public let der: [UInt8]
    public let commonName: String?
    public let notBefore: Date
    public let notAfter: Date

    /// Every certificate in PEM text, in order.
    /// - Throws: ``CertificateError`` when there is none, or one cannot be parsed.
    public static func parsePEM(_ text: String, source: String) throws(CertificateError) -> [X509Certificate] {
        var certificates: [X509Certificate] = []
        for block in pemBlocks(text) {
            guard let der = Data(base64Encoded: block, options: .ignoreUnknownCharacters), !der.isEmpty else {
                throw CertificateError(path: source, "a CERTIFICATE block is not valid base64")
            }
            certificates.append(try X509Certificate(der: [UInt8](der), source: source))
        }
        guard !certificates.isEmpty else { throw CertificateError(path: source, "no PEM certificate (-----BEGIN CERTIFICATE-----) found") }
        return certificates
    }

    /// The base64 bodies of the `CERTIFICATE` blocks in PEM text (line breaks may have become spaces,
    /// as in an `X-Ssl-Cert-Chain` header).
    public static func pemBlocks(_ text: String) -> [String] {
        let begin = "-----BEGIN CERTIFICATE-----", end = "-----END CERTIFICATE-----"
        var blocks: [String] = []
        var rest = Substring(text)
        while let start = rest.firstRange(of: begin), let stop = rest[start.upperBound...].firstRange(of: end) {
            blocks.append(String(rest[start.upperBound..<stop.lowerBound].filter { !$0.isWhitespace }))
            rest = rest[stop.upperBound...]
        }
        return blocks
    }

    /// Reads every certificate of a PEM file.
    public static func read(file path: String) throws(CertificateError) -> [X509Certificate] {
        guard let bytes = try readFileBytes(path) else { throw CertificateError(path: path, "the file does not exist") }
        return try parsePEM(String(decoding: bytes, as: UTF8.self), source: path)
    }

    public init(der: [UInt8], source: String = "certificate") throws(CertificateError) {
        let parsed: X509Certificate? = der.withUnsafeBufferPointer { buffer in
            var cursor: UnsafePointer<UInt8>? = buffer.baseAddress
            guard let x509 = d2i_X509(nil, &cursor, buffer.count) else { return nil }
            defer { X509_free(x509) }
            guard let notBefore = Self.date(X509_get0_notBefore(x509)), let notAfter = Self.date(X509_get0_notAfter(x509)) else { return nil }
            return X509Certificate(der: der, commonName: Self.commonName(X509_get_subject_name(x509)),
                                   notBefore: notBefore, notAfter: notAfter)
        }
        guard let parsed else { throw CertificateError(path: source, "not a valid X.509 certificate") }
        self = parsed
    }

    private init(der: [UInt8], commonName: String?, notBefore: Date, notAfter: Date) {
        self.der = der
        self.commonName = commonName
        self.notBefore = notBefore
        self.notAfter = notAfter
    }

    private static func commonName(_ name: OpaquePointer?) -> String? {
        guard let name else { return nil }
        var buffer = [CChar](repeating: 0, count: 256)
        let length = X509_NAME_get_text_by_NID(name, NID_commonName, &buffer, Int32(buffer.count))
        guard length >= 0 else { return nil }
        return String(decoding: buffer.prefix(Int(length)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private static func date(_ time: UnsafePointer<ASN1_TIME>?) -> Date? {
        guard let time else { return nil }
        var parts = tm()
        guard ASN1_TIME_to_tm(time, &parts) == 1 else { return nil }
        return Date(timeIntervalSince1970: TimeInterval(timegm(&parts)))
    }
}

/// A certificate or key file that cannot be used, with the file and the reason.
public struct CertificateError: Error, CustomStringConvertible, Sendable {
    public let path: String
    public let detail: String

    public init(path: String, _ detail: String) {
        self.path = path
        self.detail = detail
    }

    public var description: String { "\(path): \(detail)" }
}

/// The whole file, or `nil` when it does not exist.
func readFileBytes(_ path: String) throws(CertificateError) -> [UInt8]? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    if fd < 0 {
        if errno == ENOENT { return nil }
        throw CertificateError(path: path, String(cString: strerror(errno)))
    }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 16 << 10)
    while true {
        let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if count < 0 {
            if errno == EINTR { continue }
            throw CertificateError(path: path, String(cString: strerror(errno)))
        }
        if count == 0 { return bytes }
        bytes += chunk.prefix(count)
        if bytes.count > 1 << 20 { throw CertificateError(path: path, "larger than 1 MiB; not a certificate file") }
    }
}
