#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Timestamps as log requests and log lines write them.
enum LogTime {
    /// Seconds since 1970 of an ISO 8601 date and time at the start of `text`, and how many bytes it
    /// took: `YYYY-MM-DD[T ]HH:MM[:SS[.fraction]]` then `Z`, `±HH:MM`, `±HHMM`, `±HH` or nothing (UTC).
    /// The platform's log requests write `2021-09-22T11:40:27+0200` (device-management reference,
    /// "Logs"); `journalctl -o short-iso` and most daemons write one of the other forms.
    static func parse<Bytes: RandomAccessCollection>(prefixOf text: Bytes) -> (seconds: Int64, length: Int)?
    where Bytes.Element == UInt8, Bytes.Index == Int {
        var index = text.startIndex
        func digits(_ count: Int) -> Int64? {
            guard text.endIndex - index >= count else { return nil }
            var value: Int64 = 0
            for offset in 0..<count {
                let byte = text[index + offset]
                guard byte >= 48 && byte <= 57 else { return nil }
                value = value * 10 + Int64(byte - 48)
            }
            index += count
            return value
        }
        func expect(_ characters: String) -> Bool {
            guard index < text.endIndex, characters.utf8.contains(text[index]) else { return false }
            index += 1
            return true
        }
        guard let year = digits(4), expect("-"), let month = digits(2), expect("-"), let day = digits(2),
              (1...12).contains(month), (1...31).contains(day), expect("T "),
              let hour = digits(2), expect(":"), let minute = digits(2), hour < 24, minute < 60 else { return nil }
        var second: Int64 = 0
        if index < text.endIndex, text[index] == UInt8(ascii: ":") {
            index += 1
            guard let value = digits(2), value < 61 else { return nil }
            second = value
            if index < text.endIndex, text[index] == UInt8(ascii: ".") || text[index] == UInt8(ascii: ",") {
                index += 1
                while index < text.endIndex, text[index] >= 48 && text[index] <= 57 { index += 1 }
            }
        }
        var offset: Int64 = 0
        if index < text.endIndex {
            switch text[index] {
            case UInt8(ascii: "Z"):
                index += 1
            case UInt8(ascii: "+"), UInt8(ascii: "-"):
                let sign: Int64 = text[index] == UInt8(ascii: "-") ? -1 : 1
                let start = index
                index += 1
                if let hours = digits(2) {
                    var minutes: Int64 = 0
                    if index < text.endIndex, text[index] == UInt8(ascii: ":") { index += 1 }
                    if let value = digits(2) { minutes = value }
                    offset = sign * (hours * 3600 + minutes * 60)
                } else {
                    index = start  // "-" after the time is text, not a zone
                }
            default:
                break
            }
        }
        let seconds = daysSinceEpoch(year: year, month: month, day: day) * 86400 + hour * 3600 + minute * 60 + second - offset
        return (seconds, index - text.startIndex)
    }

    static func parse(_ text: String) -> Int64? {
        let bytes = Array(text.utf8)
        guard let (seconds, length) = parse(prefixOf: bytes), length == bytes.count else { return nil }
        return seconds
    }

    /// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (Howard Hinnant's `days_from_civil`).
    static func daysSinceEpoch(year: Int64, month: Int64, day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146097 + dayOfEra - 719468
    }

    /// `YYYY-MM-DD HH:MM:SS` in UTC, as `journalctl --since` and most tools take it.
    static func format(_ seconds: Int64) -> String {
        var time = time_t(seconds)
        var parts = tm()
        gmtime_r(&time, &parts)
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday)) \(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec))"
    }
}

/// What a log request asks for, and where the answer may come from.
struct LogQuery: Sendable {
    var from: Int64?
    var to: Int64?
    var searchText: String
    var maximumLines: Int
    var maxBytes: Int64
}

/// One input of a selection: a file of log lines, and the time its lines cannot be older than,
/// when known (the modification time of the next older rotation).
struct LogInput: Sendable {
    var path: String
    var modified: Int64?
}

/// What a selection wrote.
struct LogSelectionSummary: Sendable, Equatable {
    var lines: Int
    var bytes: Int64
    /// Matching lines left out to stay within the size cap (the oldest go first).
    var droppedForSize: Int
}

/// Selects the last `maximumLines` lines that match a request across inputs ordered newest first,
/// and writes them oldest first to one file. Memory holds positions (16 bytes a selected line), never
/// the lines: files of any size pass through in 64 KiB reads. Blocking: call it off the cooperative pool.
enum LogSelection {
    /// The longest part of one line read for its timestamp and the search text.
    static let lineWindow = 64 << 10

    /// Of files sorted newest first by modification time, those that may hold lines of the range:
    /// file k holds lines written after file k+1 was last changed, up to its own last change.
    static func inRange(_ files: [(path: String, modified: Int64)], from: Int64?, to: Int64?) -> [LogInput] {
        var chosen: [LogInput] = []
        for (index, file) in files.enumerated() {
            let olderChange = index + 1 < files.count ? files[index + 1].modified : nil
            if let from, file.modified < from { continue }
            if let to, let olderChange, olderChange > to { continue }
            chosen.append(LogInput(path: file.path, modified: file.modified))
        }
        return chosen
    }

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    static func select(_ inputs: [LogInput], query: LogQuery, into output: String) throws(Failure) -> LogSelectionSummary {
        var remaining = max(0, query.maximumLines)
        var perInput: [(path: String, ranges: [(offset: Int64, length: Int64)])] = []
        let needle = Array(query.searchText.utf8)
        for input in inputs where remaining > 0 {
            let ranges = try matches(in: input.path, needle: needle, query: query, keep: remaining)
            remaining -= ranges.count
            perInput.append((input.path, ranges))
        }
        // Newest first so far: keep within the size cap from the newest line back, then write oldest first.
        var budget = query.maxBytes
        var kept: [(path: String, ranges: ArraySlice<(offset: Int64, length: Int64)>)] = []
        var dropped = 0
        for (path, ranges) in perInput {
            var start = ranges.endIndex
            while start > ranges.startIndex, ranges[start - 1].length <= budget {
                budget -= ranges[start - 1].length
                start -= 1
            }
            dropped += start - ranges.startIndex
            kept.append((path, ranges[start...]))
            if start > ranges.startIndex { budget = 0 }
        }
        let out = open(output, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard out >= 0 else { throw Failure(description: "cannot create \(output): \(String(cString: strerror(errno)))") }
        defer { close(out) }
        var lines = 0
        var bytes: Int64 = 0
        var buffer = [UInt8](repeating: 0, count: lineWindow)
        for (path, ranges) in kept.reversed() where !ranges.isEmpty {
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw Failure(description: "cannot open \(path): \(String(cString: strerror(errno)))") }
            defer { close(fd) }
            for range in ranges {
                var done: Int64 = 0
                while done < range.length {
                    let count = buffer.withUnsafeMutableBytes {
                        pread(fd, $0.baseAddress, Int(min(Int64($0.count), range.length - done)), off_t(range.offset + done))
                    }
                    guard count > 0 else { throw Failure(description: "\(path) changed while it was read") }
                    try writeAll(out, buffer[0..<count], to: output)
                    done += Int64(count)
                }
                if range.length > 0 {
                    // The last line of a file may have no newline: every selected line gets one.
                    let last = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, 1, off_t(range.offset + range.length - 1)) }
                    if last == 1, buffer[0] != UInt8(ascii: "\n") {
                        try writeAll(out, [UInt8(ascii: "\n")][...], to: output)
                        bytes += 1
                    }
                }
                bytes += range.length
                lines += 1
            }
        }
        return LogSelectionSummary(lines: lines, bytes: bytes, droppedForSize: dropped)
    }

    /// The positions of the last `keep` lines of a file that match (a ring of positions).
    static func matches(in path: String, needle: [UInt8], query: LogQuery, keep: Int) throws(Failure) -> [(offset: Int64, length: Int64)] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw Failure(description: "cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var ring: [(offset: Int64, length: Int64)] = []
        ring.reserveCapacity(min(keep, 4096))
        var next = 0  // where the ring writes once full
        var lineStart: Int64 = 0
        var window: [UInt8] = []
        var lastTime: Int64?
        var position: Int64 = 0
        var chunk = [UInt8](repeating: 0, count: 1 << 16)

        func finishLine(end: Int64) {
            defer { window.removeAll(keepingCapacity: true); lineStart = end }
            guard end > lineStart else { return }
            if let (seconds, _) = LogTime.parse(prefixOf: window) { lastTime = seconds }
            if let time = lastTime {
                if let from = query.from, time < from { return }
                if let to = query.to, time > to { return }
            }
            if !needle.isEmpty, !contains(window, needle) { return }
            let range = (offset: lineStart, length: end - lineStart)
            if ring.count < keep {
                ring.append(range)
            } else if keep > 0 {
                ring[next] = range
                next = (next + 1) % keep
            }
        }

        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count >= 0 else { throw Failure(description: "cannot read \(path): \(String(cString: strerror(errno)))") }
            if count == 0 { break }
            var from = 0
            while from < count {
                let newline = chunk[from..<count].firstIndex(of: UInt8(ascii: "\n"))
                let end = newline ?? count
                if window.count < lineWindow { window += chunk[from..<min(end, from + lineWindow - window.count)] }
                if let newline {
                    finishLine(end: position + Int64(newline) + 1)
                    from = newline + 1
                } else {
                    from = count
                }
            }
            position += Int64(count)
        }
        finishLine(end: position)
        return Array(ring[next...] + ring[..<next])
    }

    static func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        guard needle.count <= haystack.count, let first = needle.first else { return needle.isEmpty }
        var index = 0
        while index <= haystack.count - needle.count {
            if haystack[index] == first, haystack[index..<(index + needle.count)].elementsEqual(needle) { return true }
            index += 1
        }
        return false
    }

    static func writeAll(_ fd: Int32, _ bytes: ArraySlice<UInt8>, to path: String) throws(Failure) {
        var done = bytes.startIndex
        while done < bytes.endIndex {
            let written = bytes[done...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if written < 0 && errno == EINTR { continue }
            guard written > 0 else { throw Failure(description: "cannot write \(path): \(String(cString: strerror(errno)))") }
            done += written
        }
    }
}
