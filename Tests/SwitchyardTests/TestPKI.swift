import Foundation
import Logging
import Synchronization

/// Certificates made with the `openssl` command at test time: a CA that the sandbox trusts, a server
/// certificate for 127.0.0.1, and device certificates signed by that CA or by another one.
final class TestPKI: Sendable {
    let directory: String
    var caFile: String { directory + "/ca.pem" }
    var serverCertificate: String { directory + "/server.pem" }
    var serverKey: String { directory + "/server.key" }

    /// One set per test process (key generation is the slow part).
    static let shared: TestPKI = {
        do { return try TestPKI() } catch { fatalError("cannot make test certificates: \(error)") }
    }()

    init() throws {
        directory = temporaryDirectory() + "/pki"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try makeCA("ca", name: "Switchyard Test CA")
        try makeCA("other-ca", name: "Some Other CA")
        try issue("server", commonName: "127.0.0.1", by: "ca",
                  extensions: "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n")
    }

    /// A device certificate and key (mode 0600) for `commonName`; `days` < 0 makes an expired one.
    func device(_ commonName: String, days: Int = 365, otherCA: Bool = false, tag: String = "") throws -> (certificate: String, key: String) {
        let name = "device-\(commonName)\(tag)"
        try issue(name, commonName: commonName, by: otherCA ? "other-ca" : "ca", days: days,
                  extensions: "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n")
        return (directory + "/\(name).pem", directory + "/\(name).key")
    }

    private func makeCA(_ name: String, name commonName: String) throws {
        try openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                     "-keyout", "\(name).key", "-out", "\(name).pem", "-days", "3650", "-subj", "/CN=\(commonName)",
                     "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    }

    private func issue(_ name: String, commonName: String, by ca: String, days: Int = 365, extensions: String) throws {
        try extensions.write(toFile: directory + "/\(name).ext", atomically: true, encoding: .utf8)
        try openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                     "-keyout", "\(name).key", "-out", "\(name).csr", "-subj", "/CN=\(commonName)"])
        try openssl(["x509", "-req", "-in", "\(name).csr", "-CA", "\(ca).pem", "-CAkey", "\(ca).key",
                     // A random serial rather than -CAcreateserial: tests issue in parallel, and a shared
                     // ca.srl is read half-written now and then.
                     "-set_serial", "0x" + (0..<16).map { _ in String(UInt8.random(in: 0...255), radix: 16) }.joined(),
                     "-out", "\(name).pem", "-days", String(days), "-extfile", "\(name).ext"])
        chmod(directory + "/\(name).key", 0o600)
    }

    private func openssl(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        process.arguments = arguments
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try launch(process)
        let text = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw TestFailure("openssl \(arguments.joined(separator: " ")) failed: \(text)")
        }
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Keeps every log line of an agent in memory (for assertions on messages) and, when the
/// `SWITCHYARD_TEST_LOG` variable names a file, appends it there too, so CI can grep the logs of
/// the whole run for secrets.
final class LogCapture: Sendable {
    private let lines = Mutex<[String]>([])
    static let file: Int32? = ProcessInfo.processInfo.environment["SWITCHYARD_TEST_LOG"].map {
        open($0, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
    }

    var text: String { lines.withLock { $0.joined(separator: "\n") } }

    func contains(_ needle: String) -> Bool { lines.withLock { $0.contains { $0.contains(needle) } } }
    /// How many lines hold `needle`: wait for it to grow to see that something happened again.
    func count(_ needle: String) -> Int { lines.withLock { $0.filter { $0.contains(needle) }.count } }

    func logger(_ label: String = "agent") -> Logger {
        var logger = Logger(label: label, factory: { _ in Handler(capture: self) })
        logger.logLevel = .trace
        return logger
    }

    fileprivate func append(_ line: String) {
        lines.withLock { $0.append(line) }
        if let fd = Self.file, fd >= 0 {
            let bytes = Array((line + "\n").utf8)
            _ = bytes.withUnsafeBytes { Foundation.write(fd, $0.baseAddress, $0.count) }
        }
    }

    struct Handler: LogHandler {
        let capture: LogCapture
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            let all = metadata.merging(event.metadata ?? [:]) { $1 }
            let fields = all.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            capture.append("\(event.level) \(event.message) \(fields)")
        }
    }
}
