import ChatCore
import Logging
import NATS
import ServiceSupport
import Synchronization

/// Room management, membership and moderation: every operation asks `RoomPolicy` with the caller's
/// standing read fresh, changes KV, then stores its event (MemberAdded.v1 …) in the room's order on
/// `chat.room.<room>.presence`, from where every gateway applies it between the same messages.
public struct RoomAdmin: Sendable {
    let rooms: RoomDirectory
    let access: AccessStore
    let membership: Membership
    let users: UserDirectory
    let events: PresenceEvents
    let js: JetStream
    /// Erased with a room: its member and idempotency records.
    let memberRecords: KeyValue
    let idempotencyRecords: KeyValue
    let configuration: ChatServiceConfiguration
    let logger: Logger
    let invites = InviteLimiter()

    /// The caller's view of a room: `my_role` filled in.
    static func view(_ room: Room, _ standing: RoomPolicy.Standing) -> Room {
        var view = room
        view.myRole = standing.role
        return view
    }

    func create(_ request: ServiceAPI.CreateRoom, by actor: VerifiedToken?) async throws(ChatError) -> Room {
        guard let name = RoomName(request.name) else {
            throw ChatError(.nameInvalid, "room name must be 1–\(RoomName.maxLength) characters without control characters")
        }
        let visibility = try Self.visibility(request.visibility)
        let topic = try Self.topic(request.topic)
        if visibility == .direct { throw ChatError(.invalidRequest, "open a direct room with POST /api/v1/dms {\"user_id\"}") }
        if visibility == .private, actor == nil {
            throw ChatError(.authRequired, "private rooms need a signed-in user (token mode: AUTH_JWT_SECRET or AUTH_JWKS_*)")
        }
        if let actor, try await storage({ try await users.ownedCount(actor.userID) }) >= configuration.maxOwnedRooms {
            throw ChatError(.ownedRoomLimit, "you own \(configuration.maxOwnedRooms) rooms, the most allowed (CHAT_MAX_OWNED_ROOMS)")
        }
        var room = try await rooms.create(name: name, visibility: visibility, topic: topic, owner: actor?.userID)
        guard let actor else { return room }
        try await storage {
            try await access.put(
                RosterEntry(userID: actor.userID, username: actor.username.rawValue, role: .owner, addedAt: room.createdAt),
                in: room.id
            )
            try await users.setOwner(actor.userID, of: room.id, owns: true)
        }
        room.myRole = .owner
        return room
    }

    func update(_ request: ServiceAPI.UpdateRoom, by actor: VerifiedToken?) async throws(ChatError) -> Room {
        let (room, standing) = try await load(request.roomID, actor)
        try require(.update, room, standing)
        let name = try request.name.map { text throws(ChatError) in
            guard let name = RoomName(text) else {
                throw ChatError(.nameInvalid, "room name must be 1–\(RoomName.maxLength) characters without control characters")
            }
            return name
        }
        let topic = try Self.topic(request.topic)
        let updated = try await rooms.update(room.id) { room throws(ChatError) in
            if let name { room.name = name.rawValue }
            if request.topic != nil { room.topic = topic?.isEmpty == true ? nil : topic }
            if let archived = request.archived { room.archived = archived }
        }
        try await publish(.roomUpdated, AccessEvent(roomID: room.id, by: actor?.userID, room: updated, timestamp: ChatTime.now().text))
        return Self.view(updated, standing)
    }

    /// Erases the room: its history (both subjects purged), members, roster, bans, mutes and
    /// idempotency records, then stores RoomDeleted.v1 (only its id) so every gateway removes the
    /// room's sockets. A send that raced the deletion on another replica (which knew the room for up to
    /// `RoomDirectory.ttl`) is purged by a second pass after that time.
    func delete(_ request: ServiceAPI.RoomRef, by actor: VerifiedToken?) async throws(ChatError) -> ServiceAPI.Ok {
        let (room, standing) = try await load(request.roomID, actor)
        try require(.delete, room, standing)
        try await rooms.erase(room)
        try await storage {
            try await purgeHistory(of: room.id)
            try await access.erase(room: room.id)
            for key in try await memberRecords.storedKeys(matching: ChatNames.memberPattern(room.id)) { try await memberRecords.erase(key) }
            for key in try await idempotencyRecords.storedKeys(matching: ChatNames.roomRecordsPattern(room.id)) {
                try await idempotencyRecords.erase(key)
            }
            if let owner = room.ownerID { try await users.setOwner(owner, of: room.id, owns: false) }
        }
        try await publish(.roomDeleted, AccessEvent(roomID: room.id, by: actor?.userID, timestamp: ChatTime.now().text))
        let js = self.js
        let logger = self.logger
        Task {
            try? await Task.sleep(for: RoomDirectory.ttl + .seconds(1))
            do throws(NATSError) { try await js.purge(stream: ChatNames.eventStream, subject: ChatNames.messageSubject(room.id)) } catch {
                logger.warning("second purge of a deleted room failed", metadata: ["room_id": "\(room.id)", "error": "\(error)"])
            }
        }
        logger.info("room deleted", metadata: ["room_id": "\(room.id)", "by": "\(actor?.userID.rawValue ?? "-")"])
        return ServiceAPI.Ok()
    }

    private func purgeHistory(of room: RoomID) async throws(NATSError) {
        try await js.purge(stream: ChatNames.eventStream, subject: ChatNames.messageSubject(room))
        try await js.purge(stream: ChatNames.eventStream, subject: ChatNames.presenceSubject(room))
    }

    func openDirect(_ request: ServiceAPI.OpenDirect, by actor: VerifiedToken?) async throws(ChatError) -> Room {
        guard let actor else { throw ChatError(.authRequired, "direct messages need a signed-in user (token mode)") }
        let user = try ChatHandlers.user(request.userID)
        if user == actor.userID { throw ChatError(.invalidRequest, "a direct room needs another user") }
        guard let other = try await storage({ try await users.user(user) }) else {
            throw ChatError(.userNotFound, "user \(user) is not in the directory (has never signed in)")
        }
        let (first, second) = actor.userID.rawValue < user.rawValue ? (actor.userID, user) : (user, actor.userID)
        let id = RoomID(VerifiedToken.userID(forSubject: "direct:\(first.rawValue)|\(second.rawValue)").rawValue)!
        let names = [actor.username.rawValue, other.username].sorted().joined(separator: ", ")
        let (room, _) = try await rooms.openDirect(id, name: String(names.prefix(RoomName.maxLength)))
        let now = ChatTime.now().text
        for (member, username) in [(actor.userID, actor.username.rawValue), (user, other.username)] {
            let added = try await storage {
                try await access.add(RosterEntry(userID: member, username: username, role: .member, addedAt: now), to: room.id)
            }
            if added {
                try await publish(
                    .memberAdded,
                    AccessEvent(
                        roomID: room.id,
                        userID: member,
                        username: username,
                        role: .member,
                        by: actor.userID,
                        room: room,
                        timestamp: now
                    )
                )
            }
        }
        return Self.view(room, RoomPolicy.Standing(verified: true, role: .member))
    }

    // MARK: Shared steps

    /// Off the roster, out of presence, and the event that makes every gateway drop the user's sockets
    /// from the room before the next message.
    func cutOff(
        _ user: UserID,
        username: String,
        from room: RoomID,
        reason: String,
        by actor: VerifiedToken?,
        until: String? = nil
    )
        async throws(ChatError)
    {
        try await storage { try await access.remove(user, from: room) }
        let event = AccessEvent(
            roomID: room,
            userID: user,
            username: username,
            reason: reason,
            by: actor?.userID,
            until: until,
            timestamp: ChatTime.now().text
        )
        try await publish(.memberRemoved, event)
        do {
            _ = try await membership.remove(room: room, user: user, reason: reason)
        } catch {
            throw ChatStorage.chatError(error)
        }
    }

    /// The room (fresh, not the cached copy) and the caller's fresh standing in it; `room_not_found`
    /// before anything else of the request is looked at when the caller may not see the room, so no
    /// other error (a bad user id or role) tells a private room from a missing one.
    func load(_ roomID: String, _ actor: VerifiedToken?) async throws(ChatError) -> (Room, RoomPolicy.Standing) {
        let room = try await rooms.room(try ChatHandlers.room(roomID), fresh: true)
        let standing = try await storage { try await access.standing(in: room.id, of: actor?.userID, fresh: true) }
        guard RoomPolicy.isVisible(room, to: standing) else { throw ChatError(.roomNotFound, "room \(room.id) does not exist") }
        return (room, standing)
    }

    func require(
        _ operation: RoomPolicy.Operation,
        _ room: Room,
        _ standing: RoomPolicy.Standing,
        target: RoomRole? = nil
    ) throws(ChatError) {
        if let error = RoomPolicy.check(operation, room: room, standing: standing, target: target) { throw error }
    }

    func publish(_ type: ChatEventType, _ event: AccessEvent) async throws(ChatError) {
        try await storage { try await events.publish(type, event, messageID: makeUUID()) }
    }

    func storage<T>(_ body: () async throws -> T) async throws(ChatError) -> T {
        do { return try await body() } catch { throw ChatStorage.chatError(error) }
    }

    static func visibility(_ text: String?) throws(ChatError) -> RoomVisibility {
        guard let text else { return .public }
        guard let visibility = RoomVisibility(rawValue: text) else {
            throw ChatError(.invalidRequest, "visibility must be public, private or direct")
        }
        return visibility
    }

    static func role(_ text: String) throws(ChatError) -> RoomRole {
        guard let role = RoomRole(rawValue: text) else { throw ChatError(.invalidRequest, "role must be owner, admin or member") }
        return role
    }

    static let maxTopicLength = 500

    static func topic(_ text: String?) throws(ChatError) -> String? {
        guard let text else { return nil }
        guard text.count <= maxTopicLength, !text.unicodeScalars.contains(where: MessageContent.isForbiddenInContent) else {
            throw ChatError(.invalidRequest, "topic must be at most \(maxTopicLength) characters without control characters")
        }
        return text
    }
}
