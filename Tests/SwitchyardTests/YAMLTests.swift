import JSONSupport
import Sandbox
import Testing
@testable import Switchyard

struct YAMLTests {
    @Test func mappingsKeepLineNumbers() throws {
        let documents = try YAMLNode.parseDocuments("a: 1\nb:\n  - x\n  - 'y'\nc: {d: true}\n")
        let root = try #require(documents.first)
        guard case .mapping(let pairs, let line) = root else { Issue.record("not a mapping"); return }
        #expect(line == 1)
        #expect(pairs.map { $0.key.scalar } == ["a", "b", "c"])
        #expect(pairs[1].value.line == 3)
        #expect(root.json == ["a": 1, "b": ["x", "y"], "c": ["d": true]])
    }

    @Test func quotedScalarsStayText() throws {
        let root = try #require(try YAMLNode.parseDocuments("a: '1'\nb: \"true\"\nc: ~\n").first)
        #expect(root.json == ["a": "1", "b": "true", "c": nil])
    }

    @Test func severalDocuments() throws {
        let documents = try YAMLNode.parseDocuments("a: 1\n---\nb: 2\n")
        #expect(documents.count == 2)
        #expect(documents[1].line == 3)
    }

    @Test func aliasesResolve() throws {
        let root = try #require(try YAMLNode.parseDocuments("base: &b {x: 1}\ncopy: *b\n").first)
        #expect(root.json["copy"] == ["x": 1])
    }

    @Test func syntaxErrorsNameTheLine() {
        #expect {
            _ = try YAMLNode.parseDocuments("a: 1\nb: [unclosed\nc: 3\n")
        } throws: { error in
            guard let error = error as? YAMLSyntaxError else { return false }
            return error.line >= 2 && !error.detail.isEmpty
        }
    }

    @Test func durations() {
        #expect(parseDuration("500ms") == .milliseconds(500))
        #expect(parseDuration("30s") == .seconds(30))
        #expect(parseDuration("5m") == .seconds(300))
        #expect(parseDuration("1h") == .seconds(3600))
        #expect(parseDuration("2.5") == .milliseconds(2500))
        #expect(parseDuration("soon") == nil)
        #expect(parseDuration("-3s") == nil)
    }
}
