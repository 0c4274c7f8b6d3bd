import Cumulocity
import JSONSupport
import Logging

extension AgentConfiguration {
    /// A value as read, with where it came from (for messages).
    struct Setting {
        let value: String
        let origin: String
        let base: String
    }

    /// Loads the configuration from a YAML file (optional) and the environment.
    /// - Throws: ``ConfigurationError`` listing every unknown, missing or malformed key with its origin.
    public static func load(file: String?, environment: [String: String]) throws(ConfigurationError) -> AgentConfiguration {
        let inspection = inspect(file: file, environment: environment)
        guard let configuration = inspection.configuration, inspection.problems.isEmpty else {
            throw ConfigurationError(problems: inspection.problems)
        }
        return configuration
    }

    /// What `switchyard config check` shows: every key's effective value (secrets masked) and where it
    /// came from, every problem, and the configuration when there is none.
    public struct Inspection: Sendable {
        public struct Entry: Sendable, Equatable {
            public let key: String
            /// The value in effect (a path resolved, a secret masked), or `(not set)`.
            public let value: String
            /// `file:line`, the variable's name, `default`, or `-` when not set.
            public let origin: String
        }
        public var entries: [Entry] = []
        public var problems: [String] = []
        public var configuration: AgentConfiguration?
    }

    /// Reads the file and the environment as ``load(file:environment:)`` does, without throwing.
    public static func inspect(file: String?, environment: [String: String]) -> Inspection {
        var inspection = Inspection()
        var settings: [String: Setting] = [:]
        if let file {
            do throws(FileProblem) {
                settings = try readFile(file)
            } catch {
                inspection.problems.append(error.description)
                return inspection
            }
        }
        for (key, _) in keys {
            if let value = environment[environmentName(of: key)] {
                settings[key] = Setting(value: value, origin: environmentName(of: key), base: ".")
            }
        }
        inspection.problems += unknownVariables(in: environment)
        for (key, _) in keys {
            if let setting = settings[key], !setting.value.isEmpty {
                let shown = secretKeys.contains(key) ? "********"
                    : pathKeys.contains(key) ? FileSystem.resolve(setting.value, relativeTo: setting.base) : setting.value
                inspection.entries.append(.init(key: key, value: shown, origin: setting.origin))
            } else if let value = defaults[key] {
                inspection.entries.append(.init(key: key, value: value, origin: "default"))
            } else {
                inspection.entries.append(.init(key: key, value: "(not set)", origin: "-"))
            }
        }
        let (configuration, problems) = build(settings)
        inspection.problems += problems
        inspection.configuration = configuration
        return inspection
    }

    /// Every `SWITCHYARD_*` variable that is neither a key's nor one the agent itself sets or reads:
    /// a misspelt name must not be silently ignored.
    static func unknownVariables(in environment: [String: String]) -> [String] {
        let known = Set(keys.map { environmentName(of: $0.key) }).union(otherVariables)
        return environment.keys.filter { $0.hasPrefix("SWITCHYARD_") && !known.contains($0) }.sorted().map { name in
            let close = known.filter { editDistance($0, name) <= 2 }.sorted().first
            return "unknown variable \(name)" + (close.map { " (did you mean \($0)?)" } ?? "")
                + ": no configuration key has this name (switchyard config check lists them)"
        }
    }

    /// Levenshtein distance, for suggestions.
    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        var previous = Array(0...b.count)
        for (i, x) in a.enumerated() {
            var current = [i + 1]
            for (j, y) in b.enumerated() {
                current.append(min(previous[j + 1] + 1, current[j] + 1, previous[j] + (x == y ? 0 : 1)))
            }
            previous = current
        }
        return previous[b.count]
    }

    /// Builds the configuration from the settings read; the problems found on the way.
    static func build(_ settings: [String: Setting]) -> (AgentConfiguration, [String]) {
        var problems: [String] = []

        func value(_ key: String) -> String? {
            guard let text = settings[key]?.value, !text.isEmpty else { return nil }
            return text
        }
        func required(_ key: String) -> String {
            if let text = value(key) { return text }
            let expects = keys.first(where: { $0.key == key })?.expects ?? "a value"
            problems.append("missing \(key): expected \(expects); set it in the file or in \(environmentName(of: key))")
            return ""
        }
        func path(_ key: String) -> String? {
            guard let setting = settings[key], !setting.value.isEmpty else { return nil }
            return FileSystem.resolve(setting.value, relativeTo: setting.base)
        }
        func where_(_ key: String) -> String { settings[key]?.origin ?? key }
        /// The key's duration, `nil` when it is not set; a value that is no duration (or, with
        /// `positive`, is zero) is a problem.
        func duration(_ key: String, example: String, positive: Bool = false) -> Duration? {
            guard let text = value(key) else { return nil }
            if let parsed = parseDuration(text), !positive || parsed > .zero { return parsed }
            problems.append("\(where_(key)): \(key) must be a duration such as \(example), found '\(text)'")
            return nil
        }
        /// A problem when the key's PEM file holds no readable certificate.
        func checkCertificates(_ key: String, in file: String?) {
            guard let file else { return }
            do throws(CertificateError) {
                _ = try X509Certificate.read(file: file)
            } catch {
                problems.append("\(where_(key)): \(error)")
            }
        }

        let url = required("c8y.url")
        if !url.isEmpty && !(url.hasPrefix("https://") || url.hasPrefix("http://")) {
            problems.append("\(where_("c8y.url")): c8y.url must start with https:// or http://, found '\(url)'")
        }
        var device = Device(externalId: required("device.externalId"))
        device.externalIdType = value("device.externalIdType") ?? device.externalIdType
        device.name = value("device.name")
        device.type = value("device.type") ?? device.type
        for field in ["model", "serialNumber", "revision"] {
            if let text = value("device.hardware.\(field)") { device.hardware[field] = text }
        }

        var authentication = Authentication.basic(BasicCredentials(tenant: nil, username: "", password: ""))
        switch value("auth.mode") ?? "basic" {
        case "basic":
            let username = required("auth.username")
            var password = value("auth.password")
            if let passwordFile = path("auth.passwordFile") {
                if password != nil {
                    problems.append("set either auth.password or auth.passwordFile, not both")
                }
                do throws(ConfigurationError) {
                    password = try readSecret(passwordFile, key: "auth.passwordFile")
                } catch {
                    problems += error.problems
                }
            }
            if password == nil {
                problems.append("missing auth.password or auth.passwordFile: the device user's password is needed for auth.mode basic")
            }
            authentication = .basic(BasicCredentials(tenant: value("auth.tenant"), username: username, password: password ?? ""))
        case "bootstrap":
            let username = required("auth.bootstrap.username")
            var password = value("auth.bootstrap.password")
            if let passwordFile = path("auth.bootstrap.passwordFile") {
                do throws(ConfigurationError) {
                    password = try readSecret(passwordFile, key: "auth.bootstrap.passwordFile")
                } catch {
                    problems += error.problems
                }
            }
            if password == nil {
                problems.append("missing auth.bootstrap.password or auth.bootstrap.passwordFile: the bootstrap password is needed for auth.mode bootstrap")
            }
            let interval = duration("auth.bootstrap.interval", example: "5s", positive: true) ?? .seconds(5)
            authentication = .bootstrap(BasicCredentials(tenant: value("auth.bootstrap.tenant"), username: username, password: password ?? ""),
                                        interval: interval)
        case "certificate":
            let cert = path("auth.certificate.cert")
            let key = path("auth.certificate.key")
            if cert == nil { _ = required("auth.certificate.cert") }
            if key == nil { _ = required("auth.certificate.key") }
            checkCertificates("auth.certificate.cert", in: cert)
            if let key, let problem = privateFileProblem(key, holding: "a private key") {
                problems.append("\(where_("auth.certificate.key")): \(problem)")
            }
            let chain = path("auth.certificate.chain")
            checkCertificates("auth.certificate.chain", in: chain)
            var settings = CertificateAuthentication(certificate: ClientCertificate(certificateFile: cert ?? "", keyFile: key ?? ""),
                                                     chainFile: chain, mtlsURL: value("c8y.mtlsUrl"))
            settings.expiryWarning = duration("auth.certificate.expiryWarning", example: "30d") ?? settings.expiryWarning
            if let mtls = settings.mtlsURL, !(mtls.hasPrefix("https://")) {
                problems.append("\(where_("c8y.mtlsUrl")): c8y.mtlsUrl must start with https://, found '\(mtls)'")
            }
            authentication = .certificate(settings)
        case let other:
            problems.append("\(where_("auth.mode")): auth.mode must be basic, bootstrap or certificate, found '\(other)'")
        }

        var configuration = AgentConfiguration(url: url, device: device, authentication: authentication)
        configuration.requestTimeout = duration("c8y.timeout", example: "30s", positive: true) ?? configuration.requestTimeout
        configuration.tls = TLSConfiguration(caFile: path("auth.ca"))
        checkCertificates("auth.ca", in: path("auth.ca"))
        switch value("auth.insecure") {
        case nil, "false": break
        case "true": configuration.tls.insecure = true
        case let other?: problems.append("\(where_("auth.insecure")): auth.insecure must be true or false, found '\(other)'")
        }
        configuration.handlersDirectory = path("handlers") ?? FileSystem.absolute(configuration.handlersDirectory)
        if let text = value("limits.handlerFileSize") {
            if let size = parseByteSize(text), (1...(1 << 30)).contains(size) {
                configuration.handlerLimits.maximumFileSize = Int(size)
            } else {
                problems.append("\(where_("limits.handlerFileSize")): limits.handlerFileSize must be a size from 1B to 1GiB such as 1MiB, found '\(text)'")
            }
        }
        configuration.stateDirectory = path("stateDir") ?? configuration.stateDirectory
        if let text = value("operations.concurrency") {
            if let count = Int(text), (1...64).contains(count) {
                configuration.concurrency = count
            } else {
                problems.append("\(where_("operations.concurrency")): operations.concurrency must be a whole number from 1 to 64, found '\(text)'")
            }
        }
        configuration.shutdownGrace = duration("operations.shutdownGrace", example: "20s") ?? configuration.shutdownGrace
        configuration.reconcileInterval = duration("operations.reconcileInterval", example: "10m", positive: true)
            ?? configuration.reconcileInterval
        if let text = value("children") {
            switch (try? JSONValue.parse(text))?.arrayValue {
            case nil:
                problems.append("\(where_("children")): children must be a list of child devices")
            case let list?:
                for item in list {
                    switch ChildDevice.parse(item) {
                    case .success(let child): configuration.children.append(child)
                    case .failure(let error): problems += error.problems.map { "\(where_("children")): \($0)" }
                    }
                }
            }
        }
        if let text = value("childDiscovery") {
            let parsed = (try? JSONValue.parse(text)).flatMap { json -> [String]? in
                if let single = json.stringValue { return [single] }
                let items = json.arrayValue?.compactMap(\.stringValue)
                return items?.count == json.arrayValue?.count ? items : nil
            } ?? (text.hasPrefix("[") ? nil : [text])
            if var command = parsed, let program = command.first, !program.isEmpty {
                command[0] = FileSystem.resolve(program, relativeTo: settings["childDiscovery"]?.base ?? ".")
                configuration.childDiscovery = command
            } else {
                problems.append("\(where_("childDiscovery")): childDiscovery must be a command: a list of the program and its arguments")
            }
        }
        if let text = value("proxy.port") {
            if text == "off" {
                configuration.proxyPort = nil
            } else if let port = UInt16(text) {
                configuration.proxyPort = port
            } else {
                problems.append("\(where_("proxy.port")): proxy.port must be a port number, 0 or off, found '\(text)'")
            }
        }
        if let text = value("proxy.maxUpload") {
            if let bytes = parseByteSize(text), bytes > 0 {
                configuration.proxyMaxUpload = bytes
            } else {
                problems.append("\(where_("proxy.maxUpload")): proxy.maxUpload must be a size such as 512MiB or 4GiB, found '\(text)'")
            }
        }
        if let text = value("log.level") {
            if let level = Logger.Level(rawValue: text) {
                configuration.log.level = level
            } else {
                problems.append("\(where_("log.level")): log.level must be one of \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", ")), found '\(text)'")
            }
        }
        if let text = value("log.format") {
            if let format = LogFormat(rawValue: text) {
                configuration.log.format = format
            } else {
                problems.append("\(where_("log.format")): log.format must be text, json or journal, found '\(text)'")
            }
        }
        if let text = value("oauth2") {
            let base = settings["oauth2"]?.base ?? "."
            var fallback: ClientCertificate?
            if case .certificate(let certificate) = configuration.authentication { fallback = certificate.certificate }
            switch (try? JSONValue.parse(text))?.arrayValue {
            case nil:
                problems.append("\(where_("oauth2")): oauth2 must be a list of artifact hosts")
            case let list?:
                for item in list {
                    switch OAuth2Host.parse(item, base: base, fallback: fallback) {
                    case .success(let (origin, host)): configuration.oauth2Hosts[origin] = host
                    case .failure(let error): problems += error.problems.map { "\(where_("oauth2")): \($0)" }
                    }
                }
            }
        }
        return (configuration, problems)
    }

    /// Flattens the file's nested mappings into dotted keys and rejects keys it does not know.
    static func readFile(_ file: String) throws(FileProblem) -> [String: Setting] {
        let contents: String?
        do {
            contents = try FileSystem.readText(file)
        } catch {
            throw FileProblem(file: file, line: nil, error.description)
        }
        guard let text = contents else {
            throw FileProblem(file: file, line: nil, "configuration file does not exist")
        }
        let documents: [YAMLNode]
        do {
            documents = try YAMLNode.parseDocuments(text)
        } catch {
            throw FileProblem(file: file, line: error.line, error.detail)
        }
        guard documents.count <= 1 else {
            throw FileProblem(file: file, line: documents[1].line, "a configuration file holds one YAML document")
        }
        guard let root = documents.first, !root.isNull else { return [:] }
        let base = FileSystem.parent(of: FileSystem.absolute(file))
        var settings: [String: Setting] = [:]
        let known = Set(keys.map(\.key))

        func walk(_ node: YAMLNode, prefix: String) throws(FileProblem) {
            let reader = try MappingReader(node, file: file, what: prefix.isEmpty ? "the configuration" : "'\(prefix)'")
            for (key, line, value) in reader.pairs {
                let full = prefix.isEmpty ? key : prefix + "." + key
                if case .mapping = value, known.contains(where: { $0.hasPrefix(full + ".") }) {
                    try walk(value, prefix: full)
                    continue
                }
                guard known.contains(full) else {
                    let suggestion = known.filter { $0.lowercased() == full.lowercased() }.first.map { " (did you mean \($0)?)" } ?? ""
                    throw FileProblem(file: file, line: line, "unknown key '\(full)'\(suggestion)")
                }
                if listKeys.contains(full), case .sequence = value {
                    settings[full] = Setting(value: value.json.encodedString(), origin: "\(file):\(line)", base: base)
                    continue
                }
                guard let scalar = value.scalar else {
                    throw FileProblem(file: file, line: value.line, "'\(full)' must be a single value, found \(value.kindName)")
                }
                settings[full] = Setting(value: scalar, origin: "\(file):\(line)", base: base)
            }
        }
        try walk(root, prefix: "")
        return settings
    }

    /// Why a file holding a secret (password, private key, stored credentials) must not be used:
    /// it cannot be examined, or group or others may read it. `nil` when it is private.
    static func privateFileProblem(_ path: String, holding secret: String = "a secret") -> String? {
        guard let mode = FileSystem.mode(path) else { return "cannot read \(path)" }
        guard mode & 0o077 == 0 else {
            return "\(path) has mode 0\(String(mode, radix: 8)); it holds \(secret), so it must not be readable by group or others (chmod 600)"
        }
        return nil
    }

    /// Reads a secret from a file that only its owner may read.
    static func readSecret(_ path: String, key: String) throws(ConfigurationError) -> String {
        if let problem = privateFileProblem(path) { throw ConfigurationError(problems: ["\(key): \(problem)"]) }
        do {
            let text = try FileSystem.readText(path) ?? ""
            return text.trimmingCharacters(in: "\r\n")
        } catch {
            throw ConfigurationError(problems: ["\(key): \(error)"])
        }
    }
}

/// One entry of `oauth2`: `{host, issuer, clientId, cert, key}`.
enum OAuth2Host {
    static func parse(_ json: JSONValue, base: String, fallback: ClientCertificate?)
        -> Result<(String, OAuth2ClientCredentials.Settings), ConfigurationError> {
        func fail(_ text: String) -> Result<(String, OAuth2ClientCredentials.Settings), ConfigurationError> {
            .failure(ConfigurationError(problems: [text]))
        }
        guard let object = json.objectValue else { return fail("an oauth2 entry must be an object, found \(json)") }
        let known = ["host", "issuer", "clientId", "cert", "key"]
        if let unknown = object.keys.sorted().first(where: { !known.contains($0) }) {
            return fail("unknown key '\(unknown)' in oauth2 entry (expected \(known.joined(separator: ", ")))")
        }
        guard let host = object["host"]?.stringValue, let origin = PlatformClient.origin(of: host), origin.hasPrefix("https://") else {
            return fail("oauth2 entry \(json) needs host: an https:// URL such as https://artifacts.example.com")
        }
        guard let issuer = object["issuer"]?.stringValue, issuer.hasPrefix("https://") else {
            return fail("oauth2 entry for \(origin) needs issuer: the https:// URL that serves /.well-known/openid-configuration")
        }
        guard let clientID = object["clientId"]?.stringValue, !clientID.isEmpty else {
            return fail("oauth2 entry for \(origin) needs clientId")
        }
        var certificate = fallback
        if let cert = object["cert"]?.stringValue, let key = object["key"]?.stringValue {
            certificate = ClientCertificate(certificateFile: FileSystem.resolve(cert, relativeTo: base),
                                            keyFile: FileSystem.resolve(key, relativeTo: base))
        }
        guard let certificate else {
            return fail("oauth2 entry for \(origin) needs cert and key (or auth.mode certificate, whose certificate it then uses)")
        }
        if let problem = AgentConfiguration.privateFileProblem(certificate.keyFile, holding: "a private key") {
            return fail("oauth2 entry for \(origin): \(problem)")
        }
        return .success((origin, OAuth2ClientCredentials.Settings(issuer: issuer, clientID: clientID, certificate: certificate)))
    }
}
