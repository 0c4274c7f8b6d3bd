import HandlerKit

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Software management through software-type plugins with thin-edge.io's plugin interface
/// (`list`, `prepare`, `install NAME [--module-version V] [--file F]`, `remove NAME [--module-version V]`,
/// `update-list` on stdin, `finalize`), so existing plugins work unchanged.
///
/// Handles `c8y_SoftwareUpdate` (a partial list: `action: install|delete`, `softwareType`) and the legacy
/// `c8y_SoftwareList` (the full desired list: missing or other versions installed, unlisted removed).
/// Reports `c8y_SoftwareList`, the legacy `c8y_Software` map and `c8y_SupportedSoftwareTypes` at start
/// and after every operation.
///
/// Options: `pluginsDirectory` (default `/usr/lib/switchyard/sm-plugins`; each executable's name is a software
/// type), `defaultType` (for modules without a type; default: the only plugin, if there is one),
/// `timeout` (seconds per plugin call, default 300), `maxDownloadBytes` (default 512 MiB),
/// `env` (variables for the plugins).
public struct SoftwareHandler: OperationHandler {
    let directory: String
    let defaultType: String?
    let timeout: Duration
    let maxDownloadBytes: Int64
    let environment: [String: String]

    public init(options: JSONValue) throws(HandlerOptionsError) {
        directory = options["pluginsDirectory"]?.stringValue ?? "/usr/lib/switchyard/sm-plugins"
        guard directory.hasPrefix("/") else { throw HandlerOptionsError("options.pluginsDirectory must be an absolute path") }
        defaultType = options["defaultType"]?.stringValue
        let seconds = options["timeout"]?.intValue ?? 300
        guard seconds > 0 else { throw HandlerOptionsError("options.timeout must be a positive number of seconds") }
        timeout = .seconds(seconds)
        maxDownloadBytes = options["maxDownloadBytes"]?.intValue ?? 512 << 20
        var environment: [String: String] = [:]
        for (key, value) in options["env"]?.objectValue ?? [:] {
            guard let text = value.stringValue else { throw HandlerOptionsError("options.env.\(key) must be text") }
            environment[key] = text
        }
        self.environment = environment
    }

    /// One module to install or remove.
    struct Action: Equatable {
        enum Kind: String { case install, remove }
        let kind: Kind
        let name: String
        let version: String?
        let url: String?
        let type: String
    }

    // MARK: Operations

    public func execute(_ operation: Operation, context: any HandlerContext) async throws -> Outcome {
        let plugins = installedPlugins()
        let actions: [Action]
        switch parse(operation, plugins: plugins) {
        case .failure(let problem): return .failed(problem.detail)
        case .success(let parsed): actions = parsed
        }
        if operation.fragment == "c8y_SoftwareList" {
            // The legacy full list: compare with what is installed.
            return try await apply(try await reconcile(actions, plugins: plugins, context: context), plugins: plugins, context: context)
        }
        return try await apply(actions, plugins: plugins, context: context)
    }

    public func report(context: any DeviceContext) async throws {
        let plugins = installedPlugins()
        try await reportList(plugins: plugins, context: context)
        // Said at every start: an empty c8y_SupportedSoftwareTypes is otherwise a silent mystery.
        if plugins.isEmpty { throw NoSoftwarePlugins(directory: directory) }
    }

    func apply(_ actions: [Action], plugins: [String], context: any HandlerContext) async throws -> Outcome {
        if let missing = actions.first(where: { !plugins.contains($0.type) }) {
            return .failed("no software plugin for type '\(missing.type)' in \(directory) (available: \(plugins.isEmpty ? "none" : plugins.joined(separator: ", ")))")
        }
        var failure: String?
        for type in Set(actions.map(\.type)).sorted() where failure == nil {
            let group = actions.filter { $0.type == type }
            failure = await run(group, type: type, context: context)
        }
        try await reportList(plugins: plugins, context: context)
        return failure.map { .failed($0) } ?? .successful
    }

    /// prepare; update-list (or each remove, then each install); finalize. Returns the first failure.
    func run(_ actions: [Action], type: String, context: any HandlerContext) async -> String? {
        let plugin = directory + "/" + type
        let prepared = await call(plugin, ["prepare"], context: context)
        guard prepared.succeeded else { return "\(type) prepare failed: \(prepared.failureDescription)" }
        var files: [String: String] = [:]
        for action in actions where action.kind == .install {
            guard let url = action.url, !url.isEmpty else { continue }
            let file = context.stateDirectory + "/artifact-\(files.count)-" + String(action.name.map { $0.isLetter || $0.isNumber || $0 == "." ? $0 : "_" })
            do {
                _ = try await context.download(url, to: file, maxBytes: maxDownloadBytes)
                files[action.name] = file
            } catch {
                return "\(type) \(action.name): \(error)"
            }
        }
        defer { for file in files.values { unlink(file) } }
        let ordered = actions.filter { $0.kind == .remove } + actions.filter { $0.kind == .install }
        var failure: String?
        let list = ordered.map { action in
            [action.kind.rawValue, action.name, action.version ?? "", action.kind == .install ? files[action.name] ?? "" : ""]
                .joined(separator: "\t") + "\n"
        }.joined()
        let batch = await call(plugin, ["update-list"], input: Array(list.utf8), context: context)
        if batch.exitCode == 1 {
            for action in ordered where failure == nil {
                var argv = [plugin, action.kind.rawValue, action.name]
                if let version = action.version, !version.isEmpty { argv += ["--module-version", version] }
                if action.kind == .install, let file = files[action.name] { argv += ["--file", file] }
                let result = await call(plugin, Array(argv.dropFirst()), context: context)
                if !result.succeeded {
                    failure = "\(type) \(action.kind.rawValue) \(action.name)\(action.version.map { " " + $0 } ?? ""): \(Self.describe(result))"
                }
            }
        } else if !batch.succeeded {
            failure = "\(type) update-list failed: \(Self.describe(batch))"
        }
        let finalized = await call(plugin, ["finalize"], context: context)
        if failure == nil && !finalized.succeeded { failure = "\(type) finalize failed: \(finalized.failureDescription)" }
        return failure
    }

    static func describe(_ result: CommandResult) -> String {
        switch result.exitCode {
        case 2?: return "failed (exit 2)" + (result.detail.isEmpty ? "" : ": \(result.detail)")
        case 3?: return "failed, may succeed later (exit 3)" + (result.detail.isEmpty ? "" : ": \(result.detail)")
        default: return result.failureDescription
        }
    }

    func call(_ plugin: String, _ arguments: [String], input: [UInt8]? = nil, context: any DeviceContext) async -> CommandResult {
        await context.runCommand([plugin] + arguments, input: input, environment: environment, timeout: timeout)
    }

    // MARK: Reading operations

    struct Problem: Error { let detail: String }

    /// The actions an operation asks for, each with its software type resolved.
    func parse(_ operation: Operation, plugins: [String]) -> Result<[Action], Problem> {
        guard let items = operation.payload.arrayValue else {
            return .failure(Problem(detail: "\(operation.fragment) must be a list of software modules"))
        }
        var actions: [Action] = []
        for item in items {
            guard let name = item["name"]?.stringValue, !name.isEmpty else {
                return .failure(Problem(detail: "a software module in \(operation.fragment) has no name: \(item)"))
            }
            var version = item["version"]?.stringValue
            var type = item["softwareType"]?.stringValue ?? item["type"]?.stringValue
            if let full = version, let marker = full.firstRange(of: "::") {  // "1.2::apt"
                version = String(full[..<marker.lowerBound])
                if type == nil || type?.isEmpty == true { type = String(full[marker.upperBound...]) }
            }
            if type == nil || type?.isEmpty == true { type = defaultType ?? (plugins.count == 1 ? plugins[0] : nil) }
            guard let resolved = type, !resolved.isEmpty else {
                return .failure(Problem(detail: "software module \(name) has no softwareType and no default type is set"))
            }
            let kind: Action.Kind
            switch item["action"]?.stringValue ?? "install" {
            case "install": kind = .install
            case "delete", "remove": kind = .remove
            case let other: return .failure(Problem(detail: "software module \(name): unknown action '\(other)' (install or delete)"))
            }
            actions.append(Action(kind: kind, name: name, version: version?.isEmpty == true ? nil : version,
                                  url: item["url"]?.stringValue, type: resolved))
        }
        return .success(actions)
    }

    /// For the legacy full list: install what is missing or of another version, remove what is not listed.
    func reconcile(_ desired: [Action], plugins: [String], context: any HandlerContext) async throws -> [Action] {
        let installed = await installedModules(plugins: plugins, context: context)
        var actions: [Action] = []
        for want in desired where !installed.contains(where: { $0.type == want.type && $0.name == want.name && (want.version == nil || $0.version == want.version) }) {
            actions.append(want)
        }
        for have in installed where plugins.contains(have.type) && !desired.contains(where: { $0.type == have.type && $0.name == have.name }) {
            actions.append(Action(kind: .remove, name: have.name, version: have.version, url: nil, type: have.type))
        }
        return actions
    }

    // MARK: Reporting

    struct Module: Equatable { let name: String; let version: String?; let type: String }

    func installedModules(plugins: [String], context: any DeviceContext) async -> [Module] {
        var modules: [Module] = []
        for type in plugins {
            let result = await call(directory + "/" + type, ["list"], context: context)
            guard result.succeeded else { continue }
            for line in result.output.split(separator: "\n") where !line.isEmpty {
                let fields = line.split(separator: "\t", omittingEmptySubsequences: false)
                let version = fields.count > 1 && !fields[1].isEmpty ? String(fields[1]) : nil
                modules.append(Module(name: String(fields[0]), version: version, type: type))
            }
        }
        return modules
    }

    func reportList(plugins: [String], context: any DeviceContext) async throws {
        let modules = await installedModules(plugins: plugins, context: context)
        let list = modules.map { module -> JSONValue in
            ["name": .string(module.name), "version": .string(module.version ?? ""), "softwareType": .string(module.type), "url": ""]
        }
        var legacy: [String: JSONValue] = [:]
        for module in modules { legacy[module.name] = .string(module.version ?? "") }
        try await context.updateInventory([
            "c8y_SoftwareList": .array(list),
            "c8y_Software": .object(legacy),
            "c8y_SupportedSoftwareTypes": .array(plugins.map(JSONValue.string)),
        ])
    }

    /// Executable files in the plugins directory, by name.
    func installedPlugins() -> [String] {
        guard let dir = opendir(directory) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
            guard !name.hasPrefix("."), access(directory + "/" + name, X_OK) == 0 else { continue }
            var info = stat()
            guard stat(directory + "/" + name, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { continue }
            names.append(name)
        }
        return names.sorted()
    }
}

/// No executable software-type plugin in `pluginsDirectory`: nothing can be installed.
struct NoSoftwarePlugins: Error, CustomStringConvertible {
    let directory: String
    var description: String {
        "no executable software plugin in \(directory) (options.pluginsDirectory): c8y_SupportedSoftwareTypes is empty"
    }
}
