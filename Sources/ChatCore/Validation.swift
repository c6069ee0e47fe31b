/// Validation of untrusted text that is not an identifier: message content, names' characters, query
/// strings and the REST history parameters. Every rule here is listed in docs/limits.md ("Limits and hostile
/// input") and exercised by the fuzz target (`Fuzz/`, `scripts/fuzz`) and `e2e/python/test_hostile.py`.

/// Message content: stored and delivered verbatim (HTML is text; clients escape it), but never empty,
/// never longer than the byte limit, and free of control characters other than tab and line breaks.
public enum MessageContent {
    public static func validate(_ content: String, maxBytes: Int) throws(ChatError) {
        guard !content.allSatisfy(\.isWhitespace) else { throw ChatError(.contentInvalid, "message content is empty") }
        let bytes = content.utf8.count
        guard bytes <= maxBytes else {
            throw ChatError(.contentTooLong, "message content is \(bytes) bytes; the limit is \(maxBytes)")
        }
        if let bad = content.unicodeScalars.first(where: isForbiddenInContent) {
            throw ChatError(
                .contentInvalid,
                "message content contains the control character \(codePoint(bad)); only tab and line breaks are allowed"
            )
        }
    }

    /// C0 and C1 control characters (and DEL) except tab, line feed and carriage return.
    public static func isForbiddenInContent(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x09, 0x0A, 0x0D: false
        case 0x00...0x1F, 0x7F...0x9F: true
        default: false
        }
    }
}

/// `U+202E`-style notation for error messages.
func codePoint(_ scalar: Unicode.Scalar) -> String {
    let hex = String(scalar.value, radix: 16, uppercase: true)
    return "U+" + String(repeating: "0", count: max(0, 4 - hex.count)) + hex
}

/// Characters refused in usernames and room names: control characters, line and paragraph separators,
/// bidirectional controls (they reorder how the rest of a line is shown: "evil\u{202E}gpj.exe"), invisible
/// characters that make two different names look the same (zero-width space, word joiner, soft hyphen,
/// BOM, Hangul fillers, tag characters) and noncharacters. Zero-width joiner and non-joiner stay allowed:
/// emoji sequences and several scripts need them.
public func isForbiddenInName(_ scalar: Unicode.Scalar) -> Bool {
    let value = scalar.value
    if scalar.properties.generalCategory == .control { return true }
    switch value {
    case 0x2028, 0x2029: return true  // line / paragraph separator
    case 0x061C, 0x200E, 0x200F, 0x202A...0x202E, 0x2066...0x2069: return true  // bidi controls
    case 0x00AD, 0x115F, 0x1160, 0x180E, 0x200B, 0x2060...0x2064, 0x3164, 0xFEFF, 0xFFA0: return true  // invisible
    case 0xFFF9...0xFFFB, 0xE0000...0xE007F: return true  // annotations, tags
    case 0xFDD0...0xFDEF: return true  // noncharacters
    default: return value & 0xFFFE == 0xFFFE  // U+xFFFE, U+xFFFF
    }
}

/// `application/x-www-form-urlencoded` query strings (`/ws?username=a+b`): `+` is a space, `%XX` are
/// UTF-8 bytes. The first occurrence of a name wins. A value whose percent-encoding is broken or whose
/// bytes are not UTF-8 is kept as `nil`, so the caller can refuse it instead of guessing.
public enum FormQuery {
    public static func parse(_ query: String) -> [String: String?] {
        var result: [String: String?] = [:]
        for pair in query.utf8.split(separator: UInt8(ascii: "&"), omittingEmptySubsequences: true) {
            let parts = pair.split(separator: UInt8(ascii: "="), maxSplits: 1, omittingEmptySubsequences: false)
            guard let name = decode(parts[0]) else { continue }
            if result[name] != nil { continue }
            result[name] = .some(parts.count > 1 ? decode(parts[1]) : "")
        }
        return result
    }

    /// Decodes one component; nil when it is not valid percent-encoded UTF-8.
    public static func decode(_ bytes: some Collection<UInt8>) -> String? {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var index = bytes.startIndex
        while index != bytes.endIndex {
            let byte = bytes[index]
            if byte == UInt8(ascii: "+") {
                out.append(0x20)
            } else if byte == UInt8(ascii: "%") {
                let first = bytes.index(after: index)
                guard first != bytes.endIndex else { return nil }
                let second = bytes.index(after: first)
                guard second != bytes.endIndex, let high = hexValue(bytes[first]), let low = hexValue(bytes[second]) else { return nil }
                out.append(high << 4 | low)
                index = second
            } else {
                out.append(byte)
            }
            index = bytes.index(after: index)
        }
        return String(validating: out, as: UTF8.self)
    }

    static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case 0x30...0x39: byte - 0x30
        case 0x41...0x46: byte - 0x41 + 10
        case 0x61...0x66: byte - 0x61 + 10
        default: nil
        }
    }
}

/// The REST history query (`?limit=50&before=42`): decimal digits only.
public enum HistoryQuery {
    public static func parse(limit: String?, before: String?) throws(ChatError) -> (limit: Int?, before: UInt64?) {
        var parsedLimit: Int?
        var parsedBefore: UInt64?
        if let limit {
            guard isDigits(limit), let value = Int(limit), value >= 1 else {
                throw ChatError(.invalidRequest, "limit must be a positive integer")
            }
            parsedLimit = value
        }
        if let before {
            guard isDigits(before), let value = UInt64(before) else {
                throw ChatError(.invalidRequest, "before must be a message seq (a non-negative integer)")
            }
            parsedBefore = value
        }
        return (parsedLimit, parsedBefore)
    }

    static func isDigits(_ text: String) -> Bool {
        !text.utf8.isEmpty && text.utf8.allSatisfy { $0 >= 0x30 && $0 <= 0x39 }
    }
}

/// The REST list query (`?limit=100&after=<next>`): `limit` decimal digits; `after` is checked by the
/// chat-service, which knows what kind of id it must be.
public enum PageQuery {
    public static func parse(limit: String?, after: String?) throws(ChatError) -> (limit: Int?, after: String?) {
        var parsedLimit: Int?
        if let limit {
            guard HistoryQuery.isDigits(limit), let value = Int(limit), value >= 1 else {
                throw ChatError(.invalidRequest, "limit must be a positive integer")
            }
            parsedLimit = value
        }
        if let after, after.isEmpty { throw ChatError(.invalidRequest, "after must be the next of the previous page") }
        return (parsedLimit, after)
    }
}
