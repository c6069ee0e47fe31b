import ChatCore
import Crypto
import Foundation

/// What a verified user token says: who (`sub`, the stable `userID`), the display name, and until when.
public struct VerifiedToken: Sendable, Equatable {
    /// The `sub` claim, as given.
    public var subject: String
    /// The same for every token with this `sub`: idempotency and membership are keyed on it.
    public var userID: UserID
    /// `username`, else `name`, else `sub`.
    public var username: Username
    /// The `exp` claim.
    public var expiresAt: Date

    public init(subject: String, userID: UserID, username: Username, expiresAt: Date) {
        self.subject = subject
        self.userID = userID
        self.username = username
        self.expiresAt = expiresAt
    }

    /// The namespace of name-based user ids: 16 fixed bytes ("nats-chat" and 7 random ones), so another
    /// system deriving ids from the same `sub` values gets other ids.
    static let userIDNamespace: [UInt8] = [
        0x6e, 0x61, 0x74, 0x73, 0x2d, 0x63, 0x68, 0x61, 0x74, 0x8d, 0x4b, 0x7e, 0x9a, 0x1f, 0x53, 0x27,
    ]

    /// The user id of a `sub`: the `sub` itself when it is a UUID (lowercased), otherwise a name-based
    /// UUID in the RFC 9562 version 8 layout: the first 16 bytes of SHA-256(namespace ‖ UTF-8 of `sub`),
    /// version nibble 8, variant bits 10. Stable across tokens, processes and restarts.
    public static func userID(forSubject subject: String) -> UserID {
        if let id = UserID(subject) { return id }
        var bytes = Array(SHA256.hash(data: userIDNamespace + Array(subject.utf8)).prefix(16))
        bytes[6] = (bytes[6] & 0x0F) | 0x80
        bytes[8] = (bytes[8] & 0x3F) | 0x80
        let hex = bytes.map { String($0, radix: 16).leftPadded(to: 2) }.joined()
        let text = [hex.prefix(8), hex.dropFirst(8).prefix(4), hex.dropFirst(12).prefix(4), hex.dropFirst(16).prefix(4), hex.dropFirst(20)]
            .joined(separator: "-")
        return UserID(text)!
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}
