/// Every NATS subject, stream, consumer and bucket name the system uses, in one place.
///
/// Untrusted values (room ids, user ids, gateway ids) only ever enter a subject or key through the
/// functions here, and those take validated identifier types, so `a.b`, `*`, `>` or spaces can never
/// address another subject.
public enum ChatNames {
    /// Request-reply endpoints of the chat-service, served in queue group `queueGroup`.
    public static let servicePrefix = "chat.svc"
    public static let serviceName = "chat"
    public static let queueGroup = "chat-service"

    public enum Endpoint: String, CaseIterable, Sendable {
        case createRoom = "room.create"
        /// A create of a private room: its own subject, so a chat-service from before private rooms
        /// (which would ignore `visibility` and make the room public) never gets one.
        case createPrivateRoom = "room.create_private"
        case listRooms = "room.list"
        case getRoom = "room.get"
        case join = "room.join"
        case leave = "room.leave"
        case members = "room.members"
        case send = "message.send"
        case history = "message.history"
        case updateRoom = "room.update"
        case deleteRoom = "room.delete"
        case invite = "room.invite"
        case removeMember = "room.remove_member"
        case setRole = "room.set_role"
        case ban = "room.ban"
        case unban = "room.unban"
        case mute = "room.mute"
        case unmute = "room.unmute"
        case openDirect = "dm.open"
        case searchUsers = "user.search"
        case getUser = "user.get"
        case heartbeat = "gateway.heartbeat"
        case presenceSync = "gateway.presence_sync"
        /// A partition of a statement (`PresenceSync.partition` set). Its own endpoint so that a
        /// chat-service that predates partitions never takes one for a whole statement: it does not
        /// serve this subject, and the gateway gets no responders instead of a wrong removal.
        case presenceSyncPartition = "gateway.presence_sync_partition"

        public var subject: String { "\(ChatNames.servicePrefix).\(rawValue)" }
        /// The `$SRV` endpoint name.
        public var name: String { rawValue.replacingOccurrences(of: ".", with: "_") }
    }

    /// The event stream. Messages are stored here as their own MessageSent events, so a stored message
    /// can never lack its event, and history is read from the same subjects.
    public static let eventStream = "CHAT_EVENTS"
    public static let eventStreamSubjects = ["chat.room.*.msg", "chat.room.*.presence", "chat.rooms.created"]
    public static func messageSubject(_ room: RoomID) -> String { "chat.room.\(room.rawValue).msg" }
    public static func presenceSubject(_ room: RoomID) -> String { "chat.room.\(room.rawValue).presence" }
    public static let roomCreatedSubject = "chat.rooms.created"

    /// Deliveries from the broadcaster to gateways: one subject per room, plus one for room-wide news.
    public static let deliveryPrefix = "chat.deliver"
    public static func deliverySubject(_ room: RoomID) -> String { "\(deliveryPrefix).room.\(room.rawValue)" }
    public static let roomsDeliverySubject = "chat.deliver.rooms"
    /// Frames for one user wherever they are connected (`added`, `removed`), user id in `Chat-User`.
    public static let usersDeliverySubject = "chat.deliver.users"
    /// Typing notices, published by gateways directly (ephemeral, never stored).
    public static func typingSubject(_ room: RoomID) -> String { "chat.typing.\(room.rawValue)" }

    public static let broadcasterConsumer = "broadcaster"
    public static let broadcasterServiceName = "broadcaster"

    /// KV buckets.
    public static let roomsBucket = "chat_rooms"
    public static let membersBucket = "chat_members"
    public static let idempotencyBucket = "chat_idempotency"
    public static let gatewaysBucket = "chat_gateways"
    public static let leasesBucket = "chat_leases"
    /// Rosters, bans and mutes: `<room>.role.<user>`, `<room>.ban.<user>`, `<room>.mute.<user>`.
    public static let accessBucket = "chat_access"
    /// The user directory: `id.<user>` → user, `name.<hex(lowercased name)>.<user>` (the search index),
    /// `owns.<user>.<room>` (rooms owned, for `CHAT_MAX_OWNED_ROOMS`).
    public static let usersBucket = "chat_users"

    public static func roomKey(_ room: RoomID) -> String { "id.\(room.rawValue)" }
    public static func roomNameKey(_ name: RoomName) -> String { "name.\(hex(name.normalized))" }
    public static let roomKeyPattern = "id.*"
    public static let roomNamePattern = "name.*"
    /// The number of rooms, taken by compare-and-set before a room is written (`CHAT_MAX_ROOMS`).
    public static let roomCountKey = "count"
    public static func rosterKey(_ room: RoomID, _ user: UserID) -> String { "\(room.rawValue).role.\(user.rawValue)" }
    public static func rosterPattern(_ room: RoomID) -> String { "\(room.rawValue).role.*" }
    /// Every roster entry of one user, across rooms.
    public static func rosterPattern(of user: UserID) -> String { "*.role.\(user.rawValue)" }
    public static func restrictionKey(_ kind: Restriction.Kind, _ room: RoomID, _ user: UserID) -> String {
        "\(room.rawValue).\(kind.rawValue).\(user.rawValue)"
    }
    /// Everything kept about one room in one bucket (its erasure).
    public static func roomRecordsPattern(_ room: RoomID) -> String { "\(room.rawValue).>" }
    public static func userKey(_ user: UserID) -> String { "id.\(user.rawValue)" }
    public static func userNameKey(_ name: Username, _ user: UserID) -> String {
        "name.\(hex(name.rawValue.lowercased())).\(user.rawValue)"
    }
    public static let userNamePattern = "name.*.*"
    public static func ownedRoomKey(_ user: UserID, _ room: RoomID) -> String { "owns.\(user.rawValue).\(room.rawValue)" }
    public static func ownedRoomsPattern(_ user: UserID) -> String { "owns.\(user.rawValue).*" }
    public static func memberKey(_ room: RoomID, _ user: UserID) -> String { "\(room.rawValue).\(user.rawValue)" }
    public static func memberPattern(_ room: RoomID) -> String { "\(room.rawValue).*" }
    /// Whose `client_msg_id`s share one namespace: in token mode the verified user; in username mode
    /// the name (a reconnect there is a new user id, and its retries must still match).
    public enum IdempotencyScope: Sendable, Equatable {
        case user(UserID)
        case username(Username)
    }

    /// `u-<uuid>` cannot collide with a hex-encoded name (no `-` in hex).
    public static func idempotencyKey(_ room: RoomID, _ scope: IdempotencyScope, _ clientMessageID: ClientMessageID) -> String {
        switch scope {
        case .user(let user): "\(room.rawValue).u-\(user.rawValue).\(clientMessageID.rawValue)"
        case .username(let username): "\(room.rawValue).\(hex(username.rawValue)).\(clientMessageID.rawValue)"
        }
    }
    public static func gatewayKey(_ gateway: GatewayID) -> String { gateway.rawValue }

    /// Event headers.
    public static let eventTypeHeader = "Chat-Event"
    public static let roomSeqHeader = "Chat-Seq"
    public static let streamSeqHeader = "Chat-Stream-Seq"
    public static let roomHeader = "Chat-Room"

    /// Request headers: who is asking (`GatewayCredential`), and in token mode for whom (the user's JWT).
    public static let gatewayHeader = "Chat-Gateway"
    public static let gatewayKeyHeader = "Chat-Gateway-Key"
    public static let userTokenHeader = "Chat-User-Token"
    /// `gateway` on a gateway's own history reads (gap fills): allowed for a private room only while the
    /// gateway holds one of its members. Every other request is judged by its user token (none: anonymous).
    public static let readForHeader = "Chat-Read-For"
    /// What a gateway's requests declare it understands; `access`: it applies removal events (cuts off
    /// removed members' sockets), so it may join members to private and direct rooms.
    public static let gatewayFeaturesHeader = "Chat-Gateway-Features"
    public static let accessFeature = "access"
    /// On every room delivery of a broadcaster that delivers membership events (`access`). A gateway
    /// takes every socket out of a private or direct room when a delivery lacks it: an older broadcaster
    /// skips removals, so a removed member would otherwise keep receiving the room.
    public static let broadcasterFeaturesHeader = "Chat-Broadcaster-Features"
    /// The user a `chat.deliver.users` frame is for.
    public static let userHeader = "Chat-User"

    /// Lowercase hex of the UTF-8 bytes: makes any string a safe KV key token.
    public static func hex(_ text: String) -> String { hex(bytes: text.utf8) }

    /// Lowercase hex of any bytes (a digest, a name's UTF-8).
    public static func hex(bytes: some Sequence<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.underestimatedCount * 2)
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}

public enum ChatEventType: String, Codable, Sendable {
    case messageSent = "MessageSent.v1"
    case userJoined = "UserJoined.v1"
    case userLeft = "UserLeft.v1"
    case roomCreated = "RoomCreated.v1"
    /// Membership and moderation, on the room's presence subject (`AccessEvent` bodies).
    case memberAdded = "MemberAdded.v1"
    case memberRemoved = "MemberRemoved.v1"
    case roleChanged = "RoleChanged.v1"
    case roomUpdated = "RoomUpdated.v1"
    case roomDeleted = "RoomDeleted.v1"
    case userMuted = "UserMuted.v1"
    case userUnmuted = "UserUnmuted.v1"
    case userUnbanned = "UserUnbanned.v1"
}
