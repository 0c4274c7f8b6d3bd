/// Capped exponential backoff with jitter: attempt n waits between half and all of
/// `min(initial · 2ⁿ⁻¹, maximum)`, so many devices recovering together do not retry in step.
public struct Backoff: Sendable, Equatable {
    public var initial: Duration
    public var maximum: Duration

    public init(initial: Duration = .milliseconds(500), maximum: Duration = .seconds(30)) {
        self.initial = initial
        self.maximum = maximum
    }

    /// `initial · 2ⁿ⁻¹` for retry number `attempt` (1-based), before the ceiling.
    private func uncapped(attempt: Int) -> Duration { initial * (1 << min(max(attempt - 1, 0), 30)) }

    /// The delay before retry number `attempt` without jitter: `min(initial · 2ⁿ⁻¹, maximum)`.
    public func base(attempt: Int) -> Duration { min(uncapped(attempt: attempt), maximum) }

    /// Whether retry number `attempt` still waits longer than the one before (its base below the ceiling).
    public func isGrowing(at attempt: Int) -> Bool { uncapped(attempt: attempt) <= maximum }

    /// Whether failure number `attempt` deserves a log line: each one while the delay grows, then
    /// every 10th at the ceiling (a lasting failure is neither silent nor filling the log).
    public func isLogged(attempt: Int) -> Bool { isGrowing(at: attempt) || attempt % 10 == 0 }

    /// The delay before retry number `attempt` (1-based).
    public func delay(attempt: Int) -> Duration { base(attempt: attempt) * Double.random(in: 0.5...1.0) }
}
