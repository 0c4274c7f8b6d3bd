import HandlerKit
import JSONSupport
import Logging

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// How one run of a handler ended.
enum RunEnd: Sendable, Equatable {
    case outcome(Outcome)
    /// The handler asked for a device restart: a compiled one returned ``Outcome/restartRequired``,
    /// an executable printed a `restart` directive and exited 0.
    case restartRequested
}

/// Runs a declaration's handler for one operation: the one interface the ``Dispatcher`` calls,
/// whether the handler is compiled in (``CompiledHandlerRunner``) or an executable plugin
/// (``ExecPluginRunner``). The time limit is the declaration's.
protocol HandlerRunner: Sendable {
    func run(_ operation: Operation, phase: Phase, timeout: Duration, context: OperationContext,
             workspace: OperationWorkspace) async -> RunEnd
}

/// A compiled handler, in-process, raced against its time limit (then cancelled).
struct CompiledHandlerRunner: HandlerRunner {
    let handler: any OperationHandler

    func run(_ operation: Operation, phase: Phase, timeout: Duration, context: OperationContext,
             workspace: OperationWorkspace) async -> RunEnd {
        let handler = self.handler
        let outcome = await withTimeLimit(timeout) { () async -> Outcome in
            do {
                return phase == .resume
                    ? try await handler.resume(operation, context: context)
                    : try await handler.execute(operation, context: context)
            } catch {
                return .failed(Task.isCancelled ? "cancelled" : "\(error)")
            }
        }
        guard let outcome else { return .outcome(.failed("timed out after \(timeout) and was cancelled")) }
        return outcome == .restartRequired ? .restartRequested : .outcome(outcome)
    }
}

/// An executable plugin (plugin protocol v1, docs/plugin-protocol.md): started through
/// ``ExecRunner`` with the operation on stdin and the `SWITCHYARD_*` environment, as the declared
/// user when the agent runs as root; its directives applied in order while it runs.
struct ExecPluginRunner: HandlerRunner {
    let spec: ExecSpec
    /// The declaration's file and line, for log lines.
    let declaration: String
    let runner: ExecRunner
    /// The tenant's URL and the plugin proxy's variables.
    let baseURL: String
    let variables: [String: String]
    let logger: Logger

    func run(_ operation: Operation, phase: Phase, timeout: Duration, context: OperationContext,
             workspace: OperationWorkspace) async -> RunEnd {
        let (directives, sink) = AsyncStream.makeStream(of: Directive.self)
        let applier = DirectiveApplier(context: context, logger: logger)
        let applying = Task {
            for await directive in directives { await applier.apply(directive) }
        }
        let user = spec.user.flatMap { user -> RunAs? in
            if geteuid() == 0 { return user }
            logger.notice("not running as root; the plugin runs as the agent's user", metadata: ["user": "\(user.name)"])
            return nil
        }
        if let user { chown(workspace.directory, user.uid, user.gid) }
        let (log, declaration) = (logger, self.declaration)
        let result = await runner.run(spec, operation: operation.json, environment: environment(operation, phase: phase, workspace: workspace),
                                      timeout: timeout, workingDirectory: workspace.directory, logFile: context.logFile,
                                      user: user, keepsGroupFile: true, onDirective: { sink.yield($0) },
                                      onInvalidDirective: { why, line in
                                          log.warning("plugin printed an invalid directive; ignored", metadata: [
                                              "operation": "\(operation.id)", "declaration": "\(declaration)",
                                              "problem": "\(why)", "line": "\(line)",
                                          ])
                                      })
        sink.finish()
        await applying.value
        if result.restartRequested, result.ending == .exited(0) { return .restartRequested }
        return .outcome(result.outcome(program: spec.command[0]))
    }

    /// The `SWITCHYARD_*` variables an executable plugin gets (docs/plugin-protocol.md §2).
    func environment(_ operation: Operation, phase: Phase, workspace: OperationWorkspace) -> [String: String] {
        Self.variables(operation, phase: phase, stateDirectory: workspace.directory, operationFile: workspace.operationFile,
                       baseURL: baseURL, spec: spec)
            .merging(variables) { first, _ in first }
    }

    /// The `SWITCHYARD_*` context variables of one run, and a compiled handler's options: what the
    /// agent, `handlers run` and `conformance` give an executable alike.
    static func variables(_ operation: Operation, phase: Phase, stateDirectory: String, operationFile: String,
                          baseURL: String, spec: ExecSpec) -> [String: String] {
        [
            "SWITCHYARD_OPERATION_ID": operation.id,
            "SWITCHYARD_FRAGMENT": operation.fragment,
            "SWITCHYARD_DEVICE_ID": operation.deviceId,
            "SWITCHYARD_EXTERNAL_ID": operation.externalId ?? "",
            "SWITCHYARD_PHASE": phase.rawValue,
            "SWITCHYARD_STATE_DIR": stateDirectory,
            "SWITCHYARD_OPERATION_FILE": operationFile,
            "SWITCHYARD_C8Y_URL": baseURL,
        ].merging(spec.handlerEnvironment) { first, _ in first }
    }
}
