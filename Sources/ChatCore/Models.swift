import Foundation

public struct Room: Codable, Sendable, Equatable {
    public var id: RoomID
    public var name: String
    /// RFC 3339, UTC.
    public var createdAt: String
    public var memberCount: Int

    public init(id: RoomID, name: String, createdAt: String, memberCount: Int = 0) {
        self.id = id
        self.name = name
        self.createdAt = createdAt
        self.memberCount = memberCount
    }

    enum CodingKeys: String, CodingKey {
        case id, name
        case createdAt = "created_at"
        case memberCount = "member_count"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(RoomID.self, forKey: .id)
        name = try c.decode(String.self, forKey: .name)
        createdAt = try c.decode(String.self, forKey: .createdAt)
        memberCount = try c.decodeIfPresent(Int.self, forKey: .memberCount) ?? 0
    }
}

/// A stored chat message, exactly as it is kept in the stream and sent to clients (plus `type`).
public struct ChatMessage: Codable, Sendable, Equatable {
    public var messageID: String
    public var roomID: RoomID
    public var userID: UserID
    public var username: String
    public var content: String
    public var timestamp: String
    /// Per-room sequence: 1, 2, 3 … with no holes.
    public var seq: UInt64
    public var clientMessageID: String?

    public init(
        messageID: String,
        roomID: RoomID,
        userID: UserID,
        username: String,
        content: String,
        timestamp: String,
        seq: UInt64,
        clientMessageID: String? = nil
    ) {
        self.messageID = messageID
        self.roomID = roomID
        self.userID = userID
        self.username = username
        self.content = content
        self.timestamp = timestamp
        self.seq = seq
        self.clientMessageID = clientMessageID
    }

    enum CodingKeys: String, CodingKey {
        case username, content, timestamp, seq
        case messageID = "message_id"
        case roomID = "room_id"
        case userID = "user_id"
        case clientMessageID = "client_msg_id"
    }
}

public struct Member: Codable, Sendable, Equatable {
    public var userID: UserID
    public var username: String
    public var gatewayID: GatewayID
    public var joinedAt: String
    /// Milliseconds since 1970, for presence expiry decisions.
    public var joinedAtMilliseconds: Int64

    public init(userID: UserID, username: String, gatewayID: GatewayID, joinedAt: String, joinedAtMilliseconds: Int64) {
        self.userID = userID
        self.username = username
        self.gatewayID = gatewayID
        self.joinedAt = joinedAt
        self.joinedAtMilliseconds = joinedAtMilliseconds
    }

    enum CodingKeys: String, CodingKey {
        case username
        case userID = "user_id"
        case gatewayID = "gateway_id"
        case joinedAt = "joined_at"
        case joinedAtMilliseconds = "joined_at_ms"
    }
}

/// UserJoined.v1 / UserLeft.v1 event body.
public struct PresenceEvent: Codable, Sendable, Equatable {
    public var roomID: RoomID
    public var userID: UserID
    public var username: String
    public var timestamp: String
    /// Why a member left: `leave`, `disconnect`, `gateway_expired`.
    public var reason: String?

    public init(roomID: RoomID, userID: UserID, username: String, timestamp: String, reason: String? = nil) {
        self.roomID = roomID
        self.userID = userID
        self.username = username
        self.timestamp = timestamp
        self.reason = reason
    }

    enum CodingKeys: String, CodingKey {
        case username, timestamp, reason
        case roomID = "room_id"
        case userID = "user_id"
    }
}

public enum ChatTime {
    /// RFC 3339 UTC with milliseconds, e.g. `2024-01-15T10:30:00.123Z`.
    public static func format(_ date: Date) -> String {
        format(milliseconds: Int64((date.timeIntervalSince1970 * 1000).rounded(.down)))
    }

    /// The same text from milliseconds since 1970, written by hand: Foundation's
    /// `ISO8601FormatStyle` cost ~3 % of the chat-service's CPU (once per message).
    public static func format(milliseconds: Int64) -> String {
        let (days, millisOfDay) = milliseconds.quotientAndRemainder(dividingBy: 86_400_000)
        let (civilDays, dayMillis) = millisOfDay < 0 ? (days - 1, millisOfDay + 86_400_000) : (days, millisOfDay)
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm, proleptic Gregorian).
        let z = civilDays + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        let fields: [(Int64, Int)] = [
            (year, 4), (month, 2), (day, 2), (dayMillis / 3_600_000, 2), (dayMillis / 60_000 % 60, 2),
            (dayMillis / 1000 % 60, 2), (dayMillis % 1000, 3),
        ]
        return String(unsafeUninitializedCapacity: 24) { out in
            var position = 0
            for (index, (value, width)) in fields.enumerated() {
                var remaining = value
                for digit in stride(from: width - 1, through: 0, by: -1) {
                    out[position + digit] = UInt8(ascii: "0") + UInt8(remaining % 10)
                    remaining /= 10
                }
                position += width
                out[position] = Self.separators[index]
                position += 1
            }
            return position
        }
    }

    /// What follows each field of `format(milliseconds:)`.
    private static let separators: [UInt8] = Array("--T::.Z".utf8)

    public static func now() -> (text: String, milliseconds: Int64) {
        let milliseconds = Int64((Date().timeIntervalSince1970 * 1000).rounded(.down))
        return (format(milliseconds: milliseconds), milliseconds)
    }
}
