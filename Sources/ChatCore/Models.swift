import Foundation

public struct Room: Codable, Sendable, Equatable {
    public var id: RoomID
    /// A direct room's name is its two users' names ("ann, bob").
    public var name: String
    /// RFC 3339, UTC.
    public var createdAt: String
    public var memberCount: Int
    /// Records written before visibility existed (commit a5fbf68 and earlier) read as public.
    public var visibility: RoomVisibility
    /// Who created it (token mode); nil for rooms created anonymously and for direct rooms.
    public var ownerID: UserID?
    public var topic: String?
    /// Read-only: history stays, sends, edits and typing are refused (`room_archived`).
    public var archived: Bool
    /// The caller's role in this view (never stored): nil when the caller is not on the roster.
    public var myRole: RoomRole?

    public init(
        id: RoomID,
        name: String,
        createdAt: String,
        memberCount: Int = 0,
        visibility: RoomVisibility = .public,
        ownerID: UserID? = nil,
        topic: String? = nil,
        archived: Bool = false
    ) {
        self.id = id
        self.name = name
        self.createdAt = createdAt
        self.memberCount = memberCount
        self.visibility = visibility
        self.ownerID = ownerID
        self.topic = topic
        self.archived = archived
    }

    enum CodingKeys: String, CodingKey {
        case id, name, visibility, topic, archived
        case createdAt = "created_at"
        case memberCount = "member_count"
        case ownerID = "owner_id"
        case myRole = "my_role"
        /// The name in a stored private or direct room (see `storedJSON`).
        case label
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(RoomID.self, forKey: .id)
        name = try c.decodeIfPresent(String.self, forKey: .name) ?? c.decode(String.self, forKey: .label)
        createdAt = try c.decode(String.self, forKey: .createdAt)
        memberCount = try c.decodeIfPresent(Int.self, forKey: .memberCount) ?? 0
        visibility = try c.decodeIfPresent(RoomVisibility.self, forKey: .visibility) ?? .public
        ownerID = try c.decodeIfPresent(UserID.self, forKey: .ownerID)
        topic = try c.decodeIfPresent(String.self, forKey: .topic)
        archived = try c.decodeIfPresent(Bool.self, forKey: .archived) ?? false
        myRole = try c.decodeIfPresent(RoomRole.self, forKey: .myRole)
    }

    /// `visibility` and `archived` always; the others only when set, so a public room's view grows by
    /// two fields, not five.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(name, forKey: .name)
        try c.encode(createdAt, forKey: .createdAt)
        try c.encode(memberCount, forKey: .memberCount)
        try c.encode(visibility, forKey: .visibility)
        try c.encode(archived, forKey: .archived)
        try c.encodeIfPresent(ownerID, forKey: .ownerID)
        try c.encodeIfPresent(topic, forKey: .topic)
        try c.encodeIfPresent(myRole, forKey: .myRole)
    }

    /// What is stored: the view without the caller's role or a count.
    public var record: Room {
        var record = self
        record.myRole = nil
        record.memberCount = 0
        return record
    }

    /// The record as stored in KV. A private or direct room keeps its name under `label`, so a
    /// chat-service from before private rooms (which requires `name`) cannot decode it and answers
    /// `room_not_found` for it — during a rolling upgrade an old replica never serves a private room
    /// as a public one.
    public var storedJSON: [UInt8] {
        guard visibility != .public else { return ChatJSON.encode(record) }
        struct Stored: Encodable {
            var id: RoomID
            var label: String
            var created_at: String
            var visibility: RoomVisibility
            var owner_id: UserID?
            var topic: String?
            var archived: Bool
        }
        return ChatJSON.encode(
            Stored(id: id, label: name, created_at: createdAt, visibility: visibility, owner_id: ownerID, topic: topic, archived: archived)
        )
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
