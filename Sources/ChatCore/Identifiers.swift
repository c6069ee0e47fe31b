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

/// A username: trimmed, 1–32 characters, no control characters.
public struct Username: Hashable, Sendable, CustomStringConvertible {
    public static let maxLength = 32
    public let rawValue: String
    public init?(_ text: String) {
        let trimmed = trimWhitespace(text)
        guard !trimmed.isEmpty, trimmed.count <= Self.maxLength, !containsControlCharacters(trimmed) else { return nil }
        rawValue = trimmed
    }
    public var description: String { rawValue }
}

/// A room name: trimmed, 1–64 characters, no control characters; unique case-insensitively.
public struct RoomName: Hashable, Sendable, CustomStringConvertible {
    public static let maxLength = 64
    public let rawValue: String
    public init?(_ text: String) {
        let trimmed = trimWhitespace(text)
        guard !trimmed.isEmpty, trimmed.count <= Self.maxLength, !containsControlCharacters(trimmed) else { return nil }
        rawValue = trimmed
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

func newUUID() -> String {
    var generator = SystemRandomNumberGenerator()
    var bytes = (0..<16).map { _ in UInt8.random(in: 0...255, using: &generator) }
    bytes[6] = (bytes[6] & 0x0f) | 0x40
    bytes[8] = (bytes[8] & 0x3f) | 0x80
    let hex = bytes.map { byte -> String in
        let digits = Array("0123456789abcdef")
        return String([digits[Int(byte >> 4)], digits[Int(byte & 0x0f)]])
    }.joined()
    let characters = Array(hex)
    return String(characters[0..<8]) + "-" + String(characters[8..<12]) + "-" + String(characters[12..<16]) + "-"
        + String(characters[16..<20]) + "-" + String(characters[20..<32])
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
    text.unicodeScalars.contains { scalar in
        scalar.properties.generalCategory == .control || scalar.properties.generalCategory == .format && scalar.value == 0x202E
            || scalar.value == 0x2028 || scalar.value == 0x2029
    }
}
