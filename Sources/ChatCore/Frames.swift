import Foundation

/// The WebSocket protocol: the seed's frames plus the optional extensions (documented in docs/protocol.md).

/// A parsed client → server frame.
public enum ClientFrame: Sendable, Equatable {
    case join(roomID: String, since: UInt64?)
    case leave(roomID: String?)
    case message(content: String, roomID: String?, clientMessageID: String?)
    case history(roomID: String, limit: Int?, before: UInt64?)
    /// `limit` and `after`: a page of the list (`ServiceAPI.ListMembers`, `ServiceAPI.ListRooms`).
    case members(roomID: String, limit: Int? = nil, after: String? = nil)
    case roomList(limit: Int? = nil, after: String? = nil)
    case typing(roomID: String)
    /// A fresh token for the open socket (token mode): it replaces the socket's token and expiry.
    case auth(token: String)

    /// The room the frame names, echoed in error replies so a client can tell which request failed.
    public var roomID: String? {
        switch self {
        case .join(let room, _), .history(let room, _, _), .members(let room, _, _), .typing(let room): room
        case .leave(let room), .message(_, let room, _): room
        case .roomList, .auth: nil
        }
    }

    /// Every `type` a client frame can have.
    public static let types = ["join", "leave", "message", "history", "members", "room_list", "typing", "auth"]

    public var type: String {
        switch self {
        case .join: "join"
        case .leave: "leave"
        case .message: "message"
        case .history: "history"
        case .members: "members"
        case .roomList: "room_list"
        case .typing: "typing"
        case .auth: "auth"
        }
    }

    /// Numbers are read as JSON numbers and then checked, so `-1` or `1e300` get a precise error
    /// instead of a generic "invalid JSON". Absent or null: nil.
    private static func count(_ fields: JSONFields, _ field: String) throws(ChatError) -> UInt64? {
        switch fields.value(field) {
        case nil, .null?:
            return nil
        case .number(let text)?:
            guard let value = Double(text), value >= 0, value <= 9_007_199_254_740_991, value.rounded() == value else {
                throw ChatError(.invalidRequest, "field '\(field)' must be a non-negative integer")
            }
            return UInt64(value)
        default:
            throw ChatError(.invalidRequest, "field '\(field)' must be a number")
        }
    }

    private static func limit(_ fields: JSONFields) throws(ChatError) -> Int? {
        try count(fields, "limit").map { Int(min($0, UInt64(Int.max))) }
    }

    /// Parses one text frame; every failure is an `invalid_request` naming the problem. One pass of
    /// the strict reader (two Codable decodes with Foundation's JSONDecoder cost ~14 % of the gateway's
    /// CPU per send); unknown fields are ignored, as before.
    public static func parse(_ bytes: [UInt8]) throws(ChatError) -> ClientFrame {
        let fields = try JSONFields(parsing: bytes)
        let type = try fields.string("type")
        switch type {
        case "join":
            return .join(roomID: try fields.string("room_id"), since: try count(fields, "since"))
        case "leave":
            return .leave(roomID: try fields.optionalString("room_id"))
        case "message":
            return .message(
                content: try fields.string("content"),
                roomID: try fields.optionalString("room_id"),
                clientMessageID: try fields.optionalString("client_msg_id")
            )
        case "history":
            let roomID = try fields.string("room_id")
            return .history(roomID: roomID, limit: try limit(fields), before: try count(fields, "before"))
        case "members":
            return .members(roomID: try fields.string("room_id"), limit: try limit(fields), after: try fields.optionalString("after"))
        case "room_list":
            return .roomList(limit: try limit(fields), after: try fields.optionalString("after"))
        case "typing":
            return .typing(roomID: try fields.string("room_id"))
        case "auth":
            return .auth(token: try fields.string("token"))
        default:
            let shown = type.count > 32 ? String(type.prefix(32)) + "…" : type
            throw ChatError(.invalidRequest, "unknown message type '\(shown)'")
        }
    }
}

/// Server → client frames, encoded once to bytes.
public enum ServerFrame {
    private struct Typed<Body: Encodable>: Encodable {
        var type: String
        var body: Body
        enum CodingKeys: String, CodingKey { case type }
        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(type, forKey: .type)
            try body.encode(to: encoder)
        }
    }

    public static func encode(type: String, _ body: some Encodable) -> [UInt8] {
        ChatJSON.encode(Typed(type: type, body: body))
    }

    /// Written by hand (once per connection: `JSONEncoder` was ~3 % of a connect storm's event-loop time).
    public static func connected(userID: UserID, username: String, gatewayID: String) -> [UInt8] {
        var writer = JSONWriter(capacity: 128)
        writer.beginObject()
        writer.key("gateway_id")
        writer.string(gatewayID)
        writer.key("type")
        writer.string("connected")
        writer.key("user_id")
        writer.string(userID.rawValue)
        writer.key("username")
        writer.string(username)
        writer.endObject()
        return writer.bytes
    }

    /// The answer to an `auth` frame: the socket now lives until the new token's `exp`.
    public static func authenticated(expiresAt: Date) -> [UInt8] {
        encode(type: "authenticated", ["expires_at": ChatTime.format(expiresAt)])
    }

    public static func joined(room: Room, lastSeq: UInt64) -> [UInt8] {
        struct Body: Encodable {
            var room_id: RoomID
            var room: Room
            var last_seq: UInt64
        }
        return encode(type: "joined", Body(room_id: room.id, room: room, last_seq: lastSeq))
    }

    public static func left(roomID: RoomID) -> [UInt8] { encode(type: "left", ["room_id": roomID.rawValue]) }

    public static func message(_ message: ChatMessage) -> [UInt8] {
        var writer = JSONWriter()
        writer.beginObject()
        message.writeFields(to: &writer, type: "message")
        writer.endObject()
        return writer.bytes
    }

    public static func presence(_ type: ChatEventType, _ event: PresenceEvent) -> [UInt8] {
        encode(
            type: type == .userJoined ? "user_joined" : "user_left",
            [
                "room_id": event.roomID.rawValue, "username": event.username, "user_id": event.userID.rawValue,
            ]
        )
    }

    public static func roomCreated(_ room: Room) -> [UInt8] {
        struct Body: Encodable { var room: Room }
        return encode(type: "room_created", Body(room: room))
    }

    public static func error(
        _ error: ChatError,
        clientMessageID: String? = nil,
        retryAfterMilliseconds: Int? = nil,
        roomID: String? = nil
    ) -> [UInt8] {
        struct Body: Encodable {
            var error: String
            var code: ChatErrorCode
            var client_msg_id: String?
            var retry_after_ms: Int?
            var room: Room?
            var room_id: String?
            var until: String?
        }
        return encode(
            type: "error",
            Body(
                error: error.error,
                code: error.code,
                client_msg_id: clientMessageID,
                retry_after_ms: retryAfterMilliseconds,
                room: error.room,
                room_id: roomID,
                until: error.until
            )
        )
    }

    public static func ack(clientMessageID: String, _ ack: ServiceAPI.SendAck) -> [UInt8] {
        var writer = JSONWriter(capacity: 160)
        writer.beginObject()
        writer.key("client_msg_id")
        writer.string(clientMessageID)
        writer.key("message_id")
        writer.string(ack.messageID)
        writer.key("room_id")
        writer.string(ack.roomID.rawValue)
        writer.key("seq")
        writer.number(ack.seq)
        writer.key("type")
        writer.string("ack")
        writer.endObject()
        return writer.bytes
    }

    public static func history(_ result: ServiceAPI.HistoryResult) -> [UInt8] {
        var writer = JSONWriter(capacity: 256 + result.messages.count * 256)
        writer.beginObject()
        writer.key("has_more")
        writer.bool(result.hasMore)
        writer.key("messages")
        writer.array(result.messages)
        writer.key("room_id")
        writer.string(result.roomID.rawValue)
        writer.key("type")
        writer.string("history")
        writer.endObject()
        return writer.bytes
    }

    public static func members(_ list: ServiceAPI.MemberList) -> [UInt8] { encode(type: "members", list) }

    /// The service's page without its `total` (the frame never had one).
    public static func roomList(_ list: ServiceAPI.RoomList) -> [UInt8] {
        struct Body: Encodable {
            var rooms: [Room]
            var has_more: Bool?
            var next: String?
        }
        return encode(type: "room_list", Body(rooms: list.rooms, has_more: list.hasMore, next: list.next))
    }

    public static func typing(roomID: RoomID, userID: UserID, username: String) -> [UInt8] {
        encode(type: "typing", ["room_id": roomID.rawValue, "user_id": userID.rawValue, "username": username])
    }

    /// What an event of the event stream becomes: the frame for the room's (or, for room news, every)
    /// client, and for membership events also one for the affected user wherever they are connected.
    public struct EventDelivery: Sendable {
        /// nil: a known event that clients are not sent (mutes, unbans: they change what a send answers).
        public var frame: [UInt8]?
        public var room: RoomID?
        public var seq: UInt64?
        public var forUser: (user: UserID, frame: [UInt8])?
    }

    /// nil for unknown event types and bodies that do not decode.
    public static func forEvent(type: String?, payload: [UInt8]) -> EventDelivery? {
        guard let type = type.flatMap(ChatEventType.init(rawValue:)) else { return nil }
        switch type {
        case .messageSent:
            guard let message = try? ChatJSON.decode(ChatMessage.self, from: payload) else { return nil }
            return EventDelivery(frame: Self.message(message), room: message.roomID, seq: message.seq)
        case .userJoined, .userLeft:
            guard let event = try? ChatJSON.decode(PresenceEvent.self, from: payload) else { return nil }
            return EventDelivery(frame: presence(type, event), room: event.roomID)
        case .roomCreated:
            guard let room = try? ChatJSON.decode(Room.self, from: payload) else { return nil }
            return EventDelivery(frame: roomCreated(room))
        case .memberAdded, .memberRemoved, .roleChanged, .roomUpdated, .roomDeleted, .userMuted, .userUnmuted, .userUnbanned:
            guard let event = try? ChatJSON.decode(AccessEvent.self, from: payload) else { return nil }
            return access(type, event)
        }
    }
}
