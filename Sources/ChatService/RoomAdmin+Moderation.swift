import ChatCore
import Logging
import NATS
import ServiceSupport

/// Bans and mutes, and lifting them.
extension RoomAdmin {
    /// A ban removes the user at once (roster and presence; their sockets get `removed`) and keeps
    /// them out; a mute lets them read but not send.
    func restrict(
        _ kind: Restriction.Kind,
        _ request: ServiceAPI.Restrict,
        by actor: VerifiedToken?
    ) async throws(ChatError)
        -> ServiceAPI.RestrictionResult
    {
        let (room, standing) = try await load(request.roomID, actor)
        let user = try ChatHandlers.user(request.userID)
        if let seconds = request.seconds, !(1...ServiceAPI.Restrict.maxSeconds).contains(seconds) {
            throw ChatError(.invalidRequest, "seconds must be 1 to \(ServiceAPI.Restrict.maxSeconds), or absent for no end")
        }
        let entry = try await storage { try await access.rosterEntry(room.id, user) }
        try require(.moderate, room, standing, target: entry?.role)
        guard let actor else { throw ChatError(.authRequired, "moderation needs a signed-in user") }
        if user == actor.userID { throw ChatError(.invalidRequest, "you cannot \(kind.rawValue) yourself") }
        let until = request.seconds.map { ChatTime.now().milliseconds + Int64($0) * 1000 }
        let restriction = Restriction(userID: user, by: actor.userID, untilMilliseconds: until)
        try await storage { try await access.restrict(kind, restriction, in: room.id) }
        let username = try await storage { try await users.user(user) }?.username ?? entry?.username
        switch kind {
        case .ban:
            try await cutOff(user, username: username ?? "", from: room.id, reason: "banned", by: actor, until: restriction.until)
        case .mute:
            try await publish(
                .userMuted,
                AccessEvent(
                    roomID: room.id,
                    userID: user,
                    username: username,
                    by: actor.userID,
                    until: restriction.until,
                    untilMilliseconds: until,
                    timestamp: ChatTime.now().text
                )
            )
        }
        return ServiceAPI.RestrictionResult(roomID: room.id, userID: user, kind: kind, until: restriction.until)
    }

    func lift(_ kind: Restriction.Kind, _ request: ServiceAPI.Restrict, by actor: VerifiedToken?) async throws(ChatError) -> ServiceAPI.Ok {
        let (room, standing) = try await load(request.roomID, actor)
        let user = try ChatHandlers.user(request.userID)
        try require(.moderate, room, standing)
        guard try await storage({ try await access.lift(kind, of: user, in: room.id) }) else {
            throw ChatError(.notFound, "user \(user) is not \(kind == .ban ? "banned" : "muted") in room \(room.id)")
        }
        try await publish(
            kind == .ban ? .userUnbanned : .userUnmuted,
            AccessEvent(roomID: room.id, userID: user, by: actor?.userID, timestamp: ChatTime.now().text)
        )
        return ServiceAPI.Ok()
    }

    /// The direct room of the caller and `user`: the same room for the same pair, whoever opens it and
    /// through whichever replica (its id is derived from the pair, and created only once).
}
