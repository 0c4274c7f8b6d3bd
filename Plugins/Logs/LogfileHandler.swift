import HandlerKit

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// `c8y_LogfileRequest` (`{logFile, dateFrom, dateTo, searchText, maximumLines}`): selects the last
/// `maximumLines` lines of a log type that fall in the date range and contain `searchText`, uploads
/// them as the file of a `c8y_Logfile` event, and ends SUCCESSFUL with the file's URL as
/// `c8y_LogfileRequest.file`. The types are advertised as `c8y_SupportedLogs`.
///
/// Shapes are those of the platform's device-management reference, "Logs": the operation's fields,
/// the event (`type: c8y_Logfile`, the request copied into it), the multipart upload to
/// `/event/events/{id}/binaries`, and `file` in the final update, which the Logs tab links to.
///
/// A type reads one of three sources:
/// - `files`: a path or glob (`/var/log/syslog*`), read newest first by modification time across
///   rotated files; `.gz` files are decompressed with `gunzip` (default `[/bin/gzip, -dc]`). A file
///   is skipped when its modification time shows it holds nothing of the range.
/// - `command`: argv (no shell) whose standard output is the log; `{since}` and `{until}` become
///   `YYYY-MM-DD HH:MM:SS UTC` (as `journalctl --since` takes them), `{sinceISO}` and `{untilISO}`
///   ISO 8601 in UTC.
/// - a log plugin listed in `plugins`: an executable answering `list` (one type a line) and
///   `get TYPE --since ISO --until ISO [--filter TEXT] --lines N` (the lines on standard output).
///
/// Lines that begin with an ISO 8601 time are kept only within the range; lines without one
/// (continuations) share the time of the line before. `searchText` is matched as written (case
/// matters). An empty selection is an empty file, not a failure.
///
/// Options: `types` (list of `{type, files | command, timeout}`), `plugins` (absolute paths),
/// `maxBytes` (cap of the uploaded file, default 8 MiB; the oldest lines go first),
/// `maxInputBytes` (cap of one command's output or one decompressed file, default 256 MiB),
/// `timeout` (seconds per command, default 60), `maximumLines` (when a request names none,
/// default 1000), `gunzip` (argv).
public struct LogfileHandler: OperationHandler {
    enum Source: Sendable {
        case files(String)
        case command([String])
        case plugin(String)
    }

    struct LogType: Sendable {
        let name: String
        let source: Source
        let timeout: Duration
    }

    let types: [LogType]
    let plugins: [String]
    let maxBytes: Int64
    let maxInputBytes: Int64
    let timeout: Duration
    let defaultLines: Int
    let gunzip: [String]

    struct Options: Decodable {
        struct TypeOption: Decodable {
            var type: String
            var files: String?
            var command: [String]?
            var timeout: Int64?
        }
        var types: [TypeOption]?
        var plugins: [String]?
        var maxBytes: Int64?
        var maxInputBytes: Int64?
        var timeout: Int64?
        var maximumLines: Int?
        var gunzip: [String]?
    }

    public init(options: JSONValue) throws(HandlerOptionsError) {
        let options = try options.decode(Options.self)
        let seconds = options.timeout ?? 60
        guard seconds > 0 else { throw HandlerOptionsError("options.timeout must be a positive number of seconds") }
        timeout = .seconds(seconds)
        var seen = Set<String>()
        var types: [LogType] = []
        for (index, option) in (options.types ?? []).enumerated() {
            let place = "options.types[\(index)]"
            guard !option.type.isEmpty else { throw HandlerOptionsError("\(place).type must not be empty") }
            guard seen.insert(option.type).inserted else { throw HandlerOptionsError("\(place): type \(option.type) is declared twice") }
            let source: Source
            switch (option.files, option.command) {
            case (let files?, nil):
                guard files.hasPrefix("/") else { throw HandlerOptionsError("\(place).files must be an absolute path or glob") }
                source = .files(files)
            case (nil, let command?):
                guard command.first?.hasPrefix("/") == true else {
                    throw HandlerOptionsError("\(place).command must be a list starting with an absolute program path")
                }
                source = .command(command)
            default:
                throw HandlerOptionsError("\(place) needs exactly one of files and command")
            }
            let typeSeconds = option.timeout ?? seconds
            guard typeSeconds > 0 else { throw HandlerOptionsError("\(place).timeout must be a positive number of seconds") }
            types.append(LogType(name: option.type, source: source, timeout: .seconds(typeSeconds)))
        }
        self.types = types
        plugins = options.plugins ?? []
        if let bad = plugins.first(where: { !$0.hasPrefix("/") }) {
            throw HandlerOptionsError("options.plugins must list absolute paths, found \(bad)")
        }
        guard !types.isEmpty || !plugins.isEmpty else { throw HandlerOptionsError("options need types or plugins: this device would have no logs") }
        maxBytes = options.maxBytes ?? 8 << 20
        maxInputBytes = options.maxInputBytes ?? 256 << 20
        defaultLines = options.maximumLines ?? 1000
        guard maxBytes > 0, maxInputBytes > 0 else { throw HandlerOptionsError("options.maxBytes and options.maxInputBytes must be positive") }
        guard defaultLines > 0 else { throw HandlerOptionsError("options.maximumLines must be positive") }
        gunzip = options.gunzip ?? ["/bin/gzip", "-dc"]
        guard gunzip.first?.hasPrefix("/") == true else { throw HandlerOptionsError("options.gunzip must start with an absolute program path") }
    }

    public func report(context: any DeviceContext) async throws {
        let names = await supportedTypes(context).map(\.name)
        try await context.updateInventory(["c8y_SupportedLogs": .array(names.map { .string($0) })])
    }

    /// The declared types, then each plugin's (a plugin that fails `list` offers none; the first
    /// source of a name wins).
    func supportedTypes(_ context: any DeviceContext) async -> [LogType] {
        var all = types
        var seen = Set(types.map(\.name))
        for plugin in plugins {
            let listed = await context.runCommand([plugin, "list"], input: nil, environment: [:], timeout: timeout,
                                                  logging: .outputSummary)
            guard listed.succeeded else { continue }
            for line in listed.output.split(whereSeparator: { $0 == "\n" || $0 == "\r" }) {
                let name = String(line.filter { !$0.isWhitespace })
                if !name.isEmpty, seen.insert(name).inserted { all.append(LogType(name: name, source: .plugin(plugin), timeout: timeout)) }
            }
        }
        return all
    }

    public func execute(_ operation: Operation, context: any HandlerContext) async throws -> Outcome {
        let request = operation.payload
        let known = await supportedTypes(context)
        guard let name = request["logFile"]?.stringValue, !name.isEmpty else {
            return .failed("c8y_LogfileRequest.logFile is missing: name one of \(known.map(\.name).joined(separator: ", "))")
        }
        guard let type = known.first(where: { $0.name == name }) else {
            return .failed("unknown log type \(name); this device has: \(known.map(\.name).joined(separator: ", "))")
        }
        let query: LogQuery
        switch self.query(request) {
        case .success(let value): query = value
        case .failure(let problem): return .failed(problem.detail)
        }
        let work = context.stateDirectory + "/logs"
        mkdir(work, 0o700)

        var inputs: [LogInput] = []
        switch type.source {
        case .files(let pattern):
            let files = try await context.blocking { () throws(LogSelection.Failure) in try Self.filesNewestFirst(pattern) }
            for (index, file) in LogSelection.inRange(files, from: query.from, to: query.to).enumerated() {
                guard file.path.hasSuffix(".gz") else { inputs.append(file); continue }
                let plain = work + "/input-\(index)"
                let result = await context.runCommand(gunzip + [file.path], input: nil, environment: [:], timeout: type.timeout,
                                                      logging: .outputToFile(path: plain, maxBytes: maxInputBytes))
                guard result.succeeded else { return .failed("cannot decompress \(file.path): \(result.failureDescription)") }
                inputs.append(LogInput(path: plain, modified: file.modified))
            }
            await context.log("\(files.count) files match \(pattern); \(inputs.count) may hold lines of the range")
        case .command(let argv):
            let output = work + "/input-command"
            let result = await context.runCommand(argv.map { render($0, query) }, input: nil, environment: [:], timeout: type.timeout,
                                                  logging: .outputToFile(path: output, maxBytes: maxInputBytes))
            guard result.succeeded else { return .failed("the \(name) log command failed: \(result.failureDescription)") }
            inputs.append(LogInput(path: output, modified: nil))
        case .plugin(let plugin):
            var argv = [plugin, "get", name, "--since", iso(query.from ?? 0), "--until", iso(query.to ?? now())]
            if !query.searchText.isEmpty { argv += ["--filter", query.searchText] }
            argv += ["--lines", String(query.maximumLines)]
            let output = work + "/input-plugin"
            let result = await context.runCommand(argv, input: nil, environment: [:], timeout: type.timeout,
                                                  logging: .outputToFile(path: output, maxBytes: maxInputBytes))
            guard result.succeeded else { return .failed("the log plugin \(plugin) failed for \(name): \(result.failureDescription)") }
            inputs.append(LogInput(path: output, modified: nil))
        }

        let selected = work + "/selected.log"
        let summary: LogSelectionSummary
        let chosen = inputs
        do {
            summary = try await context.blocking { () throws(LogSelection.Failure) in
                try LogSelection.select(chosen, query: query, into: selected)
            }
        } catch {
            return .failed("cannot read the \(name) log: \(error)")
        }
        await context.log("selected \(summary.lines) lines (\(summary.bytes) bytes) of \(name)"
                          + (summary.droppedForSize > 0 ? "; \(summary.droppedForSize) older matching lines left out to stay within \(maxBytes) bytes" : ""))
        let url = try await context.sendEvent(type: "c8y_Logfile", text: "\(name) log file (\(summary.lines) lines)",
                                              fragments: ["c8y_LogfileRequest": request], attaching: selected,
                                              fileName: fileName(name), contentType: "text/plain")
        var answered = request.objectValue ?? [:]
        answered["file"] = .string(url)
        return .successful(result: ["c8y_LogfileRequest": .object(answered)])
    }

    struct RequestProblem: Error { let detail: String }

    /// The request's range, text and line count; `maximumLines` may be a number or text (the
    /// reference types it as String, the UI sends a number).
    func query(_ request: JSONValue) -> Result<LogQuery, RequestProblem> {
        func date(_ key: String) -> Result<Int64?, RequestProblem> {
            guard let value = request[key], value != .null else { return .success(nil) }
            guard let text = value.stringValue, let seconds = LogTime.parse(text) else {
                return .failure(RequestProblem(detail: "c8y_LogfileRequest.\(key) is not an ISO 8601 date and time: \(value)"))
            }
            return .success(seconds)
        }
        let from: Int64?, to: Int64?
        switch (date("dateFrom"), date("dateTo")) {
        case (.success(let a), .success(let b)): (from, to) = (a, b)
        case (.failure(let problem), _), (_, .failure(let problem)): return .failure(problem)
        }
        var lines = defaultLines
        if let value = request["maximumLines"], value != .null {
            guard let number = value.intValue.map({ Int(clamping: $0) }) ?? value.stringValue.flatMap({ Int($0) }), number > 0 else {
                return .failure(RequestProblem(detail: "c8y_LogfileRequest.maximumLines must be a positive whole number, found \(value)"))
            }
            lines = number
        }
        return .success(LogQuery(from: from, to: to, searchText: request["searchText"]?.stringValue ?? "", maximumLines: lines,
                                 maxBytes: maxBytes))
    }

    func render(_ argument: String, _ query: LogQuery) -> String {
        let since = query.from ?? 0, until = query.to ?? now()
        return argument
            .replacing("{sinceISO}", with: iso(since)).replacing("{untilISO}", with: iso(until))
            .replacing("{since}", with: LogTime.format(since) + " UTC").replacing("{until}", with: LogTime.format(until) + " UTC")
    }

    func iso(_ seconds: Int64) -> String {
        LogTime.format(seconds).replacing(" ", with: "T") + "Z"
    }

    func now() -> Int64 { Int64(time(nil)) }

    func fileName(_ type: String) -> String {
        String(type.map { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == "." ? $0 : "_" }) + ".log"
    }

    /// The regular files a glob matches with their modification times, newest first.
    static func filesNewestFirst(_ pattern: String) throws(LogSelection.Failure) -> [(path: String, modified: Int64)] {
        var matches = glob_t()
        defer { globfree(&matches) }
        let status = glob(pattern, 0, nil, &matches)
        if status == GLOB_NOMATCH { return [] }
        guard status == 0 else { throw LogSelection.Failure(description: "cannot expand \(pattern) (glob error \(status))") }
        var files: [(path: String, modified: Int64)] = []
        for index in 0..<Int(matches.gl_pathc) {
            guard let pointer = matches.gl_pathv[index] else { continue }
            let path = String(cString: pointer)
            var info = stat()
            guard stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { continue }
            files.append((path, Int64(info.st_mtim.tv_sec)))
        }
        return files.sorted { $0.modified != $1.modified ? $0.modified > $1.modified : $0.path < $1.path }
    }
}
