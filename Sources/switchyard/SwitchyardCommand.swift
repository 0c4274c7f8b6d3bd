import ArgumentParser
import BuiltinHandlers
import HandlerKit
import Logging
import ServiceLifecycle
import UnixSignals
import Switchyard

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

@main
struct SwitchyardCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchyard",
        abstract: "A Cumulocity device agent whose operations are handlers declared in handlers.d.",
        discussion: """
            The configuration is read from --config, else $SWITCHYARD_CONFIG, else \(AgentConfiguration.defaultFile) \
            when it exists; every key can be set as SWITCHYARD_<KEY> (see `switchyard config check`).

            Exit status: 0 success; 1 a failure at run time, rejected handler files, or problems found by \
            `config check`; 2 a configuration that cannot be used (each problem named with where it was set); \
            64 wrong usage (unknown option or argument).
            """,
        version: Agent.version,
        subcommands: [Run.self, Config.self, Handlers.self, Token.self])

    /// ArgumentParser's own `main`, after the agent's executor is installed: before any task is queued,
    /// so that libdispatch's pool (and its once-a-second monitor) never starts.
    static func main() async {
        GlobalExecutor.install(environment: processEnvironment())
        do {
            var command = try parseAsRoot()
            if var command = command as? any AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }
}

/// `--log-level` (the strongest of the three places a level can be set).
struct LoggingOptions: ParsableArguments {
    @Option(name: .long, help: "trace, debug, info, notice, warning, error or critical (overrides log.level).")
    var logLevel: Logger.Level?

    /// Sets up logging as configured, `--log-level` first.
    func bootstrap(_ settings: LogSettings, environment: [String: String]) -> Logger {
        let level = logLevel ?? settings.level
        let format = settings.resolvedFormat(environment: environment)
        LoggingSystem.bootstrap { label in AgentLogHandler(label: label, level: level, format: format) }
        return Logger(label: "switchyard")
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}

/// `--config`, as every command that reads the configuration takes it.
struct ConfigurationFileOption: ParsableArguments {
    @Option(name: .long, help: "The configuration file (YAML); default $SWITCHYARD_CONFIG, else \(AgentConfiguration.defaultFile) if it exists.")
    var config: String?

    /// The file to read with these variables (see ``AgentConfiguration/file(option:environment:)``).
    func file(_ variables: [String: String]) -> String? { AgentConfiguration.file(option: config, environment: variables) }
}

/// A configuration that cannot be used: every problem printed, exit status 2.
func unusableConfiguration(_ error: ConfigurationError) -> ExitCode {
    printError("switchyard: \(error)")
    return ExitCode(2)
}

/// The configuration file and log level, as every command that talks to the tenant takes them.
struct AgentOptions: ParsableArguments {
    @OptionGroup var configuration: ConfigurationFileOption
    @OptionGroup var logging: LoggingOptions

    /// Loads the configuration and sets up logging; every problem is printed and the exit code is 2.
    func load() throws -> (AgentConfiguration, Logger) {
        let variables = processEnvironment()
        do throws(ConfigurationError) {
            let loaded = try AgentConfiguration.load(file: configuration.file(variables), environment: variables)
            return (loaded, logging.bootstrap(loaded.log, environment: variables))
        } catch {
            throw unusableConfiguration(error)
        }
    }
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Connect to the tenant and handle operations until stopped (SIGTERM/SIGINT).",
        discussion: "Under systemd (Type=notify) it sends READY=1 once registered and subscribed, STATUS= lines, and WATCHDOG=1 while its loops are healthy.")

    @OptionGroup var options: AgentOptions

    func run() async throws {
        let (configuration, logger) = try options.load()
        let agent = Agent(configuration: configuration, catalog: builtinHandlers,
                          notifier: SystemdNotifier.fromEnvironment(processEnvironment()), logger: logger)
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: agent)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}

struct Config: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Inspect the configuration.", subcommands: [Check.self])

    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Load the configuration as `run` would and check the files it names; exit 1 listing every problem.",
            discussion: "Prints each key's effective value (secrets masked) and where it came from: file:line, the variable, or the default.")

        @OptionGroup var configuration: ConfigurationFileOption

        func run() async throws {
            let variables = processEnvironment()
            let file = configuration.file(variables)
            let inspection = AgentConfiguration.inspect(file: file, environment: variables)
            print("configuration file: \(file ?? "none (every key from the environment)")")
            if !inspection.entries.isEmpty {
                print(pad("KEY", 32) + pad("VALUE", 48) + "FROM")
                for entry in inspection.entries { print(pad(entry.key, 32) + pad(entry.value, 48) + entry.origin) }
            }
            var problems = inspection.problems.map(\.description)
            if let configuration = inspection.configuration, problems.isEmpty {
                let registry = Registry.load(directory: configuration.handlers, catalog: builtinHandlers,
                                             limits: configuration.limits.declarations)
                problems += configuration.runtimeProblems(handlerProblems: registry.problems.map(\.description))
                print("handlers: \(registry.declarations.count) declarations in \(configuration.handlers): "
                      + registry.supportedOperations.joined(separator: ", "))
            }
            guard problems.isEmpty else {
                printError("\(problems.count) problem\(problems.count == 1 ? "" : "s"):\n" + problems.map { "  - " + $0 }.joined(separator: "\n"))
                throw ExitCode(1)
            }
            print("configuration is usable")
        }
    }
}

struct Token: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a currently valid device access token (auth.mode certificate), for scripts.",
        discussion: "Asks the running agent; without one, obtains a token with the device certificate. Prefer the plugin proxy where possible.")

    @OptionGroup var options: AgentOptions

    func run() async throws {
        let (configuration, logger) = try options.load()
        do {
            print(try await currentToken(configuration: configuration, logger: logger))
        } catch {
            printError("switchyard token: \(error)")
            throw ExitCode(1)
        }
    }
}

/// `--dir`, else the configuration's `handlers` (file or variable), else `handlers.d`.
struct HandlersDirectoryOptions: ParsableArguments {
    @Option(name: .long, help: "The handlers directory (default: the configuration's `handlers`, else handlers.d).")
    var dir: String?

    @OptionGroup var configuration: ConfigurationFileOption

    func directory() throws -> String {
        if let dir { return FileSystem.absolute(dir) }
        let variables = processEnvironment()
        do throws(ConfigurationError) {
            return try AgentConfiguration.handlersDirectory(file: configuration.file(variables), environment: variables)
        } catch {
            throw unusableConfiguration(error)
        }
    }
}

struct Handlers: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Inspect handler declarations, and run one locally.",
                                                    subcommands: [List.self, Validate.self, RunLocally.self, New.self])

    struct New: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a new handler to start from: a declaration and a plugin that shows every directive (Swift: a package with a unit test).")

        @Argument(help: "The operation's name, e.g. acme_Blink.") var name: String
        @Option(help: "sh, python or swift.") var lang: String
        @Option(help: "Where the declaration (and a script) go.") var dir = "handlers.d"
        @Option(help: "Swift: where the package goes (default: ./NAME).") var package: String?
        @Option(help: "Swift: the package's Switchyard dependency, a local checkout instead of the released package.")
        var switchyardPath: String?

        func run() async throws {
            if let problem = HandlerTemplate.problem(with: name) { throw ValidationError(problem) }
            guard let language = HandlerTemplate.Language(rawValue: lang) else { throw ValidationError("--lang must be sh, python or swift") }
            let handlers = FileSystem.absolute(dir)
            let packageDirectory = FileSystem.absolute(package ?? name)
            let dependency: HandlerTemplate.Dependency = switchyardPath.map { .path(FileSystem.absolute($0)) }
                ?? .url("https://github.com/switchyard-agent/switchyard", from: "0.1.0")
            let files = HandlerTemplate(name: name, language: language).files(package: packageDirectory, switchyard: dependency)
            let all = files.handlers.map { (handlers + "/" + $0.path, $0) } + files.package.map { (packageDirectory + "/" + $0.path, $0) }
            if let existing = all.first(where: { FileSystem.exists($0.0) }) {
                throw ValidationError("\(existing.0) exists already; nothing was written")
            }
            for (path, file) in all {
                try FileSystem.makeDirectories(FileSystem.parent(of: path), mode: 0o755)
                try FileSystem.writeAtomically(path, Array(file.text.utf8), mode: file.executable ? 0o755 : 0o644, durable: false)
                print("wrote \(path)")
            }
            if language == .swift {
                print("next: (cd \(packageDirectory) && swift build && swift test), then")
            }
            print("try it: switchyard handlers run \(name) --example --dir \(handlers)")
        }
    }

    struct RunLocally: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "run",
            abstract: "Run the handler of FRAGMENT on an operation, on this machine: nothing is sent anywhere.",
            discussion: """
                Prints each call that would reach the platform (inventory, events, measurements, alarms, \
                progress), the operation's log and the outcome. Exits 0 for SUCCESSFUL, 1 for FAILED, \
                3 when the handler asks for a device restart (run again with --phase resume and the same --state).
                """)

        @Argument(help: "The fragment whose declaration to run, e.g. c8y_Restart or acme_Blink.") var fragment: String
        @Argument(help: "The operation as JSON: a file, or - for standard input (default: {FRAGMENT: {}}).") var operation: String?
        @OptionGroup var options: HandlersDirectoryOptions
        @Flag(help: "Run the declaration's example: operation.") var example = false
        @Option(help: "execute or resume.") var phase = "execute"
        @Option(help: "The operation's state directory, kept between runs (default: a new one under /tmp).") var state: String?
        @Option(help: "Serve downloads from this directory: a URL's last path segment names the file.") var files: String?
        @Option(help: "The device id handlers see.") var deviceId = "local-device"

        func run() async throws {
            guard let phase = Phase(rawValue: phase) else { throw ValidationError("--phase must be execute or resume") }
            signal(SIGPIPE, SIG_IGN)  // a plugin that exits without reading its input must not end this run
            let registry = Registry.load(directory: try options.directory(), catalog: builtinHandlers)
            for problem in registry.problems { printError("rejected: \(problem)") }
            let json: JSONValue
            if example {
                guard let body = registry.declaration(for: fragment)?.example else {
                    throw ValidationError("the declaration of \(fragment) has no example:")
                }
                json = body
            } else if let operation {
                let bytes = operation == "-" ? readStandardInput() : try FileSystem.read(FileSystem.absolute(operation))
                guard let bytes else { throw ValidationError("\(operation) does not exist") }
                do { json = try JSONValue.parse(bytes) } catch { throw ValidationError("\(operation) is not JSON: \(error)") }
            } else {
                json = [fragment: [:]]
            }
            let directory = state.map(FileSystem.absolute) ?? "/tmp/switchyard-run-\(getpid())"
            let run = LocalRun(registry: registry, deviceID: deviceId, files: files.map(FileSystem.absolute), output: { print($0) })
            let end = await run.run(fragment: fragment, operation: json, phase: phase, stateDirectory: directory)
            switch end {
            case .successful(let result):
                print("SUCCESSFUL" + (result.isEmpty ? "" : " " + String(decoding: JSONValue.object(result).encoded(), as: UTF8.self)))
            case .failed(let reason, let result):
                print("FAILED: \(reason)" + (result.isEmpty ? "" : " " + String(decoding: JSONValue.object(result).encoded(), as: UTF8.self)))
                throw ExitCode(1)
            case .restartRequested:
                print("RESTART REQUESTED: the agent would restart the device, then resume; run again with --phase resume --state \(directory)")
                throw ExitCode(3)
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the operations a handlers directory declares; exit 1 if any file is rejected.")
        @OptionGroup var options: HandlersDirectoryOptions

        func run() async throws {
            let registry = Registry.load(directory: try options.directory(), catalog: builtinHandlers)
            print(pad("OPERATION", 28) + pad("FRAGMENTS", 32) + pad("HANDLER", 44) + "DECLARED IN")
            for declaration in registry.declarations.sorted(by: { $0.operation < $1.operation }) {
                print(pad(declaration.operation, 28) + pad(declaration.fragments.joined(separator: ","), 32)
                      + pad(declaration.handlerName, 44) + declaration.location)
            }
            for problem in registry.problems { printError("rejected: \(problem)") }
            if !registry.problems.isEmpty { throw ExitCode(1) }
        }
    }

    struct Validate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Check every declaration; print each problem as file:line and exit 1 if any.")
        @OptionGroup var options: HandlersDirectoryOptions

        func run() async throws {
            let registry = Registry.load(directory: try options.directory(), catalog: builtinHandlers)
            for problem in registry.problems { print(problem) }
            if registry.problems.isEmpty {
                print("\(registry.declarations.count) declarations valid: \(registry.supportedOperations.joined(separator: ", "))")
            } else {
                throw ExitCode(1)
            }
        }
    }
}

func pad(_ text: String, _ width: Int) -> String {
    text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count)
}

func printError(_ text: String) {
    var line = text + "\n"
    line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}

func readStandardInput() -> [UInt8] {
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = chunk.withUnsafeMutableBytes { read(0, $0.baseAddress, $0.count) }
        if count < 0 && errno == EINTR { continue }
        if count <= 0 { return bytes }
        bytes += chunk[0..<count]
    }
}
