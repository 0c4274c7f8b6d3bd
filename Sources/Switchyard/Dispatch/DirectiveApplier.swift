import Cumulocity
import HandlerKit
import Logging

/// Carries out the directives an executable plugin prints, in order, through the operation's
/// ``OperationContext`` (so they go through the outbox and arrive before the final status). A failed
/// directive is logged in the agent's and the operation's log; it does not fail the operation.
struct DirectiveApplier: Sendable {
    let context: OperationContext
    let logger: Logger

    func apply(_ directive: Directive) async {
        do {
            switch directive {
            case .progress(let message):
                logger.info("progress", metadata: ["operation": "\(context.operationID)", "message": "\(message)"])
            case .inventory(let fragments):
                try await context.updateInventory(fragments)
            case .event(let type, let text, let fragments):
                try await context.sendEvent(type: type, text: text, fragments: fragments)
            case .measurement(let type, let fragments):
                try await context.sendMeasurement(type: type, fragments: fragments)
            case .alarm(let type, let severity, let text, let fragments):
                try await context.raiseAlarm(type: type, severity: severity, text: text, fragments: fragments)
            case .clearAlarm(let type):
                try await context.clearAlarm(type: type)
            case .result, .failure, .restart:
                break  // read by the runner (ExecResult)
            }
        } catch {
            logger.warning("plugin directive failed", metadata: ["operation": "\(context.operationID)", "error": "\(error)"])
            await context.log("[switchyard: directive failed: \(error)]")
        }
    }
}
