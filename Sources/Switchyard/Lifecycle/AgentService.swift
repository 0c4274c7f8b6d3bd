import Logging
import ServiceLifecycle

/// One of the agent's long-running parts as a `Service` of the agent's `ServiceGroup`: `loop` runs
/// until the group shuts down gracefully (the group does that in reverse order of the services);
/// then `finish` runs (letting operations end, the outbox empty) and the loop is cancelled.
///
/// A `loop` that ends by itself (a one-off job) does not end the service: it still waits for the
/// shutdown. The group's `maximumGracefulShutdownDuration` bounds `finish`: past it everything is
/// cancelled.
struct AgentService: Service, CustomStringConvertible {
    let description: String
    let loop: @Sendable () async throws -> Void
    let finish: (@Sendable () async -> Void)?

    init(_ name: String, loop: @escaping @Sendable () async throws -> Void, finish: (@Sendable () async -> Void)? = nil) {
        self.description = name
        self.loop = loop
        self.finish = finish
    }

    func run() async throws {
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { try await loop() }
            do {
                try await gracefulShutdown()
            } catch {
                group.cancelAll()  // cancelled, not asked to stop: nothing to finish
                return
            }
            await finish?()
            group.cancelAll()
        }
    }
}
