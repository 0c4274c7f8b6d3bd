import Cumulocity
import JSONSupport
import Logging

extension AgentConfiguration {
    /// A value as read, with where it came from (for messages).
    struct Setting {
        /// The text of a single value (empty for a list).
        let value: String
        let origin: String
        /// The directory relative paths are resolved against.
        let base: String
        /// A list key's entries, each with where it came from (`file:line` of the entry, or the variable).
        var entries: [(json: JSONValue, origin: String)]?
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
        public var problems: [ConfigurationError.Problem] = []
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
                inspection.problems.append(.init(key: "", origin: error.line.map { "\(file):\($0)" } ?? file, detail: error.detail))
                return inspection
            }
        }
        for (key, _) in keys {
            guard let value = environment[environmentName(of: key)] else { continue }
            let name = environmentName(of: key)
            var setting = Setting(value: value, origin: name, base: ".")
            if listKeys.contains(key), let list = (try? JSONValue.parse(value))?.arrayValue {
                setting.entries = list.enumerated().map { ($1, "\(name)[\($0)]") }  // JSON text
            }
            settings[key] = setting
        }
        inspection.problems += unknownVariables(in: environment)
        for (key, _) in keys {
            if let setting = settings[key], !setting.value.isEmpty || setting.entries != nil {
                let shown = secretKeys.contains(key) ? "********"
                    : pathKeys.contains(key) ? FileSystem.resolve(setting.value, relativeTo: setting.base)
                    : setting.entries.map { JSONValue.array($0.map(\.json)).encodedString() } ?? setting.value
                inspection.entries.append(.init(key: key, value: shown, origin: setting.origin))
            } else if let value = defaults[key] {
                inspection.entries.append(.init(key: key, value: value, origin: "default"))
            } else {
                inspection.entries.append(.init(key: key, value: "(not set)", origin: "-"))
            }
        }
        var reader = SettingsReader(settings: settings)
        let configuration = AgentConfiguration(reading: &reader)
        inspection.problems += reader.problems
        inspection.configuration = configuration
        return inspection
    }

    /// Every `SWITCHYARD_*` variable that is neither a key's nor one the agent itself sets or reads:
    /// a misspelt name must not be silently ignored.
    static func unknownVariables(in environment: [String: String]) -> [ConfigurationError.Problem] {
        let known = Set(keys.map { environmentName(of: $0.key) }).union(otherVariables)
        return environment.keys.filter { $0.hasPrefix("SWITCHYARD_") && !known.contains($0) }.sorted().map { name in
            let close = known.filter { editDistance($0, name) <= 2 }.sorted().first
            return .init(key: "", origin: "", detail: "unknown variable \(name)" + (close.map { " (did you mean \($0)?)" } ?? "")
                + ": no configuration key has this name (switchyard config check lists them)")
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

    /// Builds the configuration section by section; `reader` collects what is wrong.
    init(reading reader: inout SettingsReader) {
        let url = reader.required("c8y.url")
        if !url.isEmpty && !(url.hasPrefix("https://") || url.hasPrefix("http://")) {
            reader.fail("c8y.url", "c8y.url must start with https:// or http://, found '\(url)'")
        }
        self.init(url: url, device: Device(reading: &reader), authentication: Authentication(reading: &reader))
        c8y.timeout = reader.duration("c8y.timeout", example: "30s", positive: true) ?? c8y.timeout
        auth.ca = reader.path("auth.ca")
        reader.checkCertificates("auth.ca")
        auth.insecure = reader.boolean("auth.insecure") ?? auth.insecure
        handlers = reader.path("handlers") ?? FileSystem.absolute(handlers)
        if let size = reader.size("limits.handlerFileSize", in: 1...(1 << 30), example: "a size from 1B to 1GiB such as 1MiB") {
            limits.handlerFileSize = Int(size)
        }
        stateDir = reader.path("stateDir") ?? stateDir
        operations.concurrency = reader.integer("operations.concurrency", in: 1...64) ?? operations.concurrency
        operations.shutdownGrace = reader.duration("operations.shutdownGrace", example: "20s") ?? operations.shutdownGrace
        operations.reconcileInterval = reader.duration("operations.reconcileInterval", example: "10m", positive: true)
            ?? operations.reconcileInterval
        for (entry, origin) in reader.entries("children", "a list of child devices") {
            switch ChildDevice.parse(entry) {
            case .success(let child): children.append(child)
            case .failure(let problem): reader.fail("children", problem.detail, origin: origin)
            }
        }
        if let command = reader.command("childDiscovery") { childDiscovery = command }
        proxy.port = reader.choice("proxy.port", "a port number, 0 or off") { text -> UInt16?? in
            text == "off" ? .some(nil) : UInt16(text).map { .some($0) }
        } ?? proxy.port
        proxy.maxUpload = reader.size("proxy.maxUpload", in: 1...Int64.max, example: "a size such as 512MiB or 4GiB") ?? proxy.maxUpload
        log.level = reader.choice("log.level", "one of \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", "))") {
            Logger.Level(rawValue: $0)
        } ?? log.level
        log.format = reader.choice("log.format", "text, json or journal") { LogFormat(rawValue: $0) } ?? log.format
        var fallback: ClientCertificate?
        if case .certificate(let certificate) = auth.mode { fallback = certificate.certificate }
        for (entry, origin) in reader.entries("oauth2", "a list of artifact hosts") {
            switch OAuth2Host.parse(entry, base: reader.base("oauth2"), fallback: fallback) {
            case .success(let (origin, host)): oauth2[origin] = host
            case .failure(let problem): reader.fail("oauth2", problem.detail, origin: origin)
            }
        }
    }
}

extension AgentConfiguration.Device {
    init(reading reader: inout SettingsReader) {
        self.init(externalId: reader.required("device.externalId"))
        externalIdType = reader.text("device.externalIdType") ?? externalIdType
        name = reader.text("device.name")
        type = reader.text("device.type") ?? type
        for field in ["model", "serialNumber", "revision"] {
            if let text = reader.text("device.hardware.\(field)") { hardware[field] = text }
        }
        requiredInterval = reader.integer("device.requiredInterval", in: -32768...32767)
    }
}

extension AgentConfiguration.Authentication {
    init(reading reader: inout SettingsReader) {
        switch reader.text("auth.mode") ?? "basic" {
        case "basic":
            let username = reader.required("auth.username")
            let password = reader.password("auth.password", file: "auth.passwordFile",
                                           neededFor: "the device user's password is needed for auth.mode basic")
            self = .basic(BasicCredentials(tenant: reader.text("auth.tenant"), username: username, password: password))
        case "bootstrap":
            let username = reader.required("auth.bootstrap.username")
            let password = reader.password("auth.bootstrap.password", file: "auth.bootstrap.passwordFile",
                                           neededFor: "the bootstrap password is needed for auth.mode bootstrap")
            let interval = reader.duration("auth.bootstrap.interval", example: "5s", positive: true) ?? .seconds(5)
            self = .bootstrap(BasicCredentials(tenant: reader.text("auth.bootstrap.tenant"), username: username, password: password),
                              interval: interval)
        case "certificate":
            let cert = reader.path("auth.certificate.cert") ?? reader.required("auth.certificate.cert")
            let key = reader.path("auth.certificate.key") ?? reader.required("auth.certificate.key")
            reader.checkCertificates("auth.certificate.cert")
            if !key.isEmpty, let problem = AgentConfiguration.privateFileProblem(key, holding: "a private key") {
                reader.fail("auth.certificate.key", problem)
            }
            reader.checkCertificates("auth.certificate.chain")
            var settings = AgentConfiguration.CertificateAuthentication(
                certificate: ClientCertificate(certificateFile: cert, keyFile: key), chainFile: reader.path("auth.certificate.chain"),
                mtlsURL: reader.text("c8y.mtlsUrl"))
            settings.expiryWarning = reader.duration("auth.certificate.expiryWarning", example: "30d") ?? settings.expiryWarning
            if let mtls = settings.mtlsURL, !mtls.hasPrefix("https://") {
                reader.fail("c8y.mtlsUrl", "c8y.mtlsUrl must start with https://, found '\(mtls)'")
            }
            self = .certificate(settings)
        case let other:
            reader.fail("auth.mode", "auth.mode must be basic, bootstrap or certificate, found '\(other)'")
            self = .basic(BasicCredentials(tenant: nil, username: "", password: ""))
        }
    }
}

/// Reads typed values from the settings, collecting every problem with its key and origin.
struct SettingsReader {
    let settings: [String: AgentConfiguration.Setting]
    private(set) var problems: [ConfigurationError.Problem] = []

    init(settings: [String: AgentConfiguration.Setting]) { self.settings = settings }

    mutating func fail(_ key: String, _ detail: String, origin: String? = nil) {
        problems.append(.init(key: key, origin: origin ?? settings[key]?.origin ?? "", detail: detail))
    }

    /// The key's text; `nil` when it is not set (or empty).
    func text(_ key: String) -> String? {
        guard let text = settings[key]?.value, !text.isEmpty else { return nil }
        return text
    }

    /// The directory the key's relative paths are resolved against.
    func base(_ key: String) -> String { settings[key]?.base ?? "." }

    mutating func required(_ key: String) -> String {
        if let text = text(key) { return text }
        let expects = AgentConfiguration.keys.first(where: { $0.key == key })?.expects ?? "a value"
        fail(key, "missing \(key): expected \(expects); set it in the file or in \(AgentConfiguration.environmentName(of: key))", origin: "")
        return ""
    }

    /// The key's path, resolved.
    func path(_ key: String) -> String? {
        text(key).map { FileSystem.resolve($0, relativeTo: base(key)) }
    }

    /// The key's duration; a value that is no duration (or, with `positive`, is zero) is a problem.
    mutating func duration(_ key: String, example: String, positive: Bool = false) -> Duration? {
        guard let text = text(key) else { return nil }
        if let parsed = parseDuration(text), !positive || parsed > .zero { return parsed }
        fail(key, "\(key) must be a duration such as \(example), found '\(text)'")
        return nil
    }

    mutating func size(_ key: String, in range: ClosedRange<Int64>, example: String) -> Int64? {
        choice(key, example) { parseByteSize($0).flatMap { range.contains($0) ? $0 : nil } }
    }

    mutating func integer(_ key: String, in range: ClosedRange<Int>) -> Int? {
        choice(key, "a whole number from \(range.lowerBound) to \(range.upperBound)") { Int($0).flatMap { range.contains($0) ? $0 : nil } }
    }

    mutating func boolean(_ key: String) -> Bool? {
        choice(key, "true or false") { ["true": true, "false": false][$0] }
    }

    /// The key's value as `parse` reads it; text it cannot read is a problem saying what `expected` is.
    mutating func choice<T>(_ key: String, _ expected: String, _ parse: (String) -> T?) -> T? {
        guard let text = text(key) else { return nil }
        if let value = parse(text) { return value }
        fail(key, "\(key) must be \(expected), found '\(text)'")
        return nil
    }

    /// A password given directly or in a file that only its owner may read, not both; one is required.
    mutating func password(_ key: String, file fileKey: String, neededFor reason: String) -> String {
        var password = text(key)
        if let file = path(fileKey) {
            if password != nil { fail(fileKey, "set either \(key) or \(fileKey), not both", origin: "") }
            do throws(AgentConfiguration.Problem) {
                password = try AgentConfiguration.readSecret(file)
            } catch {
                fail(fileKey, "\(fileKey): \(error.detail)", origin: "")
            }
        }
        guard let password else {
            fail(key, "missing \(key) or \(fileKey): \(reason)", origin: "")
            return ""
        }
        return password
    }

    /// A problem when the key's PEM file holds no readable certificate.
    mutating func checkCertificates(_ key: String) {
        guard let file = path(key) else { return }
        do throws(CertificateError) {
            _ = try X509Certificate.read(file: file)
        } catch {
            fail(key, "\(error)")
        }
    }

    /// A list key's entries, each with its origin; a value that is not a list is a problem naming
    /// `what` it must be.
    mutating func entries(_ key: String, _ what: String) -> [(json: JSONValue, origin: String)] {
        guard let setting = settings[key], !setting.value.isEmpty || setting.entries != nil else { return [] }
        guard let entries = setting.entries else {
            fail(key, "\(key) must be \(what)")
            return []
        }
        return entries
    }

    /// A command: a list of the program (resolved) and its arguments, or a program alone.
    mutating func command(_ key: String) -> [String]? {
        guard let setting = settings[key], !setting.value.isEmpty || setting.entries != nil else { return nil }
        var command: [String]?
        if let entries = setting.entries {
            let words = entries.compactMap(\.json.stringValue)
            command = words.count == entries.count ? words : nil
        } else if let word = (try? JSONValue.parse(setting.value))?.stringValue {
            command = [word]  // a JSON string in a variable
        } else if !setting.value.hasPrefix("[") {
            command = [setting.value]
        }
        guard var command, let program = command.first, !program.isEmpty else {
            fail(key, "\(key) must be a command: a list of the program and its arguments")
            return nil
        }
        command[0] = FileSystem.resolve(program, relativeTo: setting.base)
        return command
    }
}

extension AgentConfiguration {
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
                if listKeys.contains(full), case .sequence(let items, _) = value {
                    // Each entry keeps its own line, for a message about a bad one.
                    settings[full] = Setting(value: "", origin: "\(file):\(line)", base: base,
                                             entries: items.map { ($0.json, "\(file):\($0.line)") })
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
    static func readSecret(_ path: String) throws(Problem) -> String {
        if let problem = privateFileProblem(path) { throw Problem(problem) }
        do {
            let text = try FileSystem.readText(path) ?? ""
            return text.trimmingCharacters(in: "\r\n")
        } catch {
            throw Problem("\(error)")
        }
    }
}

/// One entry of `oauth2`: `{host, issuer, clientId, cert, key}`.
enum OAuth2Host {
    static func parse(_ json: JSONValue, base: String, fallback: ClientCertificate?)
        -> Result<(String, OAuth2ClientCredentials.Settings), AgentConfiguration.Problem> {
        func fail(_ text: String) -> Result<(String, OAuth2ClientCredentials.Settings), AgentConfiguration.Problem> {
            .failure(AgentConfiguration.Problem(text))
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
