import HandlerKit

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Reads and validates the declarations in one `handlers.d` file.
///
/// A file holds one declaration, or several separated by `---`. Keys:
/// `operation` (required), `fragments`, `description`, exactly one of `swift` (with `options`)
/// or `exec` (`command`, `timeout`, `env`, `gracePeriod`), `timeout`, `concurrency`, `resumable`, `example`,
/// `advertise` (further operations to advertise, among `fragments`) and `requires` (fragments of which
/// the directory must handle at least one for this declaration to be active).
/// Every problem of a file is reported (each unknown key, each bad value, with its line), and the whole
/// file is rejected, so a half-valid file never half-applies.
public enum DeclarationReader {
    static let keys = ["operation", "fragments", "description", "swift", "options", "exec", "timeout",
                       "concurrency", "resumable", "example", "advertise", "requires"]
    static let execKeys = ["command", "timeout", "env", "gracePeriod", "user"]
    static let defaultTimeout: Duration = .seconds(600)

    /// Bounds on one handler file (sizes, nesting, alias expansion): anyone who can write to
    /// `handlers.d` can put any file there, and none may stop the agent.
    public struct Limits: Sendable {
        public var maximumFileSize = 1 << 20
        public var yaml = YAMLLimits()
        public init() {}
    }

    /// Every declaration of the file, or every problem found in it: all unknown keys and bad values of
    /// every document, each with its line. A file applies whole or not at all: one bad document keeps
    /// its valid siblings out too, and the problem says which.
    static func read(file: String, catalog: [String: any OperationHandler.Type],
                     limits: Limits = .init()) throws(FileProblems) -> [HandlerDeclaration] {
        let read: [UInt8]?
        do {
            read = try FileSystem.readRegularFile(file, limit: limits.maximumFileSize)
        } catch {
            throw FileProblems([FileProblem(file: file, line: nil, error.detail ?? String(cString: strerror(error.code)))])
        }
        guard let bytes = read else {
            throw FileProblems([FileProblem(file: file, line: nil, "cannot be read: it vanished, or is a symbolic link to nothing")])
        }
        let documents: [YAMLNode]
        do {
            documents = try YAMLNode.parseDocuments(bytes: bytes, limits: limits.yaml)
        } catch {
            throw FileProblems([FileProblem(file: file, line: error.line, "invalid YAML: \(error.detail)")])
        }
        let real = documents.filter { !$0.isNull }
        guard !real.isEmpty else { throw FileProblems([FileProblem(file: file, line: 1, "the file declares no handler")]) }
        var declarations: [HandlerDeclaration] = []
        var problems: [FileProblem] = []
        for document in real {
            do throws(FileProblems) {
                declarations.append(try declaration(document, file: file, catalog: catalog))
            } catch {
                problems += error.problems
            }
        }
        guard problems.isEmpty else {
            if !declarations.isEmpty {
                let held = declarations.map(\.operation).joined(separator: ", ")
                problems.append(FileProblem(file: file, line: declarations[0].line,
                                            "not loaded either: \(held), valid, but in a file with a bad document (a file applies whole or not at all)"))
            }
            throw FileProblems(problems)
        }
        return declarations
    }

    static func declaration(_ node: YAMLNode, file: String, catalog: [String: any OperationHandler.Type]) throws(FileProblems) -> HandlerDeclaration {
        var problems: [FileProblem] = []
        /// The body's value, or `nil` with its problem noted: each check runs, whatever failed before.
        func attempt<T>(_ body: () throws(FileProblem) -> T) -> T? {
            do { return try body() } catch { problems.append(error); return nil }
        }
        guard let reader = attempt({ () throws(FileProblem) in try MappingReader(node, file: file, what: "a handler declaration") }) else {
            throw FileProblems(problems)
        }
        problems += reader.unknownKeyProblems(allowed: keys)
        let operation = attempt { () throws(FileProblem) in try reader.requiredString("operation") }
        if let operation {
            _ = attempt { () throws(FileProblem) in try checkFragmentName(operation, file: file, line: reader.node("operation")?.line ?? reader.line) }
        }
        let named = operation ?? "the operation"
        var fragments = attempt { () throws(FileProblem) in try reader.stringList("fragments") } ?? nil
        if let list = fragments {
            if list.isEmpty {
                problems.append(FileProblem(file: file, line: reader.node("fragments")?.line, "'fragments' must name at least one fragment"))
            }
            for fragment in list {
                _ = attempt { () throws(FileProblem) in try checkFragmentName(fragment, file: file, line: reader.node("fragments")?.line ?? reader.line) }
            }
        } else if let operation {
            fragments = [operation]
        }
        let advertise = attempt { () throws(FileProblem) in try reader.stringList("advertise") } ?? nil
        if let advertise, let fragments {
            for extra in advertise where !fragments.contains(extra) {
                problems.append(FileProblem(file: file, line: reader.node("advertise")?.line,
                                            "'advertise' names \(extra), which is not among the fragments this declaration handles"))
            }
        }
        let requires = attempt { () throws(FileProblem) in try reader.stringList("requires") } ?? nil
        for fragment in requires ?? [] {
            _ = attempt { () throws(FileProblem) in try checkFragmentName(fragment, file: file, line: reader.node("requires")?.line ?? reader.line) }
        }
        var timeout = attempt { () throws(FileProblem) in try reader.duration("timeout") } ?? nil

        var kind: HandlerDeclaration.Kind?
        switch (reader.node("swift"), reader.node("exec")) {
        case (nil, nil):
            problems.append(FileProblem(file: file, line: reader.line, "declaration of \(named) needs 'swift' (a compiled handler) or 'exec' (an executable)"))
        case (.some, .some(let exec)):
            problems.append(FileProblem(file: file, line: exec.line, "declaration of \(named) has both 'swift' and 'exec'; choose one"))
        case (.some(let swiftNode), nil) where swiftNode.scalar == nil:
            // A compiled handler built as its own executable (HandlerKitRunner): run like an exec plugin.
            if let swift = attempt({ () throws(FileProblem) in try MappingReader(swiftNode, file: file, what: "'swift'") }) {
                problems += swift.unknownKeyProblems(allowed: ["executable", "env", "gracePeriod", "user"])
                if var spec = attempt({ () throws(FileProblem) in try execSpec(swift, file: file, commandKey: "executable") }) {
                    spec.handlerOptions = reader.node("options")?.json ?? .null
                    kind = .exec(spec)
                }
            }
        case (.some, nil):
            if let name = attempt({ () throws(FileProblem) in try reader.requiredString("swift") }) {
                if let type = catalog[name] {
                    let options = reader.node("options")?.json ?? .null
                    do {
                        kind = .swift(name: name, handler: try type.init(options: options))
                    } catch {
                        problems.append(FileProblem(file: file, line: reader.node("options")?.line ?? reader.line, "options of \(name): \(error.detail)"))
                    }
                } else {
                    let available = catalog.keys.sorted().joined(separator: ", ")
                    problems.append(FileProblem(file: file, line: reader.node("swift")?.line,
                                                "no compiled handler named '\(name)' in this agent (available: \(available.isEmpty ? "none" : available))"))
                }
            }
        case (nil, .some(let execNode)):
            if reader.node("options") != nil {
                problems.append(FileProblem(file: file, line: reader.node("options")?.line, "'options' is for swift handlers; an exec handler takes 'env' or arguments"))
            }
            if let exec = attempt({ () throws(FileProblem) in try MappingReader(execNode, file: file, what: "'exec'") }) {
                problems += exec.unknownKeyProblems(allowed: execKeys)
                if let execTimeout = attempt({ () throws(FileProblem) in try exec.duration("timeout") }) ?? nil {
                    if timeout != nil {
                        problems.append(FileProblem(file: file, line: exec.node("timeout")?.line, "timeout is set twice (in 'exec' and at the top); keep one"))
                    }
                    timeout = execTimeout
                }
                if let spec = attempt({ () throws(FileProblem) in try execSpec(exec, file: file) }) { kind = .exec(spec) }
            }
        }

        let example = reader.node("example").map(\.json)
        if let example, example.objectValue == nil {
            problems.append(FileProblem(file: file, line: reader.node("example")?.line, "'example' must be a mapping: the body of an operation"))
        }
        let description = attempt { () throws(FileProblem) in try reader.string("description") } ?? nil
        let concurrency = attempt { () throws(FileProblem) in try reader.int("concurrency", range: 1...64) } ?? nil
        let resumable = attempt { () throws(FileProblem) in try reader.bool("resumable") } ?? nil
        guard problems.isEmpty, let operation, let fragments, let kind else {
            throw FileProblems(problems)
        }
        var advertised = [operation]
        for extra in advertise ?? [] where !advertised.contains(extra) { advertised.append(extra) }
        return HandlerDeclaration(
            operation: operation, fragments: fragments, advertised: advertised, requires: requires ?? [], description: description,
            kind: kind, concurrency: concurrency ?? 1,
            timeout: timeout ?? defaultTimeout, resumable: resumable ?? false,
            example: example, options: reader.node("options")?.json ?? .null, file: file, line: reader.line)
    }

    static func execSpec(_ exec: MappingReader, file: String, commandKey: String = "command") throws(FileProblem) -> ExecSpec {
        let line = exec.node(commandKey)?.line ?? exec.line
        guard var command = try exec.stringList(commandKey), let program = command.first, !program.isEmpty else {
            throw FileProblem(file: file, line: line, commandKey == "command"
                              ? "'exec.command' must be a non-empty list: the program, then its arguments"
                              : "'swift.executable' must name the handler's executable (built with HandlerKitRunner)")
        }
        if commandKey == "executable", command.count > 1 {
            throw FileProblem(file: file, line: line, "'swift.executable' is one program; its options go in 'options'")
        }
        if program.contains("${") {
            throw FileProblem(file: file, line: line, "the program path cannot be templated")
        }
        // A bare name (`python3`) is looked up in the plugins' PATH, as a shell would; a path with a
        // slash is taken relative to the declaration's directory.
        let resolved: String
        if !program.contains("/") {
            guard let found = ExecRunner.path.split(separator: ":").map({ $0 + "/" + program })
                .first(where: { FileSystem.isExecutable($0) && !FileSystem.isDirectory($0) }) else {
                throw FileProblem(file: file, line: line, "program '\(program)' is not in the plugins' PATH (\(ExecRunner.path)); "
                                  + "use an absolute path, or ./\(program) for one beside the declaration")
            }
            resolved = found
        } else {
            resolved = FileSystem.resolve(program, relativeTo: FileSystem.parent(of: FileSystem.absolute(file)))
        }
        guard FileSystem.exists(resolved) else {
            throw FileProblem(file: file, line: line, "program \(resolved) does not exist", program: resolved)
        }
        guard FileSystem.isExecutable(resolved), !FileSystem.isDirectory(resolved) else {
            throw FileProblem(file: file, line: line, "program \(resolved) is not executable (chmod +x)", program: resolved)
        }
        if let problem = executableFormatProblem(resolved) {
            throw FileProblem(file: file, line: line, "program \(resolved) \(problem)", program: resolved)
        }
        command[0] = resolved
        // A later argument that is a relative path (./x, ../x) is a file beside the declaration too, as
        // the program is: the run's working directory is the operation's, where it would not be.
        let base = FileSystem.parent(of: FileSystem.absolute(file))
        for index in command.indices.dropFirst()
        where (command[index].hasPrefix("./") || command[index].hasPrefix("../")) && !command[index].contains("${") {
            command[index] = FileSystem.resolve(command[index], relativeTo: base)
        }
        for argument in command where !Template.isWellFormed(argument) {
            throw FileProblem(file: file, line: line, "argument '\(argument)' has an unclosed or empty ${…} template")
        }
        var environment: [String: String] = [:]
        if let envNode = exec.node("env"), !envNode.isNull {
            let env = try MappingReader(envNode, file: file, what: "'exec.env'")
            for (key, keyLine, value) in env.pairs {
                guard let text = value.scalar else {
                    throw FileProblem(file: file, line: value.line, "exec.env.\(key) must be text")
                }
                guard !key.hasPrefix("SWITCHYARD_"), key.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else {
                    throw FileProblem(file: file, line: keyLine, "exec.env key '\(key)' must be letters, digits and _ and not start with SWITCHYARD_")
                }
                environment[key] = text
            }
        }
        var user: RunAs?
        if let name = try exec.string("user") {
            guard let found = RunAs.lookup(name) else {
                throw FileProblem(file: file, line: exec.node("user")?.line, "exec.user '\(name)' is not a user on this system")
            }
            guard FileSystem.isExecutable(ExecRunner.setpriv) else {
                throw FileProblem(file: file, line: exec.node("user")?.line, "exec.user needs \(ExecRunner.setpriv) (util-linux) to change user")
            }
            user = found
        }
        return ExecSpec(command: command, environment: environment, gracePeriod: try exec.duration("gracePeriod") ?? .seconds(5), user: user)
    }

    /// Why the kernel would refuse to run a file, read from its first bytes: neither an ELF binary nor
    /// a script with a `#!` line (`Exec format error`), or a `#!` line ending in CR (a file saved with
    /// Windows line endings: `python3\r: No such file`). `nil` when it looks runnable.
    static func executableFormatProblem(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { return nil }  // unreadable to us, but may run: leave it to the run
        defer { close(fd) }
        var head = [UInt8](repeating: 0, count: 256)
        let count = head.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        guard count > 0 else { return "is empty: a script needs a #! line, e.g. #!/bin/sh" }
        let bytes = head.prefix(count)
        if bytes.starts(with: [0x7F, 0x45, 0x4C, 0x46]) { return nil }  // ELF
        guard bytes.starts(with: Array("#!".utf8)) else {
            return "is neither a program nor a script with a #! line (e.g. #!/bin/sh): it would fail with 'Exec format error'"
        }
        let line = bytes.prefix { $0 != UInt8(ascii: "\n") }
        if line.last == UInt8(ascii: "\r") {
            return "has Windows line endings (CRLF): its #! line would name '\(String(decoding: line.dropFirst(2).dropLast(), as: UTF8.self))\\r'; convert it (dos2unix or sed -i 's/\\r$//')"
        }
        return nil
    }

    /// Fragment names are identifiers such as `c8y_Restart` or `acme_Calibrate`.
    static func checkFragmentName(_ name: String, file: String, line: Int) throws(FileProblem) {
        let valid = !name.isEmpty && name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }
            && !(name.first?.isNumber ?? true)
        guard valid else {
            throw FileProblem(file: file, line: line, "'\(name)' is not a fragment name (letters, digits and _, e.g. c8y_Restart)")
        }
    }
}

/// `${path}` templates in exec arguments.
enum Template {
    static func isWellFormed(_ text: String) -> Bool {
        var rest = Substring(text)
        while let start = rest.firstRange(of: "${") {
            guard let end = rest[start.upperBound...].firstIndex(of: "}"), end > start.upperBound else { return false }
            rest = rest[rest.index(after: end)...]
        }
        return true
    }

    /// Replaces each `${a.b}` with the operation's value at that path: text as is, other values as
    /// JSON, a missing value as the empty string. The result is always exactly one argument.
    static func render(_ text: String, with operation: JSONValue) -> String {
        var out = ""
        var rest = Substring(text)
        while let start = rest.firstRange(of: "${"), let end = rest[start.upperBound...].firstIndex(of: "}") {
            out += rest[..<start.lowerBound]
            let path = String(rest[start.upperBound..<end])
            switch operation.value(atPath: path) {
            case nil, .null?: break
            case .string(let s)?: out += s
            case let value?: out += value.encodedString()
            }
            rest = rest[rest.index(after: end)...]
        }
        return out + rest
    }
}
