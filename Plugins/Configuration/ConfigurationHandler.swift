import HandlerKit

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Device configuration, in the three forms of the platform's Configuration tab (device-management
/// reference, "Configuration"):
///
/// - **Text**: `c8y_Configuration` (`{config}`) writes the text to the file and applies it, then
///   reports it as the device's `c8y_Configuration`; `c8y_SendConfiguration` reports the file as it is.
/// - **Typed files**: the device advertises `c8y_SupportedConfigurations` (the declared types);
///   `c8y_UploadConfigFile` (`{type}`) creates an event whose type is the configuration type and
///   attaches the file to it; `c8y_DownloadConfigFile` (`{type, url}`) downloads the file, installs
///   and applies it, then reports `c8y_Configuration_<type>` (`{name, time, type, url}`).
/// - **Legacy files**: the same two operations without `type` mean the default type. A legacy upload
///   stores the file in the file repository with a `c8y_ConfigurationDump` managed object (the
///   configuration repository entry); a legacy download's `c8y_ConfigurationDump` reference is
///   copied into the device's inventory.
///
/// Every replacement goes through ``ConfigurationFile/install(_:)`` (atomic, owner and mode kept
/// or set, previous version kept, restored when `apply` fails).
///
/// Options: text form `file`, `apply` (argv), `maxBytes` (default 1 MiB), `applyTimeout` (seconds,
/// default 60); typed form `files`, a list of `{type, path, owner, group, mode, apply, applyTimeout,
/// maxBytes}`; `defaultType` (default: the first of `files`, or `configuration` for `file`).
public struct ConfigurationHandler: OperationHandler {
    /// The text file (`file`), when declared: reported as `c8y_Configuration` at start.
    let text: ConfigurationFile?
    /// Every file, text and typed, by type.
    let files: [ConfigurationFile]
    let typed: Bool
    let defaultType: String

    struct Mode: Decodable {
        let value: mode_t
        init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            // "0640" as text, or 640 / 0640 as a YAML number: the digits are octal either way.
            let digits = (try? container.decode(String.self)) ?? (try? container.decode(Int.self)).map { String($0) } ?? ""
            guard !digits.isEmpty, let value = mode_t(digits, radix: 8), value <= 0o7777 else {
                throw DecodingError.dataCorruptedError(in: container, debugDescription: "must be an octal file mode such as \"0640\"")
            }
            self.value = value
        }
    }

    struct Options: Decodable {
        struct File: Decodable {
            var type: String
            var path: String
            var owner: String?
            var group: String?
            var mode: Mode?
            var apply: [String]?
            var applyTimeout: Int64?
            var maxBytes: Int64?
        }
        var file: String?
        var apply: [String]?
        var maxBytes: Int64?
        var applyTimeout: Int64?
        var files: [File]?
        var defaultType: String?
    }

    public init(options: JSONValue) throws(HandlerOptionsError) {
        let options = try options.decode(Options.self)
        func checked(_ place: String, type: String, path: String, owner: String? = nil, group: String? = nil, mode: mode_t? = nil,
                     apply: [String]?, applyTimeout: Int64?, maxBytes: Int64?) throws(HandlerOptionsError) -> ConfigurationFile {
            guard path.hasPrefix("/") else { throw HandlerOptionsError("\(place) must be the absolute path of the configuration file") }
            if let apply, apply.first?.hasPrefix("/") != true {
                throw HandlerOptionsError("\(place == "options.file" ? "options" : place).apply must be a list starting with an absolute program path")
            }
            let seconds = applyTimeout ?? 60
            guard seconds > 0 else { throw HandlerOptionsError("\(place == "options.file" ? "options" : place).applyTimeout must be a positive number of seconds") }
            let bytes = maxBytes ?? 1 << 20
            guard bytes > 0 else { throw HandlerOptionsError("\(place == "options.file" ? "options" : place).maxBytes must be positive") }
            return ConfigurationFile(type: type, path: path, owner: owner, group: group, mode: mode, apply: apply,
                                     applyTimeout: .seconds(seconds), maxBytes: bytes)
        }
        var files: [ConfigurationFile] = []
        for (index, file) in (options.files ?? []).enumerated() {
            let place = "options.files[\(index)]"
            guard !file.type.isEmpty else { throw HandlerOptionsError("\(place).type must not be empty") }
            guard !files.contains(where: { $0.type == file.type }) else { throw HandlerOptionsError("\(place): type \(file.type) is declared twice") }
            files.append(try checked(place + ".path", type: file.type, path: file.path, owner: file.owner, group: file.group,
                                     mode: file.mode?.value, apply: file.apply, applyTimeout: file.applyTimeout, maxBytes: file.maxBytes))
        }
        typed = !files.isEmpty
        if let path = options.file {
            let type = options.defaultType ?? files.first?.type ?? "configuration"
            let file = try checked("options.file", type: type, path: path, apply: options.apply, applyTimeout: options.applyTimeout,
                                   maxBytes: options.maxBytes)
            text = file
            if !files.contains(where: { $0.type == type }) { files.insert(file, at: 0) }
        } else {
            text = nil
        }
        guard let first = files.first else { throw HandlerOptionsError("options need file (text configuration) or files (typed configuration files)") }
        let defaultType = options.defaultType ?? text?.type ?? first.type
        guard files.contains(where: { $0.type == defaultType }) else {
            throw HandlerOptionsError("options.defaultType \(defaultType) is not one of the declared types (\(files.map(\.type).joined(separator: ", ")))")
        }
        self.defaultType = defaultType
        self.files = files
    }

    var defaultFile: ConfigurationFile? { files.first { $0.type == defaultType } }

    public func report(context: any DeviceContext) async throws {
        if typed {
            try await context.updateInventory(["c8y_SupportedConfigurations": .array(files.map { .string($0.type) })])
        }
        if let text, let current = await context.blocking({ readAll(text.path) }) {
            try await context.updateInventory(["c8y_Configuration": ["config": .string(current)]])
        }
    }

    public func execute(_ operation: Operation, context: any HandlerContext) async throws -> Outcome {
        switch operation.fragment {
        case "c8y_SendConfiguration": return try await sendText(context)
        case "c8y_UploadConfigFile", "c8y_DownloadConfigFile":
            switch file(for: operation.payload) {
            case .failure(let problem): return .failed(problem.detail)
            case .success(let file) where operation.fragment == "c8y_UploadConfigFile": return try await upload(file, operation, context)
            case .success(let file): return try await download(file, operation.payload, context)
            }
        default: return try await replaceText(operation.payload, context)
        }
    }

    /// The declared file of the request's `type` (the default one without a type).
    func file(for request: JSONValue) -> Result<ConfigurationFile, HandlerOptionsError> {
        let type = request["type"]?.stringValue.flatMap { $0.isEmpty ? nil : $0 } ?? defaultType
        guard let file = files.first(where: { $0.type == type }) else {
            return .failure(HandlerOptionsError("unknown configuration type \(type); this device has: \(files.map(\.type).joined(separator: ", "))"))
        }
        return .success(file)
    }

    func sendText(_ context: any HandlerContext) async throws -> Outcome {
        guard let file = text ?? defaultFile else { return .failed("no configuration file is declared") }
        let path = file.path
        // errno is read on the thread that read the file.
        let (read, why) = await context.blocking { () -> (String?, String) in let text = readAll(path); return (text, errorText()) }
        guard let current = read else { return .failed("cannot read \(file.path): \(why)") }
        try await context.updateInventory(["c8y_Configuration": ["config": .string(current)]])
        return .successful
    }

    func replaceText(_ request: JSONValue, _ context: any HandlerContext) async throws -> Outcome {
        guard let file = text ?? defaultFile else { return .failed("no configuration file is declared") }
        guard let config = request["config"]?.stringValue else { return .failed("c8y_Configuration.config is missing or not text") }
        let bytes = Array(config.utf8)
        guard Int64(bytes.count) <= file.maxBytes else {
            return .failed("the configuration is \(bytes.count) bytes; this device accepts at most \(file.maxBytes)")
        }
        if let problem = await file.stage(bytes, context) { return .failed(problem) }
        if let problem = await file.install(context) { return .failed(problem) }
        await context.log("wrote \(bytes.count) bytes to \(file.path)")
        try await context.updateInventory(["c8y_Configuration": ["config": .string(config)]])
        return .successful
    }

    /// Typed upload: an event of the configuration's type with the file attached. Legacy upload (no
    /// `type`): the file stored in the file repository and a `c8y_ConfigurationDump` managed object
    /// referring to it, the configuration repository entry the legacy tab lists.
    func upload(_ file: ConfigurationFile, _ operation: Operation, _ context: any HandlerContext) async throws -> Outcome {
        guard access(file.path, R_OK) == 0 else { return .failed("cannot read \(file.path): \(errorText())") }
        guard operation.payload["type"]?.stringValue?.isEmpty == false else {
            let device = operation.externalId ?? operation.deviceId
            let stored = try await context.storeFile(file.path, fileName: file.fileName, contentType: "text/plain", describedBy: [
                "name": .string("\(device) \(file.type) configuration"), "type": "c8y_ConfigurationDump",
                "description": .string("Uploaded by \(device) on \(platformTimestamp()) from \(file.path)"),
            ])
            await context.log("stored \(file.path) as \(stored.url) (configuration repository entry \(stored.managedObject))")
            return .successful
        }
        let url = try await context.sendEvent(type: file.type, text: "\(file.type) configuration (\(file.path))", fragments: [:],
                                              attaching: file.path, fileName: file.fileName, contentType: "text/plain")
        await context.log("uploaded \(file.path) as \(url)")
        return .successful
    }

    /// Typed (or legacy) download: streamed beside the target, then installed like any replacement.
    func download(_ file: ConfigurationFile, _ request: JSONValue, _ context: any HandlerContext) async throws -> Outcome {
        guard let url = request["url"]?.stringValue, !url.isEmpty else { return .failed("c8y_DownloadConfigFile.url is missing") }
        unlink(file.staged)  // never resume a file left by another download
        let size: Int64
        do {
            size = try await context.download(url, to: file.staged, maxBytes: file.maxBytes)
        } catch {
            unlink(file.staged)
            return .failed("\(error); \(file.path) was not changed")
        }
        await context.log("downloaded \(size) bytes for \(file.path)")
        if let problem = await file.install(context) { return .failed(problem) }
        var fragments: [String: JSONValue] = [:]
        if request["type"]?.stringValue?.isEmpty == false {
            fragments["c8y_Configuration_\(file.type)"] = [
                "name": .string(file.type), "type": .string(file.type), "url": .string(url), "time": .string(platformTimestamp()),
            ]
        }
        if let dump = request["c8y_ConfigurationDump"], dump != .null { fragments["c8y_ConfigurationDump"] = dump }
        if !fragments.isEmpty { try await context.updateInventory(fragments) }
        return .successful
    }
}
