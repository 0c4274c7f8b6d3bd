/// Capped exponential backoff with jitter: attempt n waits between half and all of
/// `min(initial · 2ⁿ⁻¹, maximum)`, so many devices recovering together do not retry in step.
public struct Backoff: Sendable, Equatable {
    public var initial: Duration
    public var maximum: Duration

    public init(initial: Duration = .milliseconds(500), maximum: Duration = .seconds(30)) {
        self.initial = initial
        self.maximum = maximum
    }

    /// The delay before retry number `attempt` (1-based).
    public func delay(attempt: Int) -> Duration {
        let exponent = min(max(attempt - 1, 0), 30)
        let base = min(initial * (1 << exponent), maximum)
        return base * Double.random(in: 0.5...1.0)
    }
}
