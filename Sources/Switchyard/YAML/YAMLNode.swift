import CYAML

/// A YAML node with the line it starts on, for error messages that name `file:line`.
///
/// Built from libyaml's event stream; anchors and aliases are resolved, tags are ignored, and
/// scalars stay text (typed readers such as ``DeclarationReader`` interpret them).
public indirect enum YAMLNode: Sendable, Equatable {
    case scalar(String, plain: Bool, line: Int)
    case sequence([YAMLNode], line: Int)
    case mapping([(key: YAMLNode, value: YAMLNode)], line: Int)

    public var line: Int {
        switch self {
        case .scalar(_, _, let line), .sequence(_, let line), .mapping(_, let line): return line
        }
    }

    /// The text of a scalar, `nil` for collections.
    public var scalar: String? {
        if case .scalar(let text, _, _) = self { return text }
        return nil
    }

    /// A plain `~`, `null` or empty scalar.
    public var isNull: Bool {
        if case .scalar(let text, true, _) = self { return ["", "~", "null", "Null", "NULL"].contains(text) }
        return false
    }

    /// What kind of node this is, for messages ("a mapping", "a list", "text").
    public var kindName: String {
        switch self {
        case .scalar: return "a scalar"
        case .sequence: return "a list"
        case .mapping: return "a mapping"
        }
    }

    public static func == (lhs: YAMLNode, rhs: YAMLNode) -> Bool {
        switch (lhs, rhs) {
        case let (.scalar(a, pa, la), .scalar(b, pb, lb)): return a == b && pa == pb && la == lb
        case let (.sequence(a, la), .sequence(b, lb)): return a == b && la == lb
        case let (.mapping(a, la), .mapping(b, lb)):
            return la == lb && a.count == b.count && zip(a, b).allSatisfy { $0.key == $1.key && $0.value == $1.value }
        default: return false
        }
    }
}

/// YAML text that libyaml could not parse.
public struct YAMLSyntaxError: Error, CustomStringConvertible, Sendable {
    public let line: Int
    public let column: Int
    public let detail: String
    public var description: String { "line \(line), column \(column): \(detail)" }
}

extension YAMLNode {
    /// The byte a libyaml mark points at, if it is inside the input.
    static func byte(at mark: yaml_mark_t, in buffer: UnsafeBufferPointer<UInt8>) -> UInt8? {
        mark.index < buffer.count ? buffer[mark.index] : nil
    }
}

/// Bounds on what one YAML text may build: handler files come from whoever can write to the
/// directory, so a small file must not be able to exhaust memory or the stack.
public struct YAMLLimits: Sendable {
    /// Deepest nesting of lists and mappings.
    public var maximumDepth = 64
    /// Most nodes the documents may hold once aliases are expanded (a "billion laughs" file stops here).
    public var maximumNodes = 100_000
    public init() {}
}

extension YAMLNode {
    /// Parses every document of a YAML stream (`---` separates documents).
    /// - Throws: ``YAMLSyntaxError`` with the line and column libyaml reports, or where a limit was passed.
    public static func parseDocuments(_ text: String, limits: YAMLLimits = .init()) throws(YAMLSyntaxError) -> [YAMLNode] {
        try parseDocuments(bytes: Array(text.utf8), limits: limits)
    }

    /// Parses YAML bytes as they are: text that is not UTF-8 is reported by libyaml, not replaced.
    public static func parseDocuments(bytes: [UInt8], limits: YAMLLimits = .init()) throws(YAMLSyntaxError) -> [YAMLNode] {
        var parser = yaml_parser_t()
        guard yaml_parser_initialize(&parser) == 1 else {
            throw YAMLSyntaxError(line: 0, column: 0, detail: "cannot initialise the YAML parser")
        }
        defer { yaml_parser_delete(&parser) }
        return try bytes.withUnsafeBufferPointer { buffer throws(YAMLSyntaxError) -> [YAMLNode] in
            yaml_parser_set_input_string(&parser, buffer.baseAddress, buffer.count)
            yaml_parser_set_encoding(&parser, YAML_UTF8_ENCODING)
            var builder = Builder(limits: limits)
            while true {
                var event = yaml_event_t()
                guard yaml_parser_parse(&parser, &event) == 1 else {
                    let mark = parser.problem_mark
                    var problem = parser.problem.map { String(cString: $0) } ?? "syntax error"
                    let context = parser.context.map { " " + String(cString: $0) } ?? ""
                    if problem.contains("cannot start any token"), Self.byte(at: mark, in: buffer) == 0x09 {
                        problem = "tab characters are not allowed for indentation (use spaces)"
                    }
                    // libyaml notices many mistakes only at the next token (a key without ':' when the next
                    // line starts, an unclosed '[' or quote at the end): the construct it was reading began
                    // at the context mark, which is the line to fix.
                    if parser.context != nil, parser.context_mark.line < mark.line {
                        let start = parser.context_mark
                        throw YAMLSyntaxError(line: start.line + 1, column: start.column + 1,
                                              detail: problem + context + " (begun here, noticed at line \(mark.line + 1))")
                    }
                    throw YAMLSyntaxError(line: mark.line + 1, column: mark.column + 1, detail: problem + context)
                }
                defer { yaml_event_delete(&event) }
                if event.type == YAML_STREAM_END_EVENT { break }
                try builder.take(event)
            }
            return builder.documents
        }
    }
}

private struct Builder {
    enum Frame {
        case sequence([YAMLNode], line: Int, anchor: String?)
        case mapping([(key: YAMLNode, value: YAMLNode)], pendingKey: YAMLNode?, line: Int, anchor: String?)
    }

    let limits: YAMLLimits
    var stack: [Frame] = []
    /// Each anchored node with the number of nodes it holds, so an alias is counted at its full size.
    var anchors: [String: (node: YAMLNode, size: Int)] = [:]
    /// The node counts of the open collections (parallel to `stack`).
    var sizes: [Int] = []
    var documents: [YAMLNode] = []
    var documentHasRoot = false
    /// Nodes built so far, aliases counted as the nodes they stand for.
    var nodes = 0

    init(limits: YAMLLimits) { self.limits = limits }

    /// Counts `count` more nodes, and fails once the budget is spent.
    private mutating func count(_ count: Int, event: yaml_event_t) throws(YAMLSyntaxError) {
        nodes += count
        guard nodes <= limits.maximumNodes else {
            throw YAMLSyntaxError(line: event.start_mark.line + 1, column: event.start_mark.column + 1,
                                  detail: "more than \(limits.maximumNodes) nodes once aliases are expanded (an alias bomb?)")
        }
    }

    mutating func take(_ event: yaml_event_t) throws(YAMLSyntaxError) {
        let line = event.start_mark.line + 1
        switch event.type {
        case YAML_DOCUMENT_START_EVENT:
            documentHasRoot = false
            anchors.removeAll()
        case YAML_DOCUMENT_END_EVENT:
            if !documentHasRoot { documents.append(.scalar("", plain: true, line: line)) }
        case YAML_SCALAR_EVENT:
            let scalar = event.data.scalar
            let text = String(decoding: UnsafeBufferPointer(start: scalar.value, count: scalar.length), as: UTF8.self)
            let node = YAMLNode.scalar(text, plain: scalar.style == YAML_PLAIN_SCALAR_STYLE, line: line)
            try count(1, event: event)
            if let anchor = scalar.anchor { anchors[String(cString: anchor)] = (node, 1) }
            add(node, size: 1)
        case YAML_ALIAS_EVENT:
            let name = event.data.alias.anchor.map { String(cString: $0) } ?? ""
            guard let (node, size) = anchors[name] else {
                throw YAMLSyntaxError(line: line, column: event.start_mark.column + 1, detail: "unknown alias *\(name)")
            }
            try count(size, event: event)
            add(node, size: size)
        case YAML_SEQUENCE_START_EVENT, YAML_MAPPING_START_EVENT:
            guard stack.count < limits.maximumDepth else {
                throw YAMLSyntaxError(line: line, column: event.start_mark.column + 1,
                                      detail: "nested more than \(limits.maximumDepth) levels deep")
            }
            try count(1, event: event)
            sizes.append(1)
            if event.type == YAML_SEQUENCE_START_EVENT {
                stack.append(.sequence([], line: line, anchor: event.data.sequence_start.anchor.map { String(cString: $0) }))
            } else {
                stack.append(.mapping([], pendingKey: nil, line: line, anchor: event.data.mapping_start.anchor.map { String(cString: $0) }))
            }
        case YAML_SEQUENCE_END_EVENT, YAML_MAPPING_END_EVENT:
            guard let frame = stack.popLast(), let size = sizes.popLast() else { return }
            switch frame {
            case .sequence(let items, let start, let anchor):
                let node = YAMLNode.sequence(items, line: start)
                if let anchor { anchors[anchor] = (node, size) }
                add(node, size: size)
            case .mapping(let pairs, _, let start, let anchor):
                let node = YAMLNode.mapping(pairs, line: start)
                if let anchor { anchors[anchor] = (node, size) }
                add(node, size: size)
            }
        default:
            break
        }
    }

    private mutating func add(_ node: YAMLNode, size: Int) {
        if !sizes.isEmpty { sizes[sizes.count - 1] += size }
        guard let top = stack.popLast() else {
            documents.append(node)
            documentHasRoot = true
            return
        }
        switch top {
        case .sequence(var items, let line, let anchor):
            items.append(node)
            stack.append(.sequence(items, line: line, anchor: anchor))
        case .mapping(var pairs, let key, let line, let anchor):
            if let key {
                pairs.append((key, node))
                stack.append(.mapping(pairs, pendingKey: nil, line: line, anchor: anchor))
            } else {
                stack.append(.mapping(pairs, pendingKey: node, line: line, anchor: anchor))
            }
        }
    }
}
