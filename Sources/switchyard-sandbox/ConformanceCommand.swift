import ArgumentParser
import Switchyard

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// `switchyard-sandbox conformance`: a plugin through its protocol's edge cases, with a pass/fail
/// report; exits 1 on any failure, so a device maker can run it in their own CI.
struct ConformanceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "conformance",
        abstract: "Check a plugin against its protocol: an exec plugin, a software-type plugin or a firmware installer.",
        discussion: """
            Give a declaration (DECLARATION.yaml: its first exec or swift: {executable:} handler), or a program \
            with --kind. Exec plugins get the operation on stdin and in the file, stdin closed early, a 1 MiB \
            operation with Unicode values, SIGTERM, and a plugin proxy answering 401 and 503. Software-type \
            plugins (thin-edge.io's API) get list, prepare, update-list, install/remove (--module), finalize, an \
            unknown command and a failing install. Firmware installers get install, needs-reboot, verify, commit, \
            rollback and a missing image: run them where that is safe (--env FIRMWARE_ROOT=… for the example installer).
            """)

    @Argument(help: "A handler declaration (YAML), or with --kind the plugin's program.") var target: String
    @Option(help: "exec, sm-plugin or firmware-installer (default: exec for a program; a declaration says itself).") var kind: String?
    @Option(help: "exec: the fragment the operation carries.") var fragment = "acme_Conformance"
    @Option(help: "A variable for the plugin, NAME=VALUE (repeatable).") var env: [String] = []
    @Option(help: "Seconds one run may take.") var timeout = 10
    @Option(help: "sm-plugin: a module to install and remove.") var module: String?
    @Option(help: "sm-plugin: the module's version.") var version = "1.0"
    @Option(help: "sm-plugin: the module's file (install --file).") var file: String?
    @Option(help: "firmware-installer: the image to install (default: a generated one).") var image: String?

    func run() async throws {
        signal(SIGPIPE, SIG_IGN)  // a plugin that exits without reading its input must not end the check
        var environment: [String: String] = [:]
        for pair in env {
            guard let equals = pair.firstIndex(of: "="), equals != pair.startIndex else { throw ValidationError("--env takes NAME=VALUE, found \(pair)") }
            environment[String(pair[..<equals])] = String(pair[pair.index(after: equals)...])
        }
        let scratch = "/tmp/switchyard-conformance-\(getpid())"
        defer { FileSystem.removeTree(scratch) }
        let conformance: Conformance
        if target.hasSuffix(".yaml") || target.hasSuffix(".yml") {
            switch Conformance.declaration(target, timeout: .seconds(timeout), scratch: scratch) {
            case .success(let found): conformance = found
            case .failure(let problems):
                for problem in problems.problems { print("FAIL  declaration: \(problem)") }
                throw ExitCode(1)
            }
        } else {
            guard let kind = Conformance.Kind(rawValue: kind ?? "exec") else {
                throw ValidationError("--kind must be exec, sm-plugin or firmware-installer")
            }
            let program = FileSystem.absolute(target)
            guard FileSystem.isExecutable(program) else { throw ValidationError("\(program) is not an executable file") }
            conformance = Conformance(program: [program], environment: environment, kind: kind, fragment: fragment,
                                      timeout: .seconds(timeout), scratch: scratch,
                                      module: module.map { ($0, version, file.map(FileSystem.absolute)) }, image: image)
        }
        let checks = await conformance.run()
        for check in checks {
            print((check.passed ? "PASS  " : "FAIL  ") + check.name + ": " + check.detail)
        }
        let failed = checks.filter { !$0.passed }.count
        print("\(checks.count - failed) of \(checks.count) checks passed")
        if failed > 0 { throw ExitCode(1) }
    }
}
