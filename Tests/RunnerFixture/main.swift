import HandlerKit
import HandlerKitRunner
import MessageHandler

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A compiled handler run out of process by HandlerKitRunner, for the tests: `c8y_Message` is the
/// standard Message handler (the same type the agent links in, to compare the two), anything else
/// the probe below, which uses every HandlerContext call that crosses the process boundary.
struct Probe: OperationHandler {
    struct Options: Decodable { var greeting: String }
    let greeting: String

    init(options: JSONValue) throws(HandlerOptionsError) {
        greeting = try options.decode(Options.self).greeting
    }

    func execute(_ operation: Operation, context: any HandlerContext) async throws -> Outcome {
        let request = operation.payload
        if request["crash"] == true { fatalError("the probe was told to crash") }
        await context.log("probe: \(greeting), phase \(context.phase.rawValue)")
        try await context.updateInventory(["acme_Probe": ["greeting": .string(greeting)]])
        try await context.sendMeasurement(type: "acme_ProbeMeasurement", fragments: ["acme_Probe": ["runs": ["value": 1]]])
        try await context.sendEvent(type: "acme_ProbeEvent", text: "probe ran", fragments: [:])
        try await context.raiseAlarm(type: "acme_ProbeAlarm", severity: .minor, text: "probe alarm")
        try await context.saveState("saved", forKey: "probe.state")
        let echoed = await context.runCommand(["/bin/echo", "from a command"], timeout: .seconds(10))
        var result: [String: JSONValue] = ["state": .string(await context.loadState(forKey: "probe.state") ?? ""),
                                           "output": .string(echoed.output)]
        if let url = request["url"]?.stringValue {
            let file = context.stateDirectory + "/download"
            result["size"] = .int(try await context.download(url, to: file, maxBytes: 1 << 20))
            result["sha256"] = .string(try await context.sha256(ofFile: file))
            result["attached"] = .string(try await context.sendEvent(type: "acme_ProbeFile", text: "probe file", fragments: [:],
                                                                     attaching: file, fileName: "probe.bin",
                                                                     contentType: "application/octet-stream"))
        }
        if request["restart"] == true { return .restartRequired }
        return .successful(result: ["acme_Probe": .object(result)])
    }

    func resume(_ operation: Operation, context: any HandlerContext) async throws -> Outcome {
        let state = await context.loadState(forKey: "probe.state") ?? "none"
        return .successful(result: ["acme_Probe": ["resumed": true, "state": .string(state)]])
    }

    func report(context: any DeviceContext) async throws {
        try await context.updateInventory(["acme_ProbeReport": ["greeting": .string(greeting)]])
    }
}

@main struct RunnerFixture {
    static func main() async {
        if let fragment = getenv("SWITCHYARD_FRAGMENT"), String(cString: fragment) == "c8y_Message" {
            await HandlerRunner.run(MessageHandler.self)
        } else {
            await HandlerRunner.run(Probe.self)
        }
    }
}
