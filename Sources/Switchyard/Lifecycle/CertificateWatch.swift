import Cumulocity
import FoundationEssentials
import JSONSupport
import Logging

/// Watches the device certificate in `auth.mode: certificate`.
///
/// - Rotation: when the certificate or key file changes on disk, the current token is dropped so the
///   next request fetches one with the new certificate (no restart needed).
/// - Expiry: while the certificate expires within `expiryWarning` (or has expired), one alarm of type
///   `switchyard_CertificateExpiry` says when; it is cleared once a renewed certificate is in place.
actor CertificateWatch {
    static let alarmType = "switchyard_CertificateExpiry"

    let settings: AgentConfiguration.CertificateAuthentication
    let provider: DeviceTokenProvider
    let client: PlatformClient
    let deviceID: String
    let logger: Logger
    private var fingerprint: String?
    private let alarms: AgentAlarms

    init(settings: AgentConfiguration.CertificateAuthentication, provider: DeviceTokenProvider, client: PlatformClient,
         deviceID: String, logger: Logger) {
        self.settings = settings
        self.provider = provider
        self.client = client
        self.deviceID = deviceID
        self.logger = logger
        self.fingerprint = Self.fingerprint(settings)
        self.alarms = AgentAlarms(client: client, device: deviceID, scope: .type(Self.alarmType))
    }

    static func fingerprint(_ settings: AgentConfiguration.CertificateAuthentication) -> String {
        [settings.certificate.certificateFile, settings.certificate.keyFile, settings.chainFile]
            .map { $0.flatMap(FileSystem.fingerprint) ?? "-" }.joined(separator: "|")
    }

    /// Checks now, then every `interval`, until cancelled.
    func run(interval: Duration) async {
        while !Task.isCancelled {
            await check()
            guard await Deadlines.shared.sleep(for: interval) else { return }
        }
    }

    func check() async {
        let current = Self.fingerprint(settings)
        if current != fingerprint {
            fingerprint = current
            logger.notice("the device certificate changed on disk; the next request uses a token obtained with it",
                          metadata: ["certificate": "\(settings.certificate.certificateFile)"])
            await provider.forget()
        }
        let wanted: (text: String, severity: String)?
        do throws(CertificateError) {
            guard let leaf = try X509Certificate.read(file: settings.certificate.certificateFile).first else { return }
            let left = leaf.notAfter.timeIntervalSince(Date())
            let date = leaf.notAfter.formatted(.iso8601)
            if left <= 0 {
                wanted = ("device certificate \(settings.certificate.certificateFile) expired on \(date)", "CRITICAL")
            } else if left < Double(settings.expiryWarning.components.seconds) {
                let days = Int(left / 86_400)
                let when = days == 0 ? "within a day" : days == 1 ? "in 1 day" : "in \(days) days"
                wanted = ("device certificate \(settings.certificate.certificateFile) expires on \(date) (\(when))", "MAJOR")
            } else {
                wanted = nil
            }
        } catch {
            logger.error("cannot read the device certificate", metadata: ["error": "\(error)"])
            return
        }
        do {
            try await sync(wanted)
        } catch {
            logger.warning("cannot update the certificate expiry alarm; will retry", metadata: ["error": "\(error)"])
        }
    }

    private func sync(_ wanted: (text: String, severity: String)?) async throws(PlatformError) {
        let changes = try await alarms.sync(wanted.map { [Self.alarmType: .init(text: $0.text, severity: $0.severity)] } ?? [:])
        for change in changes {
            if case .cleared = change {
                logger.notice("device certificate renewed; expiry alarm cleared")
            } else {
                logger.warning("device certificate expires soon", metadata: ["alarm": "\(wanted?.text ?? "")"])
            }
        }
    }
}
