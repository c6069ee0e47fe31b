import Foundation

/// Validated values. Each initializer returns nil for anything unsafe, so code that holds one of these
/// types may put it into a NATS subject or KV key.

/// A string that passed validation; encoded as the plain string, and decoding validates again.
public protocol ValidatedString: Hashable, Sendable, Codable, CustomStringConvertible {
    var rawValue: String { get }
    init?(_ text: String)
}

extension ValidatedString {
    public var description: String { rawValue }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let value = Self(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "invalid \(Self.self)"))
        }
        self = value
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }
}

/// A lowercase canonical UUID (8-4-4-4-12 hex); uppercase input is accepted and lowercased. `Kind`
/// keeps room ids and user ids apart in the type system.
public struct UUIDIdentifier<Kind>: ValidatedString {
    public let rawValue: String

    public init?(_ text: String) {
        guard let canonical = canonicalUUID(text) else { return nil }
        rawValue = canonical
    }

    public static func random() -> Self { Self(newUUID())! }
}

public enum RoomKind {}
public enum UserKind {}
public typealias RoomID = UUIDIdentifier<RoomKind>
public typealias UserID = UUIDIdentifier<UserKind>

/// A gateway instance id: 1–64 of `[A-Za-z0-9_-]`.
public struct GatewayID: ValidatedString {
    public let rawValue: String
    public init?(_ text: String) {
        guard isToken(text, maxLength: 64) else { return nil }
        rawValue = text
    }
}

/// A client-chosen message id for idempotent sends: 1–64 of `[A-Za-z0-9_-]`.
public struct ClientMessageID: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: String
    public init?(_ text: String) {
        guard isToken(text, maxLength: 64) else { return nil }
        rawValue = text
    }
    public var description: String { rawValue }
}

/// A username: trimmed, in Unicode NFC, 1–32 characters and at most 128 UTF-8 bytes (a "character" can
/// carry any number of combining marks), none of them forbidden by `isForbiddenInName`.
public struct Username: Hashable, Sendable, CustomStringConvertible {
    public static let maxLength = 32
    public static let maxBytes = 128
    public let rawValue: String
    public init?(_ text: String) {
        guard let name = validName(text, maxLength: Self.maxLength, maxBytes: Self.maxBytes) else { return nil }
        rawValue = name
    }
    public var description: String { rawValue }
}

/// A room name: trimmed, in Unicode NFC, 1–64 characters and at most 256 UTF-8 bytes, none of them
/// forbidden by `isForbiddenInName`; unique case-insensitively (and, being NFC, "café" typed with a
/// combining accent is the same name as "café" with a precomposed one).
public struct RoomName: Hashable, Sendable, CustomStringConvertible {
    public static let maxLength = 64
    public static let maxBytes = 256
    public let rawValue: String
    public init?(_ text: String) {
        guard let name = validName(text, maxLength: Self.maxLength, maxBytes: Self.maxBytes) else { return nil }
        rawValue = name
    }
    /// The form uniqueness is checked on.
    public var normalized: String { rawValue.lowercased() }
    public var description: String { rawValue }
}

func isToken(_ text: String, maxLength: Int) -> Bool {
    let bytes = text.utf8
    guard !bytes.isEmpty, bytes.count <= maxLength else { return false }
    return bytes.allSatisfy { byte in
        (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a) || byte == 0x2d || byte == 0x5f
    }
}

func canonicalUUID(_ text: String) -> String? {
    let bytes = Array(text.utf8)
    guard bytes.count == 36 else { return nil }
    var out = [UInt8]()
    out.reserveCapacity(36)
    for (index, byte) in bytes.enumerated() {
        if index == 8 || index == 13 || index == 18 || index == 23 {
            guard byte == 0x2d else { return nil }
            out.append(byte)
        } else if byte >= 0x30 && byte <= 0x39 || byte >= 0x61 && byte <= 0x66 {
            out.append(byte)
        } else if byte >= 0x41 && byte <= 0x46 {
            out.append(byte + 0x20)
        } else {
            return nil
        }
    }
    return String(decoding: out, as: UTF8.self)
}

/// Version 4 (random) UUID text, lowercase. Two 64-bit draws and one string allocation: the old
/// byte-at-a-time version was ~7 % of the chat-service's CPU per message.
func newUUID() -> String {
    var generator = SystemRandomNumberGenerator()
    let high: UInt64 = generator.next()
    let low: UInt64 = generator.next()
    return String(unsafeUninitializedCapacity: 36) { out in
        let hex = Array("0123456789abcdef".utf8)
        var position = 0
        for index in 0..<16 {
            var byte = UInt8(truncatingIfNeeded: (index < 8 ? high : low) >> (56 - 8 * UInt64(index % 8)))
            if index == 6 { byte = (byte & 0x0F) | 0x40 }  // version 4
            if index == 8 { byte = (byte & 0x3F) | 0x80 }  // RFC 4122 variant
            if index == 4 || index == 6 || index == 8 || index == 10 {
                out[position] = UInt8(ascii: "-")
                position += 1
            }
            out[position] = hex[Int(byte >> 4)]
            out[position + 1] = hex[Int(byte & 0x0F)]
            position += 2
        }
        return position
    }
}

/// A fresh random UUID string (lowercase), for message ids and similar.
public func makeUUID() -> String { newUUID() }

func trimWhitespace(_ text: String) -> String {
    var view = Substring(text)
    while let first = view.first, first.isWhitespace { view = view.dropFirst() }
    while let last = view.last, last.isWhitespace { view = view.dropLast() }
    return String(view)
}

func containsControlCharacters(_ text: String) -> Bool {
    text.unicodeScalars.contains(where: isForbiddenInName)
}

/// The shared rules of usernames and room names; nil when `text` breaks one.
func validName(_ text: String, maxLength: Int, maxBytes: Int) -> String? {
    let trimmed = trimWhitespace(text)
    guard !trimmed.isEmpty, !containsControlCharacters(trimmed) else { return nil }
    // ASCII is already in NFC and one character per byte: the common case skips Foundation's
    // normalization (which was ~4 % of the chat-service's CPU, run for every send's username).
    if trimmed.utf8.allSatisfy({ $0 < 0x80 }) {
        return trimmed.utf8.count <= min(maxBytes, maxLength) ? trimmed : nil
    }
    let name = trimmed.precomposedStringWithCanonicalMapping
    guard name.utf8.count <= maxBytes, name.count <= maxLength else { return nil }
    return name
}
