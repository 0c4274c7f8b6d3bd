public import Cumulocity
import JSONSupport
public import Logging

/// The agent's configuration: one YAML file, every key overridable by `SWITCHYARD_<KEY>`.
///
/// The structure mirrors the file: each nested type is one mapping of it and documents its keys,
/// their types and defaults; a property's name is its key (`operations.concurrency` is
/// `configuration.operations.concurrency`). An environment variable's name is `SWITCHYARD_` and the
/// key in upper case, dots and camel-case humps turned into `_`: `device.externalIdType` →
/// `SWITCHYARD_DEVICE_EXTERNAL_ID_TYPE`. Relative paths in the file are relative to the file's
/// directory; in variables, to the working directory. A list key (`children`, `childDiscovery`,
/// `oauth2`) is a YAML list in the file and JSON text in a variable.
public struct AgentConfiguration: Sendable {
    /// `c8y`: the tenant.
    public struct C8Y: Sendable {
        /// `c8y.url` (required): the tenant's URL, `https://` (or `http://`).
        public var url: String
        /// `c8y.timeout` (duration, default `30s`): the time limit of one ordinary request.
        public var timeout: Duration = .seconds(30)
        // `c8y.mtlsUrl` is read into ``CertificateAuthentication/mtlsURL`` (it serves certificate mode only).

        public init(url: String) { self.url = url }
    }

    /// `device`: who the device is.
    public struct Device: Sendable {
        /// `device.externalId` (required): the device's unique id, e.g. its serial number.
        public var externalId: String
        /// `device.externalIdType` (default `c8y_Serial`).
        public var externalIdType = "c8y_Serial"
        /// `device.name` (default: the external id): given when the device is created, never updated.
        public var name: String?
        /// `device.type` (default `switchyard`): the managed object type given when the device is created.
        public var type = "switchyard"
        /// `device.hardware.model`, `.serialNumber`, `.revision` (text, default none): sent as `c8y_Hardware`.
        public var hardware: [String: String] = [:]
        /// `device.requiredInterval` (minutes, -32768…32767; default none): written as
        /// `c8y_RequiredAvailability.responseInterval`, so the platform raises an unavailability alarm
        /// when the device sends nothing for that long; ≤ 0 is maintenance. The agent sends a heartbeat
        /// when nothing else went out for half of it.
        public var requiredInterval: Int?

        public init(externalId: String) { self.externalId = externalId }
    }

    /// `auth`: how the device authenticates, and which TLS servers it trusts.
    public struct Auth: Sendable {
        /// `auth.mode` (`basic`, default; `bootstrap`; `certificate`) with its keys:
        /// - basic: `auth.username` (required), `auth.password` or `auth.passwordFile` (a file of mode
        ///   0600; one of the two required), `auth.tenant` (prefixes the user name; default none);
        /// - bootstrap: `auth.bootstrap.username`, `.password` or `.passwordFile`, `.tenant`, and
        ///   `.interval` (how often to ask while the device is not yet accepted; default `5s`);
        /// - certificate: `auth.certificate.cert` and `.key` (PEM; the key of mode 0600), `.chain`
        ///   (intermediates, default none), `.expiryWarning` (an alarm is raised when the certificate
        ///   expires within this time; default `30d`), and `c8y.mtlsUrl` (where the token endpoint is
        ///   served over mTLS; default `c8y.url`).
        public var mode: Authentication
        /// `auth.ca` (PEM file, default the system store): the CAs trusted for the tenant and artifact hosts.
        public var ca: String?
        /// `auth.insecure` (`true`/`false`, default `false`): skips TLS verification; a warning is logged at every start.
        public var insecure = false

        public init(mode: Authentication, ca: String? = nil, insecure: Bool = false) {
            self.mode = mode
            self.ca = ca
            self.insecure = insecure
        }
    }

    /// `proxy`: the plugin proxy on 127.0.0.1.
    public struct Proxy: Sendable {
        /// `proxy.port` (port, `0` for any free port, or `off`; default `8001`); `nil`: no proxy.
        public var port: UInt16? = 8001
        /// `proxy.maxUpload` (size, default `4GiB`): the largest request body a plugin may send
        /// through the proxy (kept on disk while it is sent).
        public var maxUpload: Int64 = 4 << 30
    }

    /// `limits`: bounds on what the agent reads.
    public struct Limits: Sendable {
        /// `limits.handlerFileSize` (size from 1B to 1GiB, default `1MiB`): the largest handler file
        /// read; a bigger one is rejected, named in the log and the alarm.
        public var handlerFileSize = 1 << 20

        /// The bounds a handler file is read with (its size; YAML nesting and alias expansion).
        public var declarations: DeclarationReader.Limits {
            var limits = DeclarationReader.Limits()
            limits.maximumFileSize = handlerFileSize
            return limits
        }
    }

    /// `operations`: how operations run.
    public struct Operations: Sendable {
        /// `operations.concurrency` (1–64, default `4`): operations running at once, across all handlers.
        public var concurrency = 4
        /// `operations.shutdownGrace` (duration, default `20s`): on SIGTERM/SIGINT, how long running
        /// operations may take to finish, and queued updates to go out, before the rest is stopped
        /// (and settled at the next start).
        public var shutdownGrace: Duration = .seconds(20)
        /// `operations.reconcileInterval` (duration, default `10m`, ±10 % jitter): how often the
        /// platform's PENDING and EXECUTING operations are compared with the journal, besides after
        /// every (re)subscription and every interrupted long-poll.
        public var reconcileInterval: Duration = .seconds(600)
    }

    /// A device behind the agent (an entry of `children`): created and linked under it, with its
    /// own `handlers.d/<externalId>/`.
    public struct ChildDevice: Sendable, Equatable {
        public var externalId: String
        public var name: String?
        public var type: String?
        /// Minutes, as `device.requiredInterval`, for this child.
        public var requiredInterval: Int?

        public init(externalId: String, name: String? = nil, type: String? = nil, requiredInterval: Int? = nil) {
            self.externalId = externalId
            self.name = name
            self.type = type
            self.requiredInterval = requiredInterval
        }

        /// Reads `{externalId, name, type}`; the problem when the shape is wrong.
        static func parse(_ json: JSONValue) -> Result<ChildDevice, Problem> {
            guard let object = json.objectValue else {
                return .failure(Problem("a child device must be an object, found \(json)"))
            }
            let unknown = object.keys.filter { !["externalId", "name", "type", "requiredInterval"].contains($0) }.sorted()
            guard unknown.isEmpty else {
                return .failure(Problem("unknown key '\(unknown[0])' in child device \(json) (expected externalId, name, type, requiredInterval)"))
            }
            var interval: Int?
            if let value = object["requiredInterval"], value != .null {
                guard let minutes = value.intValue, (-32768...32767).contains(minutes) else {
                    return .failure(Problem("requiredInterval of child device \(json) must be whole minutes between -32768 and 32767"))
                }
                interval = Int(minutes)
            }
            guard let id = object["externalId"]?.stringValue, !id.isEmpty,
                  id.allSatisfy({ $0.isLetter || $0.isNumber || "-_.:".contains($0) }), id != ".", id != ".." else {
                return .failure(Problem("child device \(json) needs an externalId of letters, digits and - _ . :"))
            }
            return .success(ChildDevice(externalId: id, name: object["name"]?.stringValue, type: object["type"]?.stringValue,
                                        requiredInterval: interval))
        }
    }

    /// What a list entry or a helper found wrong, before the key and origin are known.
    struct Problem: Error {
        let detail: String
        init(_ detail: String) { self.detail = detail }
    }

    public enum Authentication: Sendable {
        /// The device user's credentials, configured.
        case basic(BasicCredentials)
        /// Bootstrap credentials that obtain the device user's credentials once (seed step 0).
        case bootstrap(BasicCredentials, interval: Duration)
        /// An X.509 client certificate that obtains device access tokens over mutual TLS (seeds 000/001).
        case certificate(CertificateAuthentication)
    }

    public struct CertificateAuthentication: Sendable {
        public var certificate: ClientCertificate
        /// Intermediate certificates sent after the device's own in `X-Ssl-Cert-Chain`.
        public var chainFile: String?
        /// Where `deviceAccessToken` is served over mTLS; `nil`: the tenant URL.
        public var mtlsURL: String?
        /// An alarm is raised when the certificate expires within this time.
        public var expiryWarning: Duration = .seconds(30 * 86_400)

        public init(certificate: ClientCertificate, chainFile: String? = nil, mtlsURL: String? = nil) {
            self.certificate = certificate
            self.chainFile = chainFile
            self.mtlsURL = mtlsURL
        }

        /// What the token provider needs, for a tenant at `tenantURL`.
        func tokenSettings(tenantURL: String) -> DeviceTokenProvider.Settings {
            .init(mtlsURL: mtlsURL ?? tenantURL, tenantURL: tenantURL, certificate: certificate, chainFile: chainFile)
        }
    }

    public var c8y: C8Y
    public var device: Device
    public var auth: Auth
    public var proxy = Proxy()
    /// `handlers` (directory, default `handlers.d` in the working directory): the handler declarations.
    public var handlers = "handlers.d"
    public var limits = Limits()
    /// `stateDir` (directory, default `/var/lib/switchyard`): the journal, the outbox and operation logs.
    public var stateDir = "/var/lib/switchyard"
    public var operations = Operations()
    /// `children` (a list of `{externalId, name, type}`, default none): child devices (seed step 5).
    public var children: [ChildDevice] = []
    /// `childDiscovery` (a command: program, then arguments; default none): prints more child devices
    /// as a JSON array of `{externalId, name, type}`.
    public var childDiscovery: [String]?
    /// `oauth2` (a list of `{host, issuer, clientId, cert, key}`, default none; cert and key default
    /// to `auth.certificate.*`): artifact hosts whose downloads carry an OAuth2 token obtained over
    /// mTLS, by origin.
    public var oauth2: [String: OAuth2ClientCredentials.Settings] = [:]
    /// `log.level` (`trace` … `critical`, default `info`; `--log-level` overrides it) and `log.format`
    /// (`text`, `json`: one object per line, or `journal`: syslog priority prefixes; default journal
    /// under systemd, else text).
    public var log = LogSettings()

    public init(url: String, device: Device, authentication: Authentication) {
        self.c8y = C8Y(url: url)
        self.device = device
        self.auth = Auth(mode: authentication)
    }

    /// The transport's TLS settings (`auth.ca`, `auth.insecure`).
    public var tls: TLSConfiguration { TLSConfiguration(caFile: auth.ca, insecure: auth.insecure) }

    /// Every key the file and the environment may set, with what it expects.
    static let keys: [(key: String, expects: String)] = [
        ("c8y.url", "the tenant URL, e.g. https://acme.cumulocity.com"),
        ("c8y.timeout", "a duration such as 30s"),
        ("device.externalId", "the device's unique id, e.g. its serial number"),
        ("device.externalIdType", "an identity type such as c8y_Serial"),
        ("device.name", "the name to give the device when it is created"),
        ("device.type", "a managed object type"),
        ("device.hardware.model", "text"),
        ("device.hardware.serialNumber", "text"),
        ("device.hardware.revision", "text"),
        ("c8y.mtlsUrl", "the URL of the mTLS token endpoint, e.g. https://acme.cumulocity.com:8443"),
        ("auth.mode", "basic, bootstrap or certificate"),
        ("auth.bootstrap.tenant", "the bootstrap user's tenant, e.g. management"),
        ("auth.bootstrap.username", "the bootstrap user, e.g. devicebootstrap"),
        ("auth.bootstrap.password", "the bootstrap password"),
        ("auth.bootstrap.passwordFile", "a file (mode 0600) holding the bootstrap password"),
        ("auth.bootstrap.interval", "a duration such as 5s"),
        ("auth.tenant", "a tenant id such as t12345"),
        ("auth.username", "the device user's name"),
        ("auth.password", "the device user's password"),
        ("auth.passwordFile", "a file (mode 0600) holding the password"),
        ("auth.certificate.cert", "a PEM file holding the device certificate"),
        ("auth.certificate.key", "a PEM file (mode 0600) holding the device certificate's private key"),
        ("auth.certificate.chain", "a PEM file of intermediate certificates"),
        ("auth.certificate.expiryWarning", "a duration such as 30d"),
        ("auth.ca", "a PEM file of trusted certificate authorities"),
        ("auth.insecure", "true or false"),
        ("oauth2", "a list of artifact hosts, each with host, issuer, clientId and optional cert and key"),
        ("proxy.port", "a port number, 0 for any free port, or off"),
        ("proxy.maxUpload", "a size such as 512MiB or 4GiB"),
        ("handlers", "a directory of handler declarations"),
        ("limits.handlerFileSize", "a size such as 1MiB"),
        ("stateDir", "a writable directory"),
        ("operations.concurrency", "a whole number from 1 to 64"),
        ("operations.shutdownGrace", "a duration such as 20s"),
        ("operations.reconcileInterval", "a duration such as 10m"),
        ("children", "a list of child devices, each with externalId and optional name and type"),
        ("childDiscovery", "a command (a list: program, then arguments) that prints child devices as a JSON array"),
        ("log.level", "trace, debug, info, notice, warning, error or critical"),
        ("log.format", "text, json or journal"),
    ]

    /// The defaults of keys that have one, as `config check` shows them.
    static let defaults: [String: String] = [
        "c8y.timeout": "30s", "device.externalIdType": "c8y_Serial", "device.type": "switchyard", "auth.mode": "basic",
        "auth.bootstrap.interval": "5s", "auth.certificate.expiryWarning": "30d", "auth.ca": "(the system store)",
        "auth.insecure": "false", "proxy.port": "8001", "proxy.maxUpload": "4GiB", "handlers": "handlers.d (in the working directory)",
        "limits.handlerFileSize": "1MiB", "stateDir": "/var/lib/switchyard", "operations.concurrency": "4",
        "operations.shutdownGrace": "20s", "operations.reconcileInterval": "10m", "log.level": "info",
        "log.format": "journal under systemd, else text",
    ]

    /// Keys whose value is never shown.
    static let secretKeys: Set<String> = ["auth.password", "auth.bootstrap.password"]

    /// Keys whose value is a path (shown resolved).
    static let pathKeys: Set<String> = [
        "auth.passwordFile", "auth.bootstrap.passwordFile", "auth.certificate.cert", "auth.certificate.key",
        "auth.certificate.chain", "auth.ca", "handlers", "stateDir",
    ]

    /// `SWITCHYARD_*` variables that are not configuration keys yet are not mistakes: the file's path,
    /// the choice of executor (read before the configuration, ``GlobalExecutor``), and those the agent
    /// gives its plugins (a plugin may run `switchyard token`).
    static let otherVariables: Set<String> = [
        "SWITCHYARD_CONFIG", "SWITCHYARD_EXECUTOR", "SWITCHYARD_OPERATION_ID", "SWITCHYARD_FRAGMENT", "SWITCHYARD_DEVICE_ID", "SWITCHYARD_EXTERNAL_ID",
        "SWITCHYARD_PHASE", "SWITCHYARD_OPERATION_FILE", "SWITCHYARD_PROXY_URL", "SWITCHYARD_PROXY_SECRET",
    ]

    /// The configuration file `run` reads: `--config`, else `$SWITCHYARD_CONFIG`, else
    /// ``defaultFile`` when it exists (else none: every key from the environment).
    public static func file(option: String?, environment: [String: String]) -> String? {
        if let option { return option }
        if let variable = environment["SWITCHYARD_CONFIG"], !variable.isEmpty { return variable }
        return FileSystem.mode(defaultFile) != nil ? defaultFile : nil
    }

    /// Where the Debian package installs the configuration.
    public static let defaultFile = "/etc/switchyard/switchyard.yaml"

    /// Keys whose value is a list (in the file a YAML list, in the environment JSON text).
    static let listKeys: Set<String> = ["children", "childDiscovery", "oauth2"]

    /// `device.externalIdType` → `SWITCHYARD_DEVICE_EXTERNAL_ID_TYPE`.
    public static func environmentName(of key: String) -> String {
        var name = "SWITCHYARD_"
        var previous: Character = "."
        for character in key {
            if character == "." {
                name += "_"
            } else if character.isUppercase && previous.isLowercase {
                name += "_" + character.uppercased()
            } else {
                name += character.uppercased()
            }
            previous = character
        }
        return name
    }
}

/// Everything wrong with a configuration: each problem with its key, where the value came from and why
/// it cannot be used. Thrown by loading only, never for a failure at run time.
public struct ConfigurationError: Error, CustomStringConvertible, Sendable {
    public struct Problem: Sendable, Equatable, CustomStringConvertible {
        /// The key (`operations.concurrency`), or empty for the file as a whole or an unknown variable.
        public let key: String
        /// `file:line`, the variable's name, or empty when the key is not set.
        public let origin: String
        public let detail: String

        public init(key: String, origin: String, detail: String) {
            self.key = key
            self.origin = origin
            self.detail = detail
        }

        public var description: String { origin.isEmpty ? detail : "\(origin): \(detail)" }
    }

    public let problems: [Problem]

    public init(problems: [Problem]) { self.problems = problems }

    public var description: String {
        "configuration is not usable:\n" + problems.map { "  - " + $0.description }.joined(separator: "\n")
    }
}
