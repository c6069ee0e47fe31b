import ChatCore
import Logging
import NATS
import ServiceSupport

/// Rosters and roles: invitations, removals (and leaving), role changes and ownership transfer.
extension RoomAdmin {
    func invite(_ request: ServiceAPI.MemberChange, by actor: VerifiedToken?) async throws(ChatError) -> RosterEntry {
        let (room, standing) = try await load(request.roomID, actor)
        let user = try ChatHandlers.user(request.userID)
        let role = try request.role.map(Self.role) ?? .member
        try require(.invite, room, standing)
        if role == .owner {
            throw ChatError(.invalidRequest, "invite as member or admin; transfer ownership with PUT …/members/:user_id")
        }
        if role == .admin, standing.role != .owner { throw ChatError(.forbidden, "only the owner may invite admins") }
        guard let target = try await storage({ try await users.user(user) }) else {
            throw ChatError(.userNotFound, "user \(user) is not in the directory (has never signed in)")
        }
        if let actor, !invites.allow(actor.userID, perMinute: configuration.invitesPerMinute) {
            throw ChatError(.rateLimited, "too many invitations; at most \(configuration.invitesPerMinute) per minute")
        }
        if try await storage({ try await access.restriction(.ban, in: room.id, of: user, fresh: true) }) != nil {
            throw ChatError(.banned, "user \(user) is banned from this room; lift the ban first")
        }
        if let existing = try await storage({ try await access.rosterEntry(room.id, user) }) { return existing }
        guard try await storage({ try await access.rosterCount(of: room.id) }) < configuration.maxRoster else {
            throw ChatError(.rosterFull, "the roster holds \(configuration.maxRoster) users, the most allowed (CHAT_MAX_ROSTER)")
        }
        let entry = RosterEntry(userID: user, username: target.username, role: role, addedAt: ChatTime.now().text)
        guard try await storage({ try await access.add(entry, to: room.id) }) else {
            return try await storage { try await access.rosterEntry(room.id, user) } ?? entry
        }
        let event = AccessEvent(
            roomID: room.id,
            userID: user,
            username: target.username,
            role: role,
            by: actor?.userID,
            room: room,
            timestamp: entry.addedAt
        )
        try await publish(.memberAdded, event)
        return entry
    }

    /// Removes a user from the roster (an admin removing someone, or anyone leaving) and from presence.
    func removeMember(_ request: ServiceAPI.MemberChange, by actor: VerifiedToken?) async throws(ChatError) -> ServiceAPI.Ok {
        let (room, standing) = try await load(request.roomID, actor)
        let user = try ChatHandlers.user(request.userID)
        let leaving = actor?.userID == user
        let entry = try await storage { try await access.rosterEntry(room.id, user) }
        try require(leaving ? .leaveRoster : .removeMember, room, standing, target: entry?.role)
        guard let entry else { throw ChatError(.notMember, "user \(user) is not on the roster of room \(room.id)") }
        try await cutOff(entry.userID, username: entry.username, from: room.id, reason: leaving ? "left" : "removed", by: actor)
        return ServiceAPI.Ok()
    }

    /// The owner changes a role; `owner` transfers ownership (the previous owner becomes an admin), so
    /// a room always has exactly one owner. A public room's roster holds only its owner and admins:
    /// making someone a member there takes them off it.
    func setRole(_ request: ServiceAPI.MemberChange, by actor: VerifiedToken?) async throws(ChatError) -> RosterEntry {
        let (room, standing) = try await load(request.roomID, actor)
        let user = try ChatHandlers.user(request.userID)
        guard let text = request.role else { throw ChatError(.invalidRequest, "role is required (owner, admin or member)") }
        let role = try Self.role(text)
        try require(.setRole, room, standing)
        guard let actor else { throw ChatError(.authRequired, "managing a room needs a signed-in user") }
        if user == actor.userID {
            throw ChatError(.invalidRequest, "the owner's role changes only by transferring ownership to another user")
        }
        var entry = try await storage { try await access.rosterEntry(room.id, user) }
        if entry == nil {
            guard room.visibility == .public, let known = try await storage({ try await users.user(user) }) else {
                throw ChatError(.notMember, "user \(user) is not on the roster of room \(room.id)")
            }
            entry = RosterEntry(userID: user, username: known.username, role: .member, addedAt: ChatTime.now().text)
        }
        guard var entry else { throw ChatError(.notMember, "user \(user) is not on the roster") }
        entry.role = role
        try await storage {
            if role == .member, room.visibility == .public {
                try await access.remove(user, from: room.id)
            } else {
                try await access.put(entry, in: room.id)
            }
            if role == .owner {
                try await access.put(
                    RosterEntry(userID: actor.userID, username: actor.username.rawValue, role: .admin, addedAt: entry.addedAt),
                    in: room.id
                )
                try await users.setOwner(user, of: room.id, owns: true)
                try await users.setOwner(actor.userID, of: room.id, owns: false)
            }
        }
        if role == .owner {
            _ = try await rooms.update(room.id) { $0.ownerID = user }
            try await publish(
                .roleChanged,
                AccessEvent(
                    roomID: room.id,
                    userID: actor.userID,
                    username: actor.username.rawValue,
                    role: .admin,
                    by: actor.userID,
                    timestamp: ChatTime.now().text
                )
            )
        }
        try await publish(
            .roleChanged,
            AccessEvent(
                roomID: room.id,
                userID: user,
                username: entry.username,
                role: role,
                by: actor.userID,
                timestamp: ChatTime.now().text
            )
        )
        return entry
    }
}
