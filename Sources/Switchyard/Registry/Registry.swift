public import HandlerKit
import Logging

/// The handlers declared in one `handlers.d` directory, and the problems found reading it.
///
/// A file that does not parse or validate is reported with its file, line and reason and skipped;
/// the rest stay active. Two declarations claiming the same fragment are both rejected, with an
/// error naming both: which one should win is the device maker's decision, not the agent's.
public struct Registry: Sendable {
    public let directory: String
    public let declarations: [HandlerDeclaration]
    /// The programs the declarations name, valid or not: a change to one (a lost executable bit, a
    /// replaced script) reloads the directory as a change to a file does.
    public var programs: [String] {
        var paths = declarations.compactMap { declaration -> String? in
            if case .exec(let spec) = declaration.kind { spec.command.first } else { nil }
        }
        paths += problems.compactMap(\.program)
        return Array(Set(paths)).sorted()
    }
    public let problems: [FileProblem]
    /// Valid declarations left out because the directory handles none of the fragments they require.
    public let dormant: [HandlerDeclaration]
    private let byFragment: [String: HandlerDeclaration]

    public init(directory: String, declarations: [HandlerDeclaration], problems: [FileProblem]) {
        var problems = problems
        var claims: [String: [HandlerDeclaration]] = [:]
        for declaration in declarations {
            for fragment in Set(declaration.fragments) { claims[fragment, default: []].append(declaration) }
        }
        var rejected = Set<String>()  // locations
        for (fragment, claimants) in claims.sorted(by: { $0.key < $1.key }) where claimants.count > 1 {
            let places = claimants.map(\.location).joined(separator: " and ")
            for claimant in claimants {
                rejected.insert(claimant.location)
                problems.append(FileProblem(file: claimant.file, line: claimant.line,
                                            "fragment \(fragment) is claimed by \(places); neither is active until one is removed"))
            }
        }
        var active = declarations.filter { !rejected.contains($0.location) }
        // A declaration that requires others is active only with one of them: it is left out, not
        // an error (the device simply lacks what it builds on), and said so in `dormant`.
        let handled = Set(active.filter { $0.requires.isEmpty }.flatMap(\.fragments))
        let dormant = active.filter { !$0.requires.isEmpty && !$0.requires.contains(where: handled.contains) }
        active.removeAll { declaration in dormant.contains { $0.location == declaration.location } }
        self.dormant = dormant
        var byFragment: [String: HandlerDeclaration] = [:]
        for declaration in active {
            for fragment in declaration.fragments { byFragment[fragment] = declaration }
        }
        self.directory = directory
        self.declarations = active
        self.problems = problems.sorted { ($0.file, $0.line ?? 0) < ($1.file, $1.line ?? 0) }
        self.byFragment = byFragment
    }

    /// The declaration handling a fragment.
    public func declaration(for fragment: String) -> HandlerDeclaration? { byFragment[fragment] }

    /// The handled fragments, sorted.
    public var fragments: [String] { byFragment.keys.sorted() }

    /// What the device advertises as `c8y_SupportedOperations`: the sorted operation names of the valid declarations.
    public var supportedOperations: [String] { Set(declarations.flatMap(\.advertised)).sorted() }

    /// Like ``load(directory:catalog:)``, but a missing directory is an empty registry, not a problem.
    public static func loadOptional(directory: String, catalog: [String: any OperationHandler.Type],
                                    limits: DeclarationReader.Limits = .init()) -> Registry {
        FileSystem.isDirectory(directory) ? load(directory: directory, catalog: catalog, limits: limits)
            : Registry(directory: directory, declarations: [], problems: [])
    }

    /// Reads every `*.yaml` / `*.yml` file directly in `directory`, in name order.
    /// - Parameter catalog: the compiled handlers `swift:` declarations may name.
    /// Entries that are not regular files (directories, FIFOs, devices, dangling links) are reported, not read.
    public static func load(directory: String, catalog: [String: any OperationHandler.Type],
                            limits: DeclarationReader.Limits = .init()) -> Registry {
        let names: [String]
        do {
            guard let listed = try FileSystem.list(directory) else {
                return Registry(directory: directory, declarations: [],
                                problems: [FileProblem(file: directory, line: nil, "handlers directory does not exist")])
            }
            names = listed
        } catch {
            return Registry(directory: directory, declarations: [], problems: [FileProblem(file: directory, line: nil, error.description)])
        }
        var declarations: [HandlerDeclaration] = []
        var problems: [FileProblem] = []
        for name in names where name.hasSuffix(".yaml") || name.hasSuffix(".yml") {
            let path = directory + "/" + name
            do throws(FileProblems) {
                declarations += try DeclarationReader.read(file: path, catalog: catalog, limits: limits)
            } catch {
                problems += error.problems
            }
        }
        return Registry(directory: directory, declarations: declarations, problems: problems)
    }

    /// Says which declarations wait for a handler they require (a notice: not an error).
    func logDormant(_ logger: Logger) {
        for declaration in dormant {
            logger.notice("handler declaration inactive: this directory handles none of the fragments it requires", metadata: [
                "declaration": "\(declaration.location)", "operation": "\(declaration.operation)",
                "requires": "\(declaration.requires.joined(separator: ","))",
            ])
        }
    }
}
