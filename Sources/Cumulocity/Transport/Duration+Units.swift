extension Duration {
    /// Whole milliseconds, rounded down.
    public var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }

    /// The duration in seconds, as a figure.
    public var inSeconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }

    /// The duration as a person reads it in a log line: "0.9 s", "12 s", "4 min", "250 ms" (rounded
    /// to two significant figures below ten of a unit), never `0.8922420342577627 seconds`.
    public var readable: String {
        let total = inSeconds
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
