/// Every authorization decision about a room, in one table: the chat-service asks it before each
/// operation, with the caller's standing read from the roster and the moderation records. No I/O, so
/// the whole matrix is tested directly (`RoomPolicyTests`) and against the running system.
public enum RoomPolicy {
    public enum Operation: String, CaseIterable, Sendable {
        /// GET the room, find it in the room list.
        case view
        case history
        case members
        case join
        /// Messages and typing notices.
        case send
        /// PATCH: name, topic, archived.
        case update
        case delete
        /// Add a user to the roster.
        case invite
        /// Remove another user from the roster.
        case removeMember
        /// Remove oneself from the roster.
        case leaveRoster
        /// Change a user's role (also ownership transfer).
        case setRole
        /// Ban, unban, mute, unmute.
        case moderate
    }

    /// What the chat-service knows of the caller in this room.
    public struct Standing: Sendable, Equatable {
        /// A verified user (token mode); false for anonymous REST and username mode.
        public var verified: Bool
        /// The caller's roster entry.
        public var role: RoomRole?
        public var ban: Restriction?
        public var mute: Restriction?

        public init(verified: Bool, role: RoomRole? = nil, ban: Restriction? = nil, mute: Restriction? = nil) {
            (self.verified, self.role, self.ban, self.mute) = (verified, role, ban, mute)
        }

        public static let anonymous = Standing(verified: false)
    }

    /// Whether the room exists for the caller: a private or direct room only for its roster.
    public static func isVisible(_ room: Room, to standing: Standing) -> Bool {
        room.visibility == .public || (standing.verified && standing.role != nil)
    }

    /// nil when allowed, else the error to answer. A room the caller may not see is `room_not_found`
    /// for every operation, so no answer tells a private room from a missing one. `target`: the role
    /// of the user an operation acts on (nil: not on the roster), who must rank below the caller.
    public static func check(_ operation: Operation, room: Room, standing: Standing, target: RoomRole? = nil) -> ChatError? {
        guard isVisible(room, to: standing) else { return ChatError(.roomNotFound, "room \(room.id) does not exist") }
        switch operation {
        case .view, .history, .members:
            return nil
        case .join:
            if let ban = standing.ban { return ChatError(.banned, "you are banned from this room", until: ban.until) }
            return nil
        case .send:
            if let ban = standing.ban { return ChatError(.banned, "you are banned from this room", until: ban.until) }
            if let mute = standing.mute { return ChatError(.muted, "you are muted in this room", until: mute.until) }
            if room.archived { return ChatError(.roomArchived, "room \(room.id) is archived (read-only)") }
            return nil
        case .update, .delete, .invite, .removeMember, .leaveRoster, .setRole, .moderate:
            return manage(operation, room: room, standing: standing, target: target)
        }
    }

    private static func manage(_ operation: Operation, room: Room, standing: Standing, target: RoomRole?) -> ChatError? {
        guard standing.verified else { return ChatError(.authRequired, "managing a room needs a signed-in user (token mode)") }
        let role = standing.role
        if room.visibility == .direct, operation != .leaveRoster {
            return ChatError(.forbidden, "a direct room has exactly its two users and no roles")
        }
        switch operation {
        case .leaveRoster:
            guard let role else { return ChatError(.notMember, "you are not on the roster of room \(room.id)") }
            if role == .owner { return ChatError(.forbidden, "the owner cannot leave: transfer ownership first, or delete the room") }
            return nil
        case .delete, .setRole:
            return role == .owner ? nil : ChatError(.forbidden, "only the room's owner may do this")
        case .invite:
            if room.visibility == .public {
                return ChatError(.invalidRequest, "a public room has no invitations: anyone may join it")
            }
            if room.archived { return ChatError(.roomArchived, "room \(room.id) is archived (read-only)") }
            return (role ?? .member) >= .admin ? nil : ChatError(.forbidden, "only the owner and admins may invite")
        case .update:
            return (role ?? .member) >= .admin ? nil : ChatError(.forbidden, "only the owner and admins may change the room")
        case .removeMember, .moderate:
            guard let role, role >= .admin else { return ChatError(.forbidden, "only the owner and admins may do this") }
            if let target, target >= role { return ChatError(.forbidden, "you can act only on users below your role (\(role.rawValue))") }
            return nil
        case .view, .history, .members, .join, .send:
            return nil
        }
    }
}
