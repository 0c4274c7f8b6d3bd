public import Cumulocity
import JSONSupport
public import Logging

/// The agent's configuration: one YAML file, every key overridable by `SWITCHYARD_<KEY>`.
///
/// | key | type | default |
/// | --- | --- | --- |
/// | `c8y.url` | URL of the tenant | required |
/// | `c8y.timeout` | duration of one ordinary request | `30s` |
/// | `device.externalId` | the device's unique id | required |
/// | `device.externalIdType` | text | `c8y_Serial` |
/// | `device.name` | name given when the device is created (never updated) | the external id |
/// | `device.type` | managed object type given when the device is created | `switchyard` |
/// | `device.hardware.model` / `.serialNumber` / `.revision` | text, sent as `c8y_Hardware` | none |
/// | `c8y.mtlsUrl` | where the mTLS token endpoint is served, when not at `c8y.url` | `c8y.url` |
/// | `auth.mode` | `basic`, `bootstrap` or `certificate` | `basic` |
/// | `auth.bootstrap.tenant` / `.username` / `.password` / `.passwordFile` | bootstrap credentials | required for `bootstrap` |
/// | `auth.bootstrap.interval` | how often to ask while the device is not yet accepted | `5s` |
/// | `auth.tenant` | tenant id, prefixes the user name | none |
/// | `auth.username` | device user | required for `basic` |
/// | `auth.password` / `auth.passwordFile` | the password, or a file (mode 0600) holding it | one required |
/// | `auth.certificate.cert` / `.key` / `.chain` | PEM files: device certificate, its private key (mode 0600), intermediates | cert and key required for `certificate` |
/// | `auth.certificate.expiryWarning` | an alarm is raised when the certificate expires within this time | `30d` |
/// | `auth.ca` | PEM file of trusted CAs | the system store |
/// | `auth.insecure` | `true` skips TLS verification (a warning is logged at every start) | `false` |
/// | `oauth2` | artifact hosts that take OAuth2 tokens: a list of `{host, issuer, clientId, cert, key}` (cert and key default to `auth.certificate.*`) | none |
/// | `proxy.port` | port of the plugin proxy on 127.0.0.1 (`0`: any free port; `off`: no proxy) | `8001` |
/// | `proxy.maxUpload` | largest request body a plugin may send through the proxy | `4GiB` |
/// | `handlers` | directory of handler declarations | `handlers.d` |
/// | `limits.handlerFileSize` | largest handler file read (bigger ones are rejected, named in the log and the alarm) | `1MiB` |
/// | `stateDir` | directory for the journal, outbox and operation logs | `/var/lib/switchyard` |
/// | `operations.concurrency` | operations running at once, across all handlers | `4` |
/// | `operations.shutdownGrace` | time running operations get to finish on SIGTERM | `20s` |
/// | `operations.reconcileInterval` | how often PENDING and EXECUTING operations are compared with the journal (±10 % jitter) | `10m` |
/// | `log.level` | `trace`, `debug`, `info`, `notice`, `warning`, `error` or `critical` (`--log-level` overrides it) | `info` |
/// | `log.format` | `text`, `json` (one object per line) or `journal` (syslog priority prefixes) | journal under systemd, else text |
///
/// An environment variable's name is `SWITCHYARD_` and the key in upper case, dots and
/// camel-case humps turned into `_`: `device.externalIdType` → `SWITCHYARD_DEVICE_EXTERNAL_ID_TYPE`.
/// Relative paths in the file are relative to the file's directory; in variables, to the working directory.
public struct AgentConfiguration: Sendable {
    public struct Device: Sendable {
        public var externalId: String
        public var externalIdType = "c8y_Serial"
        public var name: String?
        public var type = "switchyard"
        public var hardware: [String: String] = [:]

        public init(externalId: String) { self.externalId = externalId }
    }

    /// A device behind the agent: created and linked under it, with its own `handlers.d/<externalId>/`.
    public struct ChildDevice: Sendable, Equatable {
        public var externalId: String
        public var name: String?
        public var type: String?

        public init(externalId: String, name: String? = nil, type: String? = nil) {
            self.externalId = externalId
            self.name = name
            self.type = type
        }

        /// Reads `{externalId, name, type}`; `nil` with the reason when the shape is wrong.
        static func parse(_ json: JSONValue) -> Result<ChildDevice, ConfigurationError> {
            guard let object = json.objectValue else {
                return .failure(ConfigurationError(problems: ["a child device must be an object, found \(json)"]))
            }
            let unknown = object.keys.filter { !["externalId", "name", "type"].contains($0) }.sorted()
            guard unknown.isEmpty else {
                return .failure(ConfigurationError(problems: ["unknown key '\(unknown[0])' in child device \(json) (expected externalId, name, type)"]))
            }
            guard let id = object["externalId"]?.stringValue, !id.isEmpty,
                  id.allSatisfy({ $0.isLetter || $0.isNumber || "-_.:".contains($0) }), id != ".", id != ".." else {
                return .failure(ConfigurationError(problems: ["child device \(json) needs an externalId of letters, digits and - _ . :"]))
            }
            return .success(ChildDevice(externalId: id, name: object["name"]?.stringValue, type: object["type"]?.stringValue))
        }
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

    public var url: String
    public var requestTimeout: Duration = .seconds(30)
    public var device: Device
    public var authentication: Authentication
    public var tls = TLSConfiguration()
    public var handlersDirectory = "handlers.d"
    /// Bounds on each handler file (size; YAML nesting and alias expansion).
    public var handlerLimits = DeclarationReader.Limits()
    public var stateDirectory = "/var/lib/switchyard"
    public var concurrency = 4
    /// On SIGTERM/SIGINT: how long running operations may take to finish, and queued updates to go
    /// out, before the rest is stopped (and settled at the next start).
    public var shutdownGrace: Duration = .seconds(20)
    /// How often the platform's PENDING and EXECUTING operations are reconciled with the journal,
    /// besides after every (re)subscription and every interrupted long-poll.
    public var reconcileInterval: Duration = .seconds(600)
    /// Child devices declared in the configuration (seed step 5).
    public var children: [ChildDevice] = []
    /// A command that prints more child devices as a JSON array of `{externalId, name, type}`.
    public var childDiscovery: [String]?
    /// The plugin proxy's port on 127.0.0.1 (0: any free port); `nil`: no proxy.
    public var proxyPort: UInt16? = 8001
    /// The largest request body a plugin may send through the proxy (kept on disk while it is sent).
    public var proxyMaxUpload: Int64 = 4 << 30
    /// Artifact hosts whose downloads carry an OAuth2 token obtained over mTLS, by origin.
    public var oauth2Hosts: [String: OAuth2ClientCredentials.Settings] = [:]
    /// Log level and line format (`log.level`, `log.format`).
    public var log = LogSettings()

    public init(url: String, device: Device, authentication: Authentication) {
        self.url = url
        self.device = device
        self.authentication = authentication
    }

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
    /// and those the agent gives its plugins (a plugin may run `switchyard token`).
    static let otherVariables: Set<String> = [
        "SWITCHYARD_CONFIG", "SWITCHYARD_OPERATION_ID", "SWITCHYARD_FRAGMENT", "SWITCHYARD_DEVICE_ID", "SWITCHYARD_EXTERNAL_ID",
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

/// Everything wrong with a configuration, each problem with its key and where it came from.
public struct ConfigurationError: Error, CustomStringConvertible, Sendable {
    public let problems: [String]
    public var description: String {
        "configuration is not usable:\n" + problems.map { "  - " + $0 }.joined(separator: "\n")
    }
}
