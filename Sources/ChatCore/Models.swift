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

    public init(messageID: String, roomID: RoomID, userID: UserID, username: String, content: String, timestamp: String, seq: UInt64, clientMessageID: String? = nil) {
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
        date.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true, timeZone: .gmt))
    }

    public static func now() -> (text: String, milliseconds: Int64) {
        let date = Date()
        return (format(date), Int64(date.timeIntervalSince1970 * 1000))
    }
}
