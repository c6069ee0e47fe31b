/// Who may see a room: `public` rooms are the seed's (anyone may join unless banned); `private` and
/// `direct` rooms exist only for the users on their roster.
public enum RoomVisibility: String, Codable, Sendable, CaseIterable {
    case `public`
    case `private`
    case direct
}

/// A user's standing in a room, highest first. A private room has exactly one owner; a direct room's
/// two users are both members; a public room's roster holds only its owner and admins.
public enum RoomRole: String, Codable, Sendable, CaseIterable, Comparable {
    case owner
    case admin
    case member

    public var rank: Int {
        switch self {
        case .owner: 3
        case .admin: 2
        case .member: 1
        }
    }

    public static func < (lhs: RoomRole, rhs: RoomRole) -> Bool { lhs.rank < rhs.rank }
}

/// One user on a room's roster (KV `chat_access`, `<room>.role.<user>`).
public struct RosterEntry: Codable, Sendable, Equatable {
    public var userID: UserID
    public var username: String
    public var role: RoomRole
    /// RFC 3339, UTC.
    public var addedAt: String

    public init(userID: UserID, username: String, role: RoomRole, addedAt: String) {
        (self.userID, self.username, self.role, self.addedAt) = (userID, username, role, addedAt)
    }

    enum CodingKeys: String, CodingKey {
        case username, role
        case userID = "user_id"
        case addedAt = "added_at"
    }
}

/// A ban or a mute of one user in one room (KV `chat_access`, `<room>.ban.<user>` / `<room>.mute.<user>`).
/// `untilMilliseconds` nil: until lifted.
public struct Restriction: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable, CaseIterable {
        case ban
        case mute
    }

    public var userID: UserID
    public var by: UserID
    public var untilMilliseconds: Int64?

    public init(userID: UserID, by: UserID, untilMilliseconds: Int64?) {
        (self.userID, self.by, self.untilMilliseconds) = (userID, by, untilMilliseconds)
    }

    /// In force at `nowMilliseconds` (a restriction with an end lapses by itself).
    public func inForce(atMilliseconds now: Int64) -> Bool { untilMilliseconds.map { now < $0 } ?? true }

    /// The end as RFC 3339, for `muted` / `banned` errors.
    public var until: String? { untilMilliseconds.map(ChatTime.format(milliseconds:)) }

    enum CodingKeys: String, CodingKey {
        case by
        case userID = "user_id"
        case untilMilliseconds = "until_ms"
    }
}

/// The body of every membership and moderation event on `chat.room.<room>.presence` (MemberAdded.v1 …
/// RoomDeleted.v1): stored in the room's order, so every gateway applies them between the same messages.
public struct AccessEvent: Codable, Sendable, Equatable {
    public var roomID: RoomID
    /// The user the event is about (none for RoomUpdated / RoomDeleted).
    public var userID: UserID?
    public var username: String?
    public var role: RoomRole?
    /// MemberRemoved: `removed`, `left` or `banned`.
    public var reason: String?
    /// Who did it.
    public var by: UserID?
    /// RoomUpdated / MemberAdded: the room as it is now (what the affected user may now see).
    public var room: Room?
    public var until: String?
    /// `until` in milliseconds since 1970 (UserMuted), for the gateways' own check of typing notices.
    public var untilMilliseconds: Int64?
    public var timestamp: String

    public init(
        roomID: RoomID,
        userID: UserID? = nil,
        username: String? = nil,
        role: RoomRole? = nil,
        reason: String? = nil,
        by: UserID? = nil,
        room: Room? = nil,
        until: String? = nil,
        untilMilliseconds: Int64? = nil,
        timestamp: String
    ) {
        self.roomID = roomID
        self.userID = userID
        self.username = username
        self.role = role
        self.reason = reason
        self.by = by
        self.room = room
        self.until = until
        self.untilMilliseconds = untilMilliseconds
        self.timestamp = timestamp
    }

    enum CodingKeys: String, CodingKey {
        case username, role, reason, by, room, until, timestamp
        case roomID = "room_id"
        case userID = "user_id"
        case untilMilliseconds = "until_ms"
    }
}

/// A user of the directory (`GET /api/v1/users`): someone who has used the system with a verified token.
public struct DirectoryUser: Codable, Sendable, Equatable {
    public var userID: UserID
    public var username: String

    public init(userID: UserID, username: String) { (self.userID, self.username) = (userID, username) }

    enum CodingKeys: String, CodingKey {
        case username
        case userID = "user_id"
    }
}
