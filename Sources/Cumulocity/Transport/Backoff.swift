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

extension Duration {
    /// The duration as a person reads it in a log line: "0.9 s", "12 s", "4 min", "250 ms" (rounded
    /// to two significant figures below ten of a unit), never `0.8922420342577627 seconds`.
    public var readable: String {
        let (seconds, attoseconds) = components
        let total = Double(seconds) + Double(attoseconds) / 1e18
        func figure(_ value: Double, _ unit: String) -> String {
            let text = value < 10 ? String(Double((value * 10).rounded()) / 10) : String(Int(value.rounded()))
            return (text.hasSuffix(".0") ? String(text.dropLast(2)) : text) + " " + unit
        }
        switch abs(total) {
        case 0: return "0 s"
        case ..<1e-3: return figure(total * 1e6, "µs")
        case ..<1: return figure(total * 1e3, "ms")
        case ..<120: return figure(total, "s")
        case ..<7_200: return figure(total / 60, "min")
        case ..<172_800: return figure(total / 3_600, "h")
        default: return figure(total / 86_400, "d")
        }
    }
}
