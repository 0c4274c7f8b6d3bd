import Cumulocity
import HandlerKit
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Runs a third-party plugin through the edge cases of its protocol (`switchyard-sandbox conformance`)
/// and says, check by check, what passed and why something failed: executable plugins (plugin
/// protocol v1), software-type plugins (thin-edge.io's software-management plugin API) and firmware
/// installers (the Firmware handler's protocol). Each run is the agent's own way of starting programs
/// (``ExecRunner``), in a scratch directory.
public struct Conformance: Sendable {
    public enum Kind: String, Sendable, CaseIterable {
        case exec
        case smPlugin = "sm-plugin"
        case firmwareInstaller = "firmware-installer"
    }

    public struct Check: Sendable, Equatable {
        public let name: String
        public let passed: Bool
        public let detail: String
    }

    let spec: ExecSpec
    let kind: Kind
    let fragment: String
    /// The operation the exec checks start from (a declaration's `example:`, else `{fragment: {}}`).
    let example: JSONValue?
    let timeout: Duration
    let scratch: String
    /// sm-plugin: a module to install and remove (`name`, `version`, optional `file`).
    let module: (name: String, version: String, file: String?)?
    /// firmware installer: an image to install (a small generated one when `nil`).
    let image: String?

    public init(program: [String], environment: [String: String] = [:], kind: Kind, fragment: String = "acme_Conformance",
                example: JSONValue? = nil, timeout: Duration = .seconds(10), grace: Duration = .seconds(5), scratch: String,
                module: (name: String, version: String, file: String?)? = nil, image: String? = nil) {
        spec = ExecSpec(command: program, environment: environment, gracePeriod: grace, user: nil)
        self.kind = kind
        self.fragment = fragment
        self.example = example
        self.timeout = timeout
        self.scratch = scratch
        self.module = module
        self.image = image
    }

    /// The checks of a declaration file's first declaration (an `exec` plugin or a `swift: {executable:}` handler).
    public static func declaration(_ file: String, timeout: Duration, scratch: String) -> Result<Conformance, FileProblems> {
        do {
            let declarations = try DeclarationReader.read(file: FileSystem.absolute(file), catalog: [:])
            guard let first = declarations.first, case .exec(let spec) = first.kind else {
                return .failure(FileProblems([FileProblem(file: file, line: nil, "declares no executable handler (exec: or swift: {executable:})")]))
            }
            let environment = spec.environment.merging(spec.handlerEnvironment) { first, _ in first }
            return .success(Conformance(program: spec.command, environment: environment, kind: .exec, fragment: first.fragments[0],
                                        example: first.example, timeout: timeout, grace: spec.gracePeriod, scratch: scratch))
        } catch {
            return .failure(error)
        }
    }

    public func run() async -> [Check] {
        try? FileSystem.makeDirectories(scratch, mode: 0o700)
        switch kind {
        case .exec: return await execChecks()
        case .smPlugin: return await softwarePluginChecks()
        case .firmwareInstaller: return await firmwareInstallerChecks()
        }
    }

    // MARK: One run

    struct Run {
        let result: ExecResult
        let elapsed: Duration
        let invalid: [String]
        let log: String
        /// Processes of the plugin's group still alive after the run.
        let leftovers: Int
    }

    func run(_ arguments: [String], operation: JSONValue = .null, stdin: [UInt8]? = nil, environment: [String: String] = [:],
             timeout: Duration? = nil, name: String) async -> Run {
        let directory = scratch + "/" + name
        try? FileSystem.makeDirectories(directory, mode: 0o700)
        let operationFile = directory + "/operation.json"
        if operation != .null { try? FileSystem.writeAtomically(operationFile, operation.encoded(), mode: 0o600, durable: false) }
        let logFile = directory + "/run.log"
        FileSystem.remove(logFile)
        let invalid = Mutex<[String]>([])
        let thisSpec = ExecSpec(command: spec.command + arguments, environment: spec.environment, gracePeriod: spec.gracePeriod, user: nil,
                                handlerOptions: nil)
        let context = Operation(id: operation["id"]?.idValue ?? "1", deviceId: "1", externalId: "conformance", fragment: fragment,
                                json: operation)
        let env = ExecPluginRunner.variables(context, phase: .execute, stateDirectory: directory, operationFile: operationFile,
                                             baseURL: "https://tenant.invalid", spec: thisSpec)
            .merging(environment) { $1 }
        let started = ContinuousClock.now
        let result = await ExecRunner().run(thisSpec, operation: operation, environment: env, timeout: timeout ?? self.timeout,
                                            workingDirectory: directory, logFile: logFile, templated: false,
                                            stdin: stdin ?? (operation == .null ? [] : operation.encoded()), captureOutput: 1 << 20,
                                            onInvalidDirective: { why, line in invalid.withLock { $0.append("\(why): \(line)") } })
        let elapsed = ContinuousClock.now - started
        await LogWriter.flush()
        var leftovers = 0
        if let group = result.processGroup { leftovers = await BlockingPool.run { ExecRunner.livingProcesses(inGroup: group) } }
        if let group = result.processGroup, leftovers > 0 { kill(-group, SIGKILL) }
        return Run(result: result, elapsed: elapsed, invalid: invalid.withLock { $0 }, log: (try? FileSystem.readText(logFile)) ?? "",
                   leftovers: leftovers)
    }

    func describe(_ ending: ExecResult.Ending) -> String {
        ending.reason(program: spec.command[0], tail: "")
    }

    /// Ended by itself (an exit status), within the time limit.
    func endedByItself(_ run: Run) -> String? {
        switch run.result.ending {
        case .exited: return nil
        default: return describe(run.result.ending)
        }
    }

    // MARK: Executable plugins (plugin protocol v1)

    var baseOperation: JSONValue {
        var operation = example?.objectValue ?? [fragment: [:]]
        operation["id"] = "1"
        operation["deviceId"] = "1"
        operation["status"] = "PENDING"
        return .object(operation)
    }

    func execChecks() async -> [Check] {
        var checks: [Check] = []
        func check(_ name: String, _ problem: String?, passed detail: String) {
            checks.append(Check(name: name, passed: problem == nil, detail: problem ?? detail))
        }
        /// How a run ended, judged: by itself, with a reason when it failed, leaving nothing behind
        /// (directives are judged once, in their own check).
        func directivesAndExit(_ run: Run) -> String? {
            if let problem = endedByItself(run) { return problem }
            if case .exited(let code) = run.result.ending, code != 0, run.result.failureReason == nil, run.result.stderrTail.isEmpty {
                return "exited with code \(code) without a reason (no failure directive, nothing on standard error): the operation would fail saying only the code"
            }
            if run.leftovers > 0 { return "left \(run.leftovers) process(es) of its group running after it exited" }
            return nil
        }
        let ending: (Run) -> String = { run in
            if case .exited(let code) = run.result.ending {
                return code == 0 ? "exit 0 (SUCCESSFUL)" : "exit \(code) (FAILED: \(run.result.failureReason ?? run.result.stderrTail))"
            }
            return self.describe(run.result.ending)
        }

        let normal = await run([], operation: baseOperation, name: "operation")
        check("the operation on stdin and in SWITCHYARD_OPERATION_FILE", directivesAndExit(normal),
              passed: "\(ending(normal)) after \(normal.elapsed.readable)")

        let closed = await run([], operation: baseOperation, stdin: [], name: "stdin-closed")
        check("standard input closed at once (the operation only in the file)", directivesAndExit(closed),
              passed: "\(ending(closed))")

        var large = baseOperation.objectValue ?? [:]
        large["description"] = .string(String(repeating: "x", count: 1 << 20))
        large["acme_Unicode"] = ["text": "Grüße, 日本語, emoji 🚀, quote \" and backslash \\ and newline \n end"]
        let big = await run([], operation: .object(large), name: "large-unicode")
        check("a 1 MiB operation with Unicode values", directivesAndExit(big), passed: "\(ending(big))")

        var wrongDirectives: [String] = []
        for problem in normal.invalid + closed.invalid + big.invalid where !wrongDirectives.contains(problem) { wrongDirectives.append(problem) }
        check("every directive parses and is one the agent knows",
              wrongDirectives.isEmpty ? nil : "the agent would ignore: " + wrongDirectives.prefix(5).joined(separator: "; "),
              passed: "none ignored in three runs")

        let codes = [normal, closed, big].compactMap { run -> Int32? in if case .exited(let code) = run.result.ending { code } else { nil } }
        check("exit codes", codes.allSatisfy { $0 >= 0 && $0 < 126 } ? nil : "exit codes \(codes): 126 and above mean the shell or a signal, not the plugin's verdict",
              passed: "exit codes \(codes)")

        // SIGTERM: the agent's timeout (and a shutdown) sends it to the group, then waits the grace period.
        let cut: Duration = .milliseconds(300)
        let signalled = await run([], operation: baseOperation, timeout: cut, name: "sigterm")
        switch signalled.result.ending {
        case .timedOut:
            let after = signalled.elapsed - cut
            check("SIGTERM ends it within the grace period (\(spec.gracePeriod.readable))",
                  after >= spec.gracePeriod - .milliseconds(100) ? "still running \(spec.gracePeriod.readable) after SIGTERM: it was killed (ended \(after.readable) after it)" : nil,
                  passed: "ended \(after.readable) after SIGTERM")
        default:
            check("SIGTERM ends it within the grace period (\(spec.gracePeriod.readable))", nil,
                  passed: "not needed: it ended by itself within \(cut.readable) (\(ending(signalled)))")
        }

        check("nothing left running, no output after it exited",
              [normal, closed, big].contains { $0.leftovers > 0 } ? "processes of its group outlived it (they would hold its output open)" : nil,
              passed: "its process group was empty after every run")

        // The plugin proxy answering 401 (the secret refused) and 503 (the tenant unavailable).
        for status in [401, 503] {
            guard let server = try? FixedAnswerServer(status: status) else {
                check("the proxy answering \(status)", "cannot start a local server for the check", passed: "")
                continue
            }
            let proxied = await run([], operation: baseOperation, environment: [
                "SWITCHYARD_PROXY_URL": server.url + "/c8y", "SWITCHYARD_PROXY_SECRET": "conformance-secret",
            ], name: "proxy-\(status)")
            server.stop()
            check("the proxy answering \(status) to every request (\(server.requests) asked)", directivesAndExit(proxied),
                  passed: "\(ending(proxied))")
        }
        return checks
    }

    // MARK: Software-type plugins (thin-edge.io's API)

    func softwarePluginChecks() async -> [Check] {
        var checks: [Check] = []
        func check(_ name: String, _ problem: String?, passed detail: String) {
            checks.append(Check(name: name, passed: problem == nil, detail: problem ?? detail))
        }
        func exitCode(_ run: Run, allowed: Set<Int32>, _ what: String) -> String? {
            guard case .exited(let code) = run.result.ending else { return "\(what): \(describe(run.result.ending))" }
            return allowed.contains(code) ? nil : "\(what) exited \(code)\(run.result.stderrTail.isEmpty ? "" : ": \(run.result.stderrTail)") (expected \(allowed.sorted().map(String.init).joined(separator: " or ")))"
        }
        func listed(_ run: Run) -> [(name: String, version: String)] {
            run.result.output.split(separator: "\n").map { line in
                let fields = line.split(separator: "\t", omittingEmptySubsequences: false)
                return (String(fields.first ?? ""), fields.count > 1 ? String(fields[1]) : "")
            }
        }

        let list = await run(["list"], name: "list")
        var format: String?
        for (index, line) in list.result.output.split(separator: "\n", omittingEmptySubsequences: false).enumerated() where !line.isEmpty {
            let fields = line.split(separator: "\t", omittingEmptySubsequences: false)
            if fields.count > 2 || fields[0].isEmpty || fields[0].contains(" ") && !fields[0].hasPrefix("\"") {
                format = "line \(index + 1) is not NAME<TAB>VERSION: \(line.prefix(80))"
                break
            }
        }
        check("list: exit 0, one NAME<TAB>VERSION line per module", exitCode(list, allowed: [0], "list") ?? format,
              passed: "\(listed(list).count) modules")
        let prepare = await run(["prepare"], name: "prepare")
        check("prepare: exit 0", exitCode(prepare, allowed: [0], "prepare"), passed: "exit 0")
        let updateList = await run(["update-list"], stdin: [], name: "update-list")
        let supportsUpdateList = updateList.result.ending == .exited(0)
        check("update-list: exit 0 (supported) or 1 (the agent falls back to install/remove)",
              exitCode(updateList, allowed: [0, 1], "update-list"), passed: supportsUpdateList ? "supported" : "not supported (exit 1)")
        if let module {
            var arguments = ["install", module.name, "--module-version", module.version]
            if let file = module.file { arguments += ["--file", file] }
            let install = await run(arguments, name: "install")
            check("install \(module.name) --module-version \(module.version)\(module.file.map { " --file \($0)" } ?? "")",
                  exitCode(install, allowed: [0], "install"), passed: "exit 0")
            let after = await run(["list"], name: "list-after-install")
            check("list shows \(module.name) \(module.version) after install",
                  listed(after).contains { $0.name == module.name && $0.version == module.version } ? nil
                    : "\(module.name) \(module.version) is not listed after install", passed: "listed")
            let remove = await run(["remove", module.name, "--module-version", module.version], name: "remove")
            check("remove \(module.name) --module-version \(module.version)", exitCode(remove, allowed: [0], "remove"), passed: "exit 0")
            let gone = await run(["list"], name: "list-after-remove")
            check("list no longer shows \(module.name) after remove", listed(gone).contains { $0.name == module.name }
                    ? "\(module.name) is still listed after remove" : nil, passed: "gone")
        } else {
            check("install and remove", nil, passed: "not run: give --module NAME --version V [--file F] to check them")
        }
        let finalize = await run(["finalize"], name: "finalize")
        check("finalize: exit 0", exitCode(finalize, allowed: [0], "finalize"), passed: "exit 0")
        let unknown = await run(["no-such-command"], name: "usage")
        check("an unknown command is a usage error (exit 1)", exitCode(unknown, allowed: [1], "no-such-command"), passed: "exit 1")
        let missing = await run(["install", "switchyard-conformance-no-such-module", "--module-version", "0", "--file", scratch + "/missing.file"],
                                name: "install-missing")
        check("a failed install exits 1 or 2 with a reason", exitCode(missing, allowed: [1, 2], "install of a missing file")
                ?? (missing.result.stderrTail.isEmpty ? "exited non-zero with nothing on standard error" : nil),
              passed: "\(missing.result.stderrTail)")
        return checks
    }

    // MARK: Firmware installers

    func firmwareInstallerChecks() async -> [Check] {
        var checks: [Check] = []
        func check(_ name: String, _ run: Run, allowed: Set<Int32>) {
            guard case .exited(let code) = run.result.ending else {
                checks.append(Check(name: name, passed: false, detail: describe(run.result.ending)))
                return
            }
            let ok = allowed.contains(code)
            checks.append(Check(name: name, passed: ok, detail: ok ? "exit \(code)"
                                : "exit \(code)\(run.result.stderrTail.isEmpty ? "" : ": \(run.result.stderrTail)")"))
        }
        var imagePath = image ?? scratch + "/conformance.image"
        if image == nil {
            try? FileSystem.writeAtomically(imagePath, Array(repeating: 0x5A, count: 64 << 10), mode: 0o600, durable: false)
        }
        imagePath = FileSystem.absolute(imagePath)
        check("install FILE NAME VERSION", await run(["install", imagePath, "conformance-os", "2.0"], name: "install"), allowed: [0])
        check("needs-reboot: 0 (restart) or 1 (no restart)", await run(["needs-reboot"], name: "needs-reboot"), allowed: [0, 1])
        check("verify after install", await run(["verify"], name: "verify"), allowed: [0])
        check("commit", await run(["commit"], name: "commit"), allowed: [0])
        check("install again, then rollback", await run(["install", imagePath, "conformance-os", "2.1"], name: "install-again"), allowed: [0])
        check("rollback", await run(["rollback"], name: "rollback"), allowed: [0])
        // The url $PROVIDED: the image is already on the device (an installer may refuse it, saying why).
        let provided = await run(["install-provided", "conformance-os", "3.0"], name: "install-provided")
        switch provided.result.ending {
        case .exited(0):
            checks.append(Check(name: "install-provided NAME VERSION", passed: true, detail: "exit 0"))
            _ = await run(["rollback"], name: "rollback-provided")
        case .exited(let code) where !provided.result.stderrTail.isEmpty:
            checks.append(Check(name: "install-provided NAME VERSION", passed: true, detail: "refused (exit \(code)): \(provided.result.stderrTail)"))
        default:
            checks.append(Check(name: "install-provided NAME VERSION", passed: false,
                                detail: "\(describe(provided.result.ending)) without a reason on standard error"))
        }
        let missing = await run(["install", scratch + "/no-such.image", "conformance-os", "9"], name: "install-missing")
        if case .exited(let code) = missing.result.ending, code != 0, !missing.result.stderrTail.isEmpty {
            checks.append(Check(name: "install of a missing image fails with a reason", passed: true, detail: "exit \(code): \(missing.result.stderrTail)"))
        } else {
            checks.append(Check(name: "install of a missing image fails with a reason", passed: false,
                                detail: "\(describe(missing.result.ending))\(missing.result.stderrTail.isEmpty ? ", nothing on standard error" : "")"))
        }
        return checks
    }
}

/// A loopback HTTP server answering every request with one status (the plugin proxy refusing).
final class FixedAnswerServer: Sendable {
    let url: String
    private let fd: Int32
    private let count = Mutex(0)
    private let stopped = Mutex(false)

    var requests: Int { count.withLock { $0 } }

    init(status: Int) throws(FileSystemError) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw FileSystemError(operation: "socket", path: "127.0.0.1", code: errno) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard bound == 0, listen(fd, 16) == 0 else { close(fd); throw FileSystemError(operation: "bind", path: "127.0.0.1", code: errno) }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        self.fd = fd
        url = "http://127.0.0.1:\(UInt16(bigEndian: address.sin_port))"
        let reason = status == 401 ? "Unauthorized" : "Service Unavailable"
        let answer = Array("HTTP/1.1 \(status) \(reason)\r\nContent-Type: text/plain\r\nContent-Length: 7\r\nConnection: close\r\n\r\nrefused".utf8)
        let thread = ThreadQueue(threads: 1, name: "sy-conformance")
        thread.submit { [self] in
            while !stopped.withLock({ $0 }) {
                let client = accept(fd, nil, nil)
                guard client >= 0 else { if errno == EINTR { continue } else { return } }
                var buffer = [UInt8](repeating: 0, count: 65536)
                _ = buffer.withUnsafeMutableBytes { recv(client, $0.baseAddress, $0.count, 0) }
                _ = answer.withUnsafeBytes { send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                count.withLock { $0 += 1 }
                close(client)
            }
        }
    }

    func stop() {
        stopped.withLock { $0 = true }
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
    }
}
