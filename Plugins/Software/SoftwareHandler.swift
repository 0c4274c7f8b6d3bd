import HandlerKit
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Software management through software-type plugins with thin-edge.io's plugin interface
/// (`list`, `prepare`, `install NAME [--module-version V] [--file F]`, `remove NAME [--module-version V]`,
/// `update-list` on stdin, `finalize`; its docs/src/references/software-management-plugin-api.md), so
/// existing plugins work unchanged.
///
/// Handles `c8y_SoftwareUpdate` (a partial list: `action: install|delete`, `softwareType`) and the legacy
/// `c8y_SoftwareList` (the full desired list: missing or other versions installed, unlisted removed).
/// Reports `c8y_SoftwareList`, the legacy `c8y_Software` map and `c8y_SupportedSoftwareTypes` at start
/// and after every operation.
///
/// As thin-edge does: modules go to each plugin in the order of the request (types in the order they
/// first appear); `finalize` follows every successful `prepare`; every module and type is attempted and
/// the operation fails listing each error; a plugin whose `list` fails is left out of
/// `c8y_SupportedSoftwareTypes` (with an alarm naming it, cleared once it lists again); each type
/// reports at most `maxPackages` modules, those matching `include` or not matching `exclude`.
///
/// Options: `pluginsDirectory` (default `/usr/lib/switchyard/sm-plugins`; each executable's name is a
/// software type), `defaultType` (for modules without a type; default: the only plugin, if there is one),
/// `timeout` (seconds per plugin call, default 300), `maxDownloadBytes` (default 512 MiB),
/// `maxPackages` (per type, default 1000), `include` / `exclude` (regular expressions on module names),
/// `env` (variables for the plugins).
public struct SoftwareHandler: OperationHandler {
    let directory: String
    let defaultType: String?
    let timeout: Duration
    let maxDownloadBytes: Int64
    let maxPackages: Int
    let include: Filter?
    let exclude: Filter?
    let environment: [String: String]
    /// The broken-list alarms this handler raised, to clear once their plugin lists again.
    let raised = AlarmSet()

    /// A regular expression on module names, with the text it was written as.
    struct Filter: @unchecked Sendable {
        let pattern: String
        let regex: Regex<AnyRegexOutput>

        init(_ pattern: String, option: String) throws(HandlerOptionsError) {
            self.pattern = pattern
            do {
                regex = try Regex(pattern)
            } catch {
                throw HandlerOptionsError("options.\(option) is not a regular expression: \(error)")
            }
        }

        func matches(_ name: String) -> Bool { name.contains(regex) }
    }

    struct Options: Decodable {
        var pluginsDirectory: String?
        var defaultType: String?
        var timeout: Int64?
        var maxDownloadBytes: Int64?
        var maxPackages: Int?
        var include: String?
        var exclude: String?
        var env: [String: String]?
    }

    public init(options: JSONValue) throws(HandlerOptionsError) {
        let options = try options.decode(Options.self)
        directory = options.pluginsDirectory ?? "/usr/lib/switchyard/sm-plugins"
        guard directory.hasPrefix("/") else { throw HandlerOptionsError("options.pluginsDirectory must be an absolute path") }
        defaultType = options.defaultType
        let seconds = options.timeout ?? 300
        guard seconds > 0 else { throw HandlerOptionsError("options.timeout must be a positive number of seconds") }
        timeout = .seconds(seconds)
        maxDownloadBytes = options.maxDownloadBytes ?? 512 << 20
        maxPackages = options.maxPackages ?? 1000
        guard maxPackages > 0 else { throw HandlerOptionsError("options.maxPackages must be a positive number") }
        include = try options.include.map { pattern throws(HandlerOptionsError) in try Filter(pattern, option: "include") }
        exclude = try options.exclude.map { pattern throws(HandlerOptionsError) in try Filter(pattern, option: "exclude") }
        environment = options.env ?? [:]
    }

    /// One module to install or remove.
    struct Action: Equatable {
        enum Kind: String { case install, remove }
        let kind: Kind
        let name: String
        let version: String?
        let url: String?
        let type: String

        var label: String { "\(kind.rawValue) \(name)" + (version.map { " " + $0 } ?? "") }
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
        // At start every working plugin's alarm is cleared (one may be left from an earlier run).
        let broken = try await reportList(plugins: plugins, context: context, clearingAll: true)
        // Said at every start: an empty c8y_SupportedSoftwareTypes is otherwise a silent mystery.
        if plugins.isEmpty { throw NoSoftwarePlugins(directory: directory) }
        if !broken.isEmpty { throw BrokenSoftwarePlugins(directory: directory, problems: broken) }
    }

    /// Every type in the order it first appears, every module attempted; fails listing each error.
    func apply(_ actions: [Action], plugins: [String], context: any HandlerContext) async throws -> Outcome {
        var types: [String] = []
        for action in actions where !types.contains(action.type) { types.append(action.type) }
        var errors: [String] = []
        for type in types {
            guard plugins.contains(type) else {
                errors.append("no software plugin for type '\(type)' in \(directory) (available: \(plugins.isEmpty ? "none" : plugins.joined(separator: ", ")))")
                continue
            }
            errors += await run(actions.filter { $0.type == type }, type: type, context: context)
        }
        _ = try await reportList(plugins: plugins, context: context, clearingAll: false)
        guard !errors.isEmpty else { return .successful }
        return .failed(errors.count == 1 ? errors[0] : "\(errors.count) errors: " + errors.joined(separator: "; "))
    }

    /// prepare; the downloads; update-list (or, when it answers 1, each module in turn); finalize after
    /// a successful prepare whatever happened between. Returns every error.
    func run(_ actions: [Action], type: String, context: any HandlerContext) async -> [String] {
        let plugin = directory + "/" + type
        let prepared = await call(plugin, ["prepare"], context: context)
        guard prepared.succeeded else { return ["\(type) prepare failed: \(Self.describe(prepared))"] }
        var errors: [String] = []
        var files: [Int: String] = [:]   // by the action's place in the request: one name may come in two versions
        var runnable: [(index: Int, action: Action)] = []
        for (index, action) in actions.enumerated() {
            if action.kind == .install, let url = action.url, !url.isEmpty {
                let safe = String((action.name + "-" + (action.version ?? "")).map { $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" ? $0 : "_" })
                let file = context.stateDirectory + "/artifact-\(index)-" + safe
                do {
                    _ = try await context.download(url, to: file, maxBytes: maxDownloadBytes)
                    files[index] = file
                } catch {
                    errors.append("\(type) \(action.label): download failed: \(error)")
                    continue
                }
            }
            runnable.append((index, action))
        }
        defer { for file in files.values { unlink(file) } }
        if !runnable.isEmpty {
            let list = runnable.map { index, action in
                [action.kind.rawValue, action.name, action.version ?? "", action.kind == .install ? files[index] ?? "" : ""]
                    .joined(separator: "\t") + "\n"
            }.joined()
            let batch = await call(plugin, ["update-list"], input: Array(list.utf8), context: context)
            if batch.exitCode == 1 {
                for (index, action) in runnable {
                    var arguments = [action.kind.rawValue, action.name]
                    if let version = action.version, !version.isEmpty { arguments += ["--module-version", version] }
                    if action.kind == .install, let file = files[index] { arguments += ["--file", file] }
                    let result = await call(plugin, arguments, context: context)
                    if !result.succeeded { errors.append("\(type) \(action.label): \(Self.describe(result))") }
                }
            } else if !batch.succeeded {
                errors.append("\(type) update-list failed: \(Self.describe(batch))")
            }
        }
        let finalized = await call(plugin, ["finalize"], context: context)
        if !finalized.succeeded { errors.append("\(type) finalize failed: \(Self.describe(finalized))") }
        return errors
    }

    /// A plugin's failure as the API's exit statuses mean it.
    static func describe(_ result: CommandResult) -> String {
        let detail = result.detail.isEmpty ? "" : ": \(result.detail)"
        switch result.exitCode {
        case 1?: return "usage error (exit 1)" + detail
        case 2?: return "failed (exit 2)" + detail
        case 3?: return "failed, may succeed later (exit 3)" + detail
        default: return result.failureDescription
        }
    }

    func call(_ plugin: String, _ arguments: [String], input: [UInt8]? = nil, logging: CommandLogging = .full,
              context: any DeviceContext) async -> CommandResult {
        await context.runCommand([plugin] + arguments, input: input, environment: environment, timeout: timeout, logging: logging)
    }

    // MARK: Reading operations

    struct Problem: Error { let detail: String }

    /// The actions an operation asks for, in its order, each with its software type resolved.
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
            if type?.isEmpty ?? true, let full = version, let marker = full.ranges(of: "::").last {  // "1.2::apt"
                version = String(full[..<marker.lowerBound])
                type = String(full[marker.upperBound...])
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
        let installed = await installedModules(plugins: plugins, context: context).modules
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

    /// What every plugin lists, filtered and capped per type, and the plugins whose `list` failed.
    func installedModules(plugins: [String], context: any DeviceContext) async -> (modules: [Module], broken: [String: String]) {
        var modules: [Module] = []
        var broken: [String: String] = [:]
        for type in plugins {
            let result = await call(directory + "/" + type, ["list"], logging: .outputSummary, context: context)
            guard result.succeeded else {
                broken[type] = Self.describe(result)
                continue
            }
            var kept = 0
            for (name, version) in Self.parseList(result.output) where reported(name) {
                guard kept < maxPackages else { break }
                modules.append(Module(name: name, version: version, type: type))
                kept += 1
            }
        }
        return (modules, broken)
    }

    /// thin-edge's rule: reported when it matches `include`, or does not match `exclude`.
    func reported(_ name: String) -> Bool {
        if let include, include.matches(name) { return true }
        if let exclude { return !exclude.matches(name) }
        return true
    }

    /// `list` output: "CSV with tabulations as separators", a module per line, its name then its version
    /// (the version and its tab may be missing). Fields may be in double quotes (`""` inside one is a
    /// quote); CR before LF and empty lines are ignored.
    static func parseList(_ output: String) -> [(name: String, version: String?)] {
        var modules: [(String, String?)] = []
        // "\r\n" is one Character in Swift: both it and "\n" end a line.
        for line in output.split(omittingEmptySubsequences: true, whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            let fields = tabSeparatedFields(line)
            guard let name = fields.first, !name.isEmpty else { continue }
            let version = fields.count > 1 && !fields[1].isEmpty ? fields[1] : nil
            modules.append((name, version))
        }
        return modules
    }

    static func tabSeparatedFields(_ line: Substring) -> [String] {
        var fields: [String] = []
        var field = ""
        var quoted = false
        var atFieldStart = true
        var characters = line.makeIterator()
        while let character = characters.next() {
            if quoted {
                if character == "\"" {
                    // `""` is a quote; a lone `"` ends the quoted part.
                    var lookahead = characters
                    if lookahead.next() == "\"" {
                        field.append("\"")
                        characters = lookahead
                    } else {
                        quoted = false
                    }
                } else {
                    field.append(character)
                }
            } else if character == "\t" {
                fields.append(field)
                field = ""
                atFieldStart = true
                continue
            } else if character == "\"" && atFieldStart {
                quoted = true
            } else {
                field.append(character)
            }
            atFieldStart = false
        }
        fields.append(field)
        return fields
    }

    /// Reports the list and the working types; raises an alarm for each plugin whose `list` fails and
    /// clears it once it works (every working plugin's with `clearingAll`, else those raised by this
    /// handler). Returns the broken plugins with their problem.
    func reportList(plugins: [String], context: any DeviceContext, clearingAll: Bool) async throws -> [String: String] {
        let (modules, broken) = await installedModules(plugins: plugins, context: context)
        let list = modules.map { module -> JSONValue in
            ["name": .string(module.name), "version": .string(module.version ?? ""), "softwareType": .string(module.type), "url": ""]
        }
        var legacy: [String: JSONValue] = [:]
        for module in modules { legacy[module.name] = .string(module.version ?? "") }
        let working = plugins.filter { broken[$0] == nil }
        try await context.updateInventory([
            "c8y_SoftwareList": .array(list),
            "c8y_Software": .object(legacy),
            "c8y_SupportedSoftwareTypes": .array(working.map(JSONValue.string)),
        ])
        for type in plugins {
            let alarm = Self.brokenListAlarm(type)
            if let problem = broken[type] {
                try await context.raiseAlarm(type: alarm, severity: .major, text: "software plugin \(directory)/\(type) failed its list command "
                                             + "(\(problem)); software type \(type) is left out of c8y_SupportedSoftwareTypes until it lists again")
                raised.insert(alarm)
            } else if clearingAll || raised.contains(alarm) {
                try await context.clearAlarm(type: alarm)
                raised.remove(alarm)
            }
        }
        return broken
    }

    /// The alarm raised while a plugin's `list` fails, one type per plugin.
    static func brokenListAlarm(_ type: String) -> String { "switchyard_SoftwarePluginList_" + type }

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

/// Plugins whose `list` failed: they are not advertised (the inventory and the alarms say so).
struct BrokenSoftwarePlugins: Error, CustomStringConvertible {
    let directory: String
    let problems: [String: String]
    var description: String {
        "software plugins whose list failed, left out of c8y_SupportedSoftwareTypes: "
            + problems.keys.sorted().map { "\(directory)/\($0): \(problems[$0] ?? "")" }.joined(separator: "; ")
    }
}

/// No executable software-type plugin in `pluginsDirectory`: nothing can be installed.
struct NoSoftwarePlugins: Error, CustomStringConvertible {
    let directory: String
    var description: String {
        "no executable software plugin in \(directory) (options.pluginsDirectory): c8y_SupportedSoftwareTypes is empty"
    }
}

/// Alarm types, shared by the copies of a handler value.
final class AlarmSet: Sendable {
    private let types = Mutex<Set<String>>([])
    func insert(_ type: String) { _ = types.withLock { $0.insert(type) } }
    func remove(_ type: String) { _ = types.withLock { $0.remove(type) } }
    func contains(_ type: String) -> Bool { types.withLock { $0.contains(type) } }
}
