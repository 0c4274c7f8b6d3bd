/// Starting points for a new handler (`switchyard handlers new NAME --lang sh|python|swift`): a
/// declaration and a plugin that shows every directive, or for Swift a package with the handler, the
/// executable HandlerKitRunner makes of it, and a unit test. Each validates and runs with
/// `switchyard handlers run NAME --example` as generated (the Swift one once built).
public struct HandlerTemplate: Sendable {
    public enum Language: String, Sendable, CaseIterable {
        case sh, python, swift
    }

    /// A file to write: its path relative to the target, its text, whether it is executable.
    public struct File: Sendable, Equatable {
        public let path: String
        public let text: String
        public let executable: Bool
    }

    public let name: String
    public let language: Language

    /// The problem with a name, if any: operation names are identifiers (letters, digits, `_`).
    public static func problem(with name: String) -> String? {
        let valid = !name.isEmpty && name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") } && !(name.first?.isNumber ?? true)
        return valid ? nil : "\(name) is not an operation name: letters, digits and _ only, not starting with a digit (e.g. acme_Blink)"
    }

    public init(name: String, language: Language) {
        self.name = name
        self.language = language
    }

    /// The files in `handlers` (the declaration and a script), and for Swift in `package` (the package).
    /// - Parameter switchyard: how the Swift package names its Switchyard dependency (a URL, or a local path).
    public func files(package: String, switchyard: Dependency) -> (handlers: [File], package: [File]) {
        switch language {
        case .sh:
            return ([declaration(command: "./\(name).sh"), File(path: "\(name).sh", text: shell, executable: true)], [])
        case .python:
            return ([declaration(command: "./\(name).py"), File(path: "\(name).py", text: python, executable: true)], [])
        case .swift:
            return ([declaration(executable: package + "/.build/debug/" + executableName)], swiftPackage(switchyard))
        }
    }

    /// Where a generated Swift package gets Switchyard from.
    public enum Dependency: Sendable {
        case url(String, from: String)
        case path(String)

        var manifest: String {
            switch self {
            case .url(let url, let version): ".package(url: \"\(url)\", from: \"\(version)\")"
            case .path(let path): ".package(name: \"switchyard\", path: \"\(path)\")"
            }
        }
    }

    var typeName: String {
        let parts = name.split(separator: "_")
        return (parts.count > 1 ? parts.dropFirst() : parts[...]).map { $0.prefix(1).uppercased() + $0.dropFirst() }.joined()
    }

    var executableName: String { name.lowercased().replacing("_", with: "-") }

    var example: String {
        """
        example:
          description: \(name) from the demo
          \(name): {message: hello}
        """
    }

    func declaration(command: String) -> File {
        File(path: "\(name).yaml", text: """
            # \(name): an operation served by an executable (plugin protocol v1, docs/plugin-protocol.md).
            # Try it: switchyard handlers run \(name) --example --dir <this directory>
            operation: \(name)
            description: \(name) (describe what it does)
            exec:
              command: [\(command)]
              timeout: 60s
            \(example)

            """, executable: false)
    }

    func declaration(executable: String) -> File {
        File(path: "\(name).yaml", text: """
            # \(name): a compiled handler built as its own executable (HandlerKitRunner).
            # Build it (swift build in its package), then: switchyard handlers run \(name) --example --dir <this directory>
            operation: \(name)
            description: \(name) (describe what it does)
            swift: {executable: \(executable)}
            timeout: 60s
            options:
              greeting: hello
            \(example)

            """, executable: false)
    }

    var shell: String {
        """
        #!/bin/sh
        # \(name): plugin protocol v1. The operation is on stdin and in $SWITCHYARD_OPERATION_FILE; a line on
        # standard output that is a JSON object with "switchyard" is a directive, every other line (and all of
        # standard error) is the operation's log. Exit 0: SUCCESSFUL; non-zero: FAILED.
        set -eu
        operation=$(cat)
        echo "\(name): operation ${SWITCHYARD_OPERATION_ID:-?}, phase ${SWITCHYARD_PHASE:-execute}"
        printf '%s\\n' '{"switchyard":"progress","message":"started"}'
        printf '%s\\n' '{"switchyard":"inventory","fragments":{"\(name)":{"lastRun":"'"${SWITCHYARD_OPERATION_ID:-?}"'"}}}'
        printf '%s\\n' '{"switchyard":"event","type":"\(name)Event","text":"\(name) ran"}'
        printf '%s\\n' '{"switchyard":"measurement","type":"\(name)Measurement","fragments":{"\(name)":{"runs":{"value":1,"unit":"count"}}}}'
        printf '%s\\n' '{"switchyard":"alarm","type":"\(name)Alarm","severity":"WARNING","text":"\(name) raised this"}'
        printf '%s\\n' '{"switchyard":"clear-alarm","type":"\(name)Alarm"}'
        printf '%s\\n' '{"switchyard":"result","fragments":{"\(name)":{"done":true}}}'
        # To fail: printf '%s\\n' '{"switchyard":"failure","reason":"why"}'; exit 1
        # To restart the device first (declare resumable: true): print {"switchyard":"restart"} and exit 0;
        # after the restart this runs again with SWITCHYARD_PHASE=resume.
        : "$operation"
        exit 0

        """
    }

    var python: String {
        """
        #!/usr/bin/env python3
        \"\"\"\(name): plugin protocol v1. The operation is on stdin and in $SWITCHYARD_OPERATION_FILE; a line on
        standard output that is a JSON object with "switchyard" is a directive, every other line (and all of
        standard error) is the operation's log. Exit 0: SUCCESSFUL; non-zero: FAILED.\"\"\"
        import json
        import os
        import sys


        def directive(name, **members):
            print(json.dumps({"switchyard": name, **members}), flush=True)


        def main():
            # The operation is on stdin and in the file; the file serves when stdin is closed at once.
            text = sys.stdin.read() or open(os.environ["SWITCHYARD_OPERATION_FILE"], encoding="utf-8").read()
            operation = json.loads(text)
            request = operation.get("\(name)", {})
            print(f"\(name): operation {os.environ.get('SWITCHYARD_OPERATION_ID', '?')}, "
                  f"phase {os.environ.get('SWITCHYARD_PHASE', 'execute')}", file=sys.stderr)
            directive("progress", message="started")
            directive("inventory", fragments={"\(name)": {"lastRun": os.environ.get("SWITCHYARD_OPERATION_ID", "?")}})
            directive("event", type="\(name)Event", text="\(name) ran")
            directive("measurement", type="\(name)Measurement", fragments={"\(name)": {"runs": {"value": 1, "unit": "count"}}})
            directive("alarm", type="\(name)Alarm", severity="WARNING", text="\(name) raised this")
            directive("clear-alarm", type="\(name)Alarm")
            # To fail: directive("failure", reason="why"); return 1
            # To restart the device first (declare resumable: true): directive("restart"); return 0
            directive("result", fragments={"\(name)": {"done": True, "message": request.get("message")}})
            return 0


        if __name__ == "__main__":
            sys.exit(main())

        """
    }

    func swiftPackage(_ switchyard: Dependency) -> [File] {
        let handler = typeName + "Handler"
        return [
            File(path: "Package.swift", text: """
                // swift-tools-version: 6.2
                import PackageDescription

                let package = Package(
                    name: "\(executableName)",
                    platforms: [.macOS(.v15)],
                    dependencies: [\(switchyard.manifest)],
                    targets: [
                        .target(name: "\(handler)", dependencies: [.product(name: "HandlerKit", package: "switchyard")]),
                        .executableTarget(name: "\(executableName)", dependencies: [
                            "\(handler)", .product(name: "HandlerKitRunner", package: "switchyard"),
                        ]),
                        .testTarget(name: "\(handler)Tests", dependencies: [
                            "\(handler)", .product(name: "HandlerKitTesting", package: "switchyard"),
                        ]),
                    ]
                )

                """, executable: false),
            File(path: "Sources/\(handler)/\(handler).swift", text: """
                import HandlerKit

                /// `\(name)` (`{message}`): shows each HandlerKit call; replace the body with what your device does.
                ///
                /// Options: `greeting` (required).
                public struct \(handler): OperationHandler {
                    struct Options: Decodable { var greeting: String }
                    let greeting: String

                    public init(options: JSONValue) throws(HandlerOptionsError) {
                        greeting = try options.decode(Options.self).greeting
                    }

                    public func execute(_ operation: Operation, context: any HandlerContext) async throws -> Outcome {
                        let message = operation.payload["message"]?.stringValue ?? ""
                        await context.log("\\(greeting): \\(message)")
                        try await context.updateInventory(["\(name)": ["lastRun": .string(operation.id)]])
                        try await context.sendEvent(type: "\(name)Event", text: "\(name) ran", fragments: [:])
                        try await context.sendMeasurement(type: "\(name)Measurement", fragments: ["\(name)": ["runs": ["value": 1]]])
                        try await context.raiseAlarm(type: "\(name)Alarm", severity: .warning, text: "\(name) raised this")
                        try await context.clearAlarm(type: "\(name)Alarm")
                        return .successful(result: ["\(name)": ["done": true, "message": .string(message)]])
                    }
                }

                """, executable: false),
            File(path: "Sources/\(executableName)/main.swift", text: """
                import \(handler)
                import HandlerKitRunner

                await HandlerRunner.run(\(handler).self)

                """, executable: false),
            File(path: "Tests/\(handler)Tests/\(handler)Tests.swift", text: """
                import HandlerKit
                import HandlerKitTesting
                import Testing
                import \(handler)

                @Suite struct \(handler)Tests {
                    @Test func runsAndReports() async throws {
                        let context = RecordingContext(stateDirectory: "/tmp")
                        let handler = try \(handler)(options: ["greeting": "hello"])
                        let operation = Operation(id: "1", deviceId: "d", externalId: nil, fragment: "\(name)",
                                                  json: ["\(name)": ["message": "hi"]])
                        let outcome = try await handler.execute(operation, context: context)
                        #expect(outcome == .successful(result: ["\(name)": ["done": true, "message": "hi"]]))
                        #expect(context.calls.first == .log("hello: hi"))
                        #expect(context.inventory["\(name)"] == ["lastRun": "1"])
                    }
                }

                """, executable: false),
        ]
    }
}
