import Blink
import HandlerKit
import HandlerKitTesting
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The handler alone, with a recording context: no agent, no sandbox.
@Suite struct BlinkTests {
    func directory() -> String {
        var template = Array("/tmp/blink-XXXXXX".utf8CString)
        return template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
    }

    @Test func blinksAndReports() async throws {
        let dir = directory()
        let context = RecordingContext(stateDirectory: dir)
        let handler = try Blink(options: ["led": .string(dir + "/brightness"), "intervalMilliseconds": 1])
        let operation = Operation(id: "1", deviceId: "d", externalId: nil, fragment: "acme_Blink", json: ["acme_Blink": ["times": 2]])
        let outcome = try await handler.execute(operation, context: context)
        #expect(outcome == .successful(result: ["acme_Blink": ["times": 2, "blinked": true]]))
        #expect(context.calls.contains(.log("blink 2 of 2")))
        #expect(context.inventory["acme_Blink"] == ["lastTimes": 2])
    }

    @Test func refusesWhatItCannotDo() async throws {
        #expect(throws: HandlerOptionsError("options.led must be the absolute path of the LED's brightness file")) {
            try Blink(options: ["led": "brightness"])
        }
        let handler = try Blink(options: ["led": "/tmp/unused"])
        let context = RecordingContext(stateDirectory: directory())
        let operation = Operation(id: "1", deviceId: "d", externalId: nil, fragment: "acme_Blink", json: ["acme_Blink": ["times": 99]])
        #expect(try await handler.execute(operation, context: context) == .failed("acme_Blink.times must be from 1 to 20, found 99"))
    }
}
