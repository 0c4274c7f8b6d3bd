#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The environment every program the agent starts (exec handlers, software plugins, firmware
/// installers, handlers' commands) inherits: the agent's own, as thin-edge.io passes its own, minus
/// what is the agent's alone. Removed are every `SWITCHYARD_*` variable (configuration keys, among
/// them passwords; the context variables are set afresh per operation), systemd's messages to the
/// agent (`NOTIFY_SOCKET`, `WATCHDOG_*`, `LISTEN_*`, `JOURNAL_STREAM`, `CREDENTIALS_DIRECTORY`).
/// `PATH` and `LANG` get defaults when the agent has none, `HOME` the operation's directory.
/// The declaration's `env` comes on top, then the `SWITCHYARD_*` context variables.
enum PluginEnvironment {
    static let removedPrefixes = ["SWITCHYARD_", "WATCHDOG_", "LISTEN_"]
    static let removedNames: Set<String> = ["NOTIFY_SOCKET", "JOURNAL_STREAM", "CREDENTIALS_DIRECTORY"]

    /// The agent's environment as plugins inherit it (read once, at first use).
    static let inherited: [String: String] = filtered(processEnvironment())

    static func filtered(_ environment: [String: String]) -> [String: String] {
        environment.filter { name, _ in
            !removedNames.contains(name) && !removedPrefixes.contains(where: { name.hasPrefix($0) })
        }
    }

    /// The inherited environment with the defaults a program expects filled in.
    static func base(home: String) -> [String: String] {
        var environment = inherited
        if environment["PATH"]?.isEmpty ?? true { environment["PATH"] = ExecRunner.path }
        if environment["LANG"]?.isEmpty ?? true { environment["LANG"] = "C.UTF-8" }
        if environment["HOME"]?.isEmpty ?? true { environment["HOME"] = home }
        return environment
    }
}

/// This process's environment variables, read from `environ`.
public func processEnvironment() -> [String: String] {
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
