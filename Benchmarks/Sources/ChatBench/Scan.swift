import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Nanoseconds of the monotonic clock (a vDSO call, no allocation).
@inline(__always)
public func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

/// The server frame types chat-bench cares about.
public enum FrameKind: Equatable, Sendable {
    case connected, joined, message, ack, error, history, other
}

/// A cheap byte scan of one server frame for the few fields chat-bench needs. No JSON parser: each
/// field is found by searching for its `"key":`, which is exact for the frames of the seed protocol
/// as long as the strings chat-bench itself chooses (usernames, content, message ids) contain no
/// quotes — they never do. Whitespace after the colon is allowed.
public struct ScannedFrame: Equatable, Sendable {
    public var kind: FrameKind = .other
    /// `seq` of a message or ack, `last_seq` of joined.
    public var seq: UInt64?
    /// Send time (monotonic ns) from a message's `content` ("t<ns> …") or an ack's `client_msg_id` ("a<ns>n<k>").
    public var sentAt: UInt64?
    /// Offset and length of the `room_id` value in the frame (not copied).
    public var roomIDRange: Range<Int>?
    /// `code` of an error frame.
    public var errorCode: String?
    /// history: the page holds at least one message.
    public var hasMessages = false

    public init() {}
}

public enum Scan {
    /// The index just after the first `needle` (at least 2 bytes) at or after `from`, or nil.
    /// Anchors on the needle's second byte (a letter in every key searched for, rarer than `"`).
    @inline(__always)
    public static func find(_ bytes: UnsafeRawBufferPointer, _ needle: StaticString, from: Int = 0) -> Int? {
        let n = needle.utf8CodeUnitCount
        guard let base = bytes.baseAddress, n >= 2, from + n <= bytes.count else { return nil }
        let anchor = Int32(needle.utf8Start[1])
        var i = from + 1
        let last = bytes.count - n + 1  // one past the last possible start of the needle's second byte
        while i <= last {
            guard let hit = memchr(base + i, anchor, last - i + 1) else { return nil }
            let start = base.distance(to: UnsafeRawPointer(hit)) - 1
            if memcmp(base + start, needle.utf8Start, n) == 0 { return start + n }
            i = start + 2
        }
        return nil
    }

    /// The unsigned decimal number starting at `index` (nil if there is no digit there).
    @inline(__always)
    public static func number(_ bytes: UnsafeRawBufferPointer, at index: Int) -> UInt64? {
        var i = index
        var value: UInt64 = 0
        while i < bytes.count {
            let c = bytes[i]
            guard c >= 48, c <= 57 else { break }
            value = value &* 10 &+ UInt64(c - 48)
            i += 1
        }
        return i == index ? nil : value
    }

    @inline(__always)
    static func hasPrefix(_ bytes: UnsafeRawBufferPointer, at index: Int, _ prefix: StaticString) -> Bool {
        let n = prefix.utf8CodeUnitCount
        guard index + n <= bytes.count, let base = bytes.baseAddress else { return false }
        return memcmp(base + index, prefix.utf8Start, n) == 0
    }

    /// The range of the string value starting at `index` (just after its opening quote).
    static func stringValue(_ bytes: UnsafeRawBufferPointer, at index: Int) -> Range<Int>? {
        var i = index
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "\"") { return index..<i }
            if bytes[i] == UInt8(ascii: "\\") { i += 1 }
            i += 1
        }
        return nil
    }

    /// The index of the value of `key` (given with its quotes and colon, e.g. `"seq":`): the first
    /// byte after the colon that is not JSON whitespace.
    @inline(__always)
    static func value(_ bytes: UnsafeRawBufferPointer, _ key: StaticString) -> Int? {
        guard var i = find(bytes, key) else { return nil }
        while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x09 || bytes[i] == 0x0A || bytes[i] == 0x0D { i += 1 }
        return i
    }

    /// The index just after `prefix` (e.g. `"t` for a content that starts with t) at the value of `key`.
    @inline(__always)
    static func value(_ bytes: UnsafeRawBufferPointer, _ key: StaticString, startingWith prefix: StaticString) -> Int? {
        guard let i = value(bytes, key), hasPrefix(bytes, at: i, prefix) else { return nil }
        return i + prefix.utf8CodeUnitCount
    }

    public static func kind(_ bytes: UnsafeRawBufferPointer) -> FrameKind {
        guard let t = value(bytes, "\"type\":") else { return .other }
        if hasPrefix(bytes, at: t, "\"message\"") { return .message }
        if hasPrefix(bytes, at: t, "\"ack\"") { return .ack }
        if hasPrefix(bytes, at: t, "\"joined\"") { return .joined }
        if hasPrefix(bytes, at: t, "\"connected\"") { return .connected }
        if hasPrefix(bytes, at: t, "\"error\"") { return .error }
        if hasPrefix(bytes, at: t, "\"history\"") { return .history }
        return .other
    }

    /// Scans one text frame. Keys may come in any order, with or without whitespace around values.
    public static func frame(_ bytes: UnsafeRawBufferPointer) -> ScannedFrame {
        var frame = ScannedFrame()
        frame.kind = kind(bytes)
        func string(_ key: StaticString) -> Range<Int>? {
            value(bytes, key, startingWith: "\"").flatMap { stringValue(bytes, at: $0) }
        }
        switch frame.kind {
        case .message:
            frame.seq = value(bytes, "\"seq\":").flatMap { number(bytes, at: $0) }
            frame.sentAt = value(bytes, "\"content\":", startingWith: "\"t").flatMap { number(bytes, at: $0) }
            frame.roomIDRange = string("\"room_id\":")
        case .ack:
            frame.seq = value(bytes, "\"seq\":").flatMap { number(bytes, at: $0) }
            frame.sentAt = value(bytes, "\"client_msg_id\":", startingWith: "\"a").flatMap { number(bytes, at: $0) }
            frame.roomIDRange = string("\"room_id\":")
        case .joined:
            frame.seq = value(bytes, "\"last_seq\":").flatMap { number(bytes, at: $0) }
            frame.roomIDRange = string("\"room_id\":")
        case .error:
            if let range = string("\"code\":") {
                frame.errorCode = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[range]), as: UTF8.self)
            }
            frame.sentAt = value(bytes, "\"client_msg_id\":", startingWith: "\"a").flatMap { number(bytes, at: $0) }
        case .history:
            frame.hasMessages =
                value(bytes, "\"messages\":", startingWith: "[").map { i in
                    var j = i
                    while j < bytes.count, bytes[j] == 0x20 || bytes[j] == 0x0A || bytes[j] == 0x0D || bytes[j] == 0x09 { j += 1 }
                    return j < bytes.count && bytes[j] == UInt8(ascii: "{")
                } ?? false
        case .connected, .other:
            break
        }
        return frame
    }

    public static func frame(_ buffer: ByteBuffer) -> ScannedFrame {
        buffer.withUnsafeReadableBytes { frame($0) }
    }
}

extension ByteBuffer {
    /// Appends `value` in decimal without allocating.
    @inline(__always)
    mutating func writeDecimal(_ value: UInt64) {
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes of scratch, enough for 20 digits
        withUnsafeMutableBytes(of: &digits) { scratch in
            var v = value
            var i = scratch.count
            repeat {
                i -= 1
                scratch[i] = UInt8(48 + v % 10)
                v /= 10
            } while v > 0
            writeBytes(UnsafeRawBufferPointer(rebasing: scratch[i...]))
        }
    }
}
