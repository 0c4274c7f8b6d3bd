import Foundation
@testable import Switchyard

/// A handlers.d full of what a careless or hostile device maker can drop there: broken syntax,
/// wrong types, unknown keys, duplicates, huge files, alias bombs, deep nesting, bad encodings,
/// special files and bad programs. Plus one good declaration, which must stay active.
///
/// Returns the names of the entries that must each be reported as a problem.
func writeHostileCorpus(in directory: String) throws -> [String] {
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    let bin = directory + "/../bin"
    write("#!/bin/sh\nexit 0\n", to: bin + "/ok.sh", mode: 0o755)
    write("#!/bin/sh\nexit 0\n", to: bin + "/not-executable.sh", mode: 0o644)
    try FileManager.default.createDirectory(atPath: bin + "/a-directory", withIntermediateDirectories: true)

    var texts: [String: String] = [
        // Syntax
        "syntax-unclosed-list.yaml": "operation: acme_A\nexec:\n  command: [../bin/ok.sh\n",
        "syntax-unclosed-quote.yaml": "operation: \"acme_A\n",
        "syntax-bad-indent.yaml": "operation: acme_A\n exec:\n  command: [../bin/ok.sh]\n",
        "syntax-tab-indent.yaml": "operation: acme_A\nexec:\n\tcommand: [../bin/ok.sh]\n",
        "syntax-colon-soup.yaml": "operation: : : acme_A\n: x\n",
        "syntax-unclosed-flow-map.yaml": "{operation: acme_A, exec: {command: [../bin/ok.sh]\n",
        "syntax-unknown-alias.yaml": "operation: *nothing\n",
        "syntax-second-document.yaml": "operation: acme_B2\nswift: Message\n---\noperation: [\n",
        "syntax-block-in-flow.yaml": "[operation: acme_A\n- x]\n",
        "syntax-directive.yaml": "%YAML 9.9\n---\noperation: acme_A\n",
        // Wrong types
        "type-operation-list.yaml": "operation: [acme_A]\nswift: Message\n",
        "type-operation-map.yaml": "operation: {name: acme_A}\nswift: Message\n",
        "type-fragments-map.yaml": "operation: acme_A\nfragments: {a: b}\nswift: Message\n",
        "type-concurrency-text.yaml": "operation: acme_A\nswift: Message\nconcurrency: many\n",
        "type-concurrency-zero.yaml": "operation: acme_A\nswift: Message\nconcurrency: 0\n",
        "type-concurrency-huge.yaml": "operation: acme_A\nswift: Message\nconcurrency: 99999999999999999999999\n",
        "type-resumable-maybe.yaml": "operation: acme_A\nswift: Message\nresumable: maybe\n",
        "type-timeout-negative.yaml": "operation: acme_A\nswift: Message\ntimeout: -5s\n",
        "type-timeout-word.yaml": "operation: acme_A\nswift: Message\ntimeout: soon\n",
        "type-exec-scalar.yaml": "operation: acme_A\nexec: ../bin/ok.sh\n",
        "type-command-empty.yaml": "operation: acme_A\nexec:\n  command: []\n",
        "type-env-list.yaml": "operation: acme_A\nexec:\n  command: [../bin/ok.sh]\n  env: [A, B]\n",
        "type-env-value-map.yaml": "operation: acme_A\nexec:\n  command: [../bin/ok.sh]\n  env: {A: {b: c}}\n",
        "type-example-list.yaml": "operation: acme_A\nswift: Message\nexample: [1, 2]\n",
        "type-document-list.yaml": "- operation: acme_A\n- swift: Message\n",
        "type-document-scalar.yaml": "just some words\n",
        // Unknown keys and conflicts
        "unknown-top-key.yaml": "operatoin: acme_A\nswift: Message\n",
        "unknown-exec-key.yaml": "operation: acme_A\nexec:\n  comand: [../bin/ok.sh]\n",
        "unknown-extra-key.yaml": "operation: acme_A\nswift: Message\nfoo: bar\n",
        "conflict-swift-and-exec.yaml": "operation: acme_A\nswift: Message\nexec:\n  command: [../bin/ok.sh]\n",
        "conflict-options-on-exec.yaml": "operation: acme_A\nexec:\n  command: [../bin/ok.sh]\noptions: {a: 1}\n",
        "conflict-two-timeouts.yaml": "operation: acme_A\ntimeout: 5s\nexec:\n  command: [../bin/ok.sh]\n  timeout: 6s\n",
        // Duplicates
        "duplicate-key.yaml": "operation: acme_A\noperation: acme_B\nswift: Message\n",
        "duplicate-exec-key.yaml": "operation: acme_A\nexec:\n  command: [../bin/ok.sh]\n  command: [../bin/ok.sh]\n",
        "duplicate-claim-1.yaml": "operation: acme_Twice\nswift: Message\n",
        "duplicate-claim-2.yaml": "operation: acme_Twice\nexec:\n  command: [../bin/ok.sh]\n",
        // Names, templates, environment, users, handlers
        "name-space.yaml": "operation: c8y Restart\nswift: Message\n",
        "name-digit.yaml": "operation: 1acme\nswift: Message\n",
        "name-umlaut.yaml": "operation: acme_Änderung\nswift: Message\n",
        "name-fragment-bad.yaml": "operation: acme_A\nfragments: [ok_one, 'not ok']\nswift: Message\n",
        "template-unclosed.yaml": "operation: acme_A\nexec:\n  command: [../bin/ok.sh, '${acme_A.level']\n",
        "template-in-program.yaml": "operation: acme_A\nexec:\n  command: ['${acme_A.program}']\n",
        "env-reserved.yaml": "operation: acme_A\nexec:\n  command: [../bin/ok.sh]\n  env: {SWITCHYARD_X: y}\n",
        "env-bad-name.yaml": "operation: acme_A\nexec:\n  command: [../bin/ok.sh]\n  env: {'A-B': y}\n",
        "user-unknown.yaml": "operation: acme_A\nexec:\n  command: [../bin/ok.sh]\n  user: no-such-user-here\n",
        "swift-unknown.yaml": "operation: acme_A\nswift: NoSuchHandler\n",
        "program-missing.yaml": "operation: acme_A\nexec:\n  command: [../bin/missing.sh]\n",
        "program-not-executable.yaml": "operation: acme_A\nexec:\n  command: [../bin/not-executable.sh]\n",
        "program-directory.yaml": "operation: acme_A\nexec:\n  command: [../bin/a-directory]\n",
        // Empty
        "empty.yaml": "",
        "only-comments.yaml": "# nothing here\n",
        "only-separator.yml": "---\n...\n",
    ]
    // Alias bombs
    var laughs = "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n"
    for level in 1...9 {
        let previous = String(UnicodeScalar(UInt8(ascii: "a") + UInt8(level - 1)))
        let name = String(UnicodeScalar(UInt8(ascii: "a") + UInt8(level)))
        laughs += "\(name): &\(name) [" + Array(repeating: "*\(previous)", count: 9).joined(separator: ",") + "]\n"
    }
    texts["bomb-billion-laughs.yaml"] = "operation: acme_A\nswift: Message\nexample:\n" + laughs.split(separator: "\n").map { "  " + $0 }.joined(separator: "\n") + "\n"
    texts["bomb-wide-alias.yaml"] = "x: &x [" + Array(repeating: "1", count: 2000).joined(separator: ",") + "]\ny: [" + Array(repeating: "*x", count: 100).joined(separator: ",") + "]\n"
    // Nesting
    texts["nesting-45k-lists.yaml"] = String(repeating: "[", count: 45_000) + String(repeating: "]", count: 45_000) + "\n"
    texts["nesting-45k-maps.yaml"] = String(repeating: "{a: ", count: 45_000) + "1" + String(repeating: "}", count: 45_000) + "\n"
    texts["nesting-100-lists.yaml"] = "operation: acme_A\nswift: Message\nexample: {x: " + String(repeating: "[", count: 100) + String(repeating: "]", count: 100) + "}\n"
    // Size
    texts["size-10MB.yaml"] = "operation: acme_A\nswift: Message\ndescription: \"" + String(repeating: "x", count: 10_000_000) + "\"\n"
    texts["size-2MB-comments.yaml"] = String(repeating: "# padding padding padding padding padding padding padding\n", count: 36_000)
    for (name, text) in texts { write(text, to: directory + "/" + name) }

    // Encodings and control characters (bytes, not text)
    let bytes: [String: [UInt8]] = [
        "encoding-not-utf8.yaml": Array("operation: acme_".utf8) + [0xFF, 0xFE, 0x41] + Array("\nswift: Message\n".utf8),
        "encoding-latin1.yaml": Array("operation: acme_".utf8) + [0xE9] + Array("\nswift: Message\n".utf8),
        "encoding-nul.yaml": Array("operation: acme_".utf8) + [0x00] + Array("X\nswift: Message\n".utf8),
        "encoding-bell.yaml": Array("operation: acme_".utf8) + [0x07] + Array("X\nswift: Message\n".utf8),
        "encoding-utf16.yaml": [0xFF, 0xFE] + Array("operation: acme_X\n".utf8).flatMap { [$0, 0] },
    ]
    for (name, content) in bytes { FileManager.default.createFile(atPath: directory + "/" + name, contents: Data(content)) }

    // Special files and links
    mkfifo(directory + "/special-fifo.yaml", 0o644)
    symlink("/dev/zero", directory + "/special-dev-zero.yaml")
    symlink("/dev/null", directory + "/special-dev-null.yaml")
    symlink("/etc/passwd", directory + "/link-out-of-directory.yaml")
    symlink(directory + "/nowhere.txt", directory + "/link-dangling.yaml")
    symlink(directory + "/link-loop-b.yaml", directory + "/link-loop-a.yaml")
    symlink(directory + "/link-loop-a.yaml", directory + "/link-loop-b.yaml")
    try FileManager.default.createDirectory(atPath: directory + "/a-directory.yaml", withIntermediateDirectories: true)

    // The one good declaration.
    write("operation: c8y_Message\nswift: Message\n", to: directory + "/zz-good.yaml")

    let all = (try FileManager.default.contentsOfDirectory(atPath: directory)).filter { $0.hasSuffix(".yaml") || $0.hasSuffix(".yml") }
    return all.filter { $0 != "zz-good.yaml" }.sorted()
}
