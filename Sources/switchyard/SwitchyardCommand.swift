import ArgumentParser
import BuiltinHandlers
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
        version: Agent.version,
        subcommands: [Run.self, Handlers.self, Token.self])
}

struct LoggingOptions: ParsableArguments {
    @Option(name: .long, help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: Logger.Level = .info

    func bootstrap() -> Logger {
        let level = logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        return Logger(label: "switchyard")
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}

/// The configuration file and log level, as every command that talks to the tenant takes them.
struct AgentOptions: ParsableArguments {
    @Option(name: .long, help: "The configuration file (YAML). Every key can also be set as SWITCHYARD_<KEY>.")
    var config: String?

    @OptionGroup var logging: LoggingOptions

    /// Sets up logging and loads the configuration; every problem is printed and the exit code is 2.
    func load() throws -> (AgentConfiguration, Logger) {
        let logger = logging.bootstrap()
        do {
            return (try AgentConfiguration.load(file: config, environment: environment()), logger)
        } catch {
            printError("switchyard: \(error)")
            throw ExitCode(2)
        }
    }
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Connect to the tenant and handle operations until stopped (SIGTERM/SIGINT).")

    @OptionGroup var options: AgentOptions

    func run() async throws {
        let (configuration, logger) = try options.load()
        let agent = Agent(configuration: configuration, catalog: builtinHandlers, logger: logger)
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: agent)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
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

struct Handlers: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Inspect handler declarations.", subcommands: [List.self, Validate.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the operations a handlers directory declares; exit 1 if any file is rejected.")
        @Option(name: .long, help: "The handlers directory.") var dir = "handlers.d"

        func run() async throws {
            let registry = Registry.load(directory: FileSystem.absolute(dir), catalog: builtinHandlers)
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
        static let configuration = CommandConfiguration(abstract: "Check every declaration; print each problem as file:line and exit non-zero if any.")
        @Option(name: .long, help: "The handlers directory.") var dir = "handlers.d"

        func run() async throws {
            let registry = Registry.load(directory: FileSystem.absolute(dir), catalog: builtinHandlers)
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

func environment() -> [String: String] {
    var result: [String: String] = [:]
    var pointer = environ
    while let entry = pointer.pointee {
        let text = String(cString: entry)
        if let equals = text.firstIndex(of: "=") {
            result[String(text[..<equals])] = String(text[text.index(after: equals)...])
        }
        pointer += 1
    }
    return result
}
