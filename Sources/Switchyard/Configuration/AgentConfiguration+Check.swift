import Cumulocity

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

extension AgentConfiguration {
    /// What `switchyard config check` looks at beyond loading: the files and directories the agent
    /// will need at run time. Certificates, keys and their modes, password files and the CA file are
    /// already checked by loading; this adds the state directory (writable, or creatable) and the
    /// handlers directory (exists; its declarations valid, each problem as `file:line: reason`).
    public func runtimeProblems(handlerProblems: [String]) -> [String] {
        var problems: [String] = []
        if let problem = Self.writableDirectoryProblem(stateDir) {
            problems.append("stateDir: \(problem)")
        }
        if !FileSystem.isDirectory(handlers) {
            problems.append("handlers: \(handlers) is not a directory; no operation would be advertised")
        }
        problems += handlerProblems.map { "handlers: \($0)" }
        return problems
    }

    /// Why the agent could not write in `path` (creating it first if it does not exist); `nil` if it can.
    static func writableDirectoryProblem(_ path: String) -> String? {
        var existing = path
        while !FileSystem.exists(existing) && existing != "/" { existing = FileSystem.parent(of: existing) }
        guard FileSystem.isDirectory(existing) else { return "\(existing) is not a directory" }
        guard access(existing, W_OK | X_OK) == 0 else {
            return existing == path ? "\(path) is not writable by this user (uid \(getuid()))"
                : "\(path) does not exist and \(existing) is not writable by this user (uid \(getuid())) to create it"
        }
        return nil
    }

    /// The handlers directory `handlers validate|list` use without `--dir`: the configuration's
    /// `handlers` key (file or `SWITCHYARD_HANDLERS`), else `handlers.d`; nothing else of the
    /// configuration needs to be complete.
    public static func handlersDirectory(file: String?, environment: [String: String]) throws(ConfigurationError) -> String {
        var setting: Setting?
        if let file {
            do throws(FileProblem) {
                setting = try readFile(file)["handlers"]
            } catch {
                throw ConfigurationError(problems: [.init(key: "handlers", origin: error.line.map { "\(file):\($0)" } ?? file, detail: error.detail)])
            }
        }
        if let value = environment[environmentName(of: "handlers")], !value.isEmpty {
            setting = Setting(value: value, origin: environmentName(of: "handlers"), base: ".")
        }
        guard let setting, !setting.value.isEmpty else { return FileSystem.absolute("handlers.d") }
        return FileSystem.resolve(setting.value, relativeTo: setting.base)
    }
}
