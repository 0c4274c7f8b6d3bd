extension StringProtocol {
    /// The text without leading and trailing characters from `set`, compared by Unicode scalar
    /// (so "\r\n" is two characters to strip, not one grapheme).
    package func trimmingCharacters(in set: String) -> String {
        let strip = Set(set.unicodeScalars)
        var scalars = Substring(self).unicodeScalars[...]
        while let first = scalars.first, strip.contains(first) { scalars.removeFirst() }
        while let last = scalars.last, strip.contains(last) { scalars.removeLast() }
        return String(String.UnicodeScalarView(scalars))
    }
}
