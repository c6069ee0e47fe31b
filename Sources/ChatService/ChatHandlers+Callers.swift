import ChatCore
import Logging
import NATS
import ServiceSupport

/// Who is asking, and what they may see: the proven gateway, the verified user (or an anonymous caller),
/// and the room as the policy lets the caller see it.
extension ChatHandlers {
    /// The room and the caller's standing, or the policy's error: `room_not_found` for a private room
    /// the caller is not on the roster of.
    func visibleRoom(
        _ roomID: String,
        _ caller: Caller,
        for operation: RoomPolicy.Operation
    ) async throws(ChatError) -> (Room, RoomPolicy.Standing) {
        let room = try await rooms.room(try Self.room(roomID))
        let user = try await principal(caller)
        let standing = try await storage { try await access.standing(in: room.id, of: user?.userID) }
        try Self.require(operation, room, standing)
        return (room, standing)
    }

    /// A gateway's gap fill: a public room's history, or a private room's while the gateway holds one of
    /// its members (it receives the room's deliveries for them anyway).
    func gatewayMayRead(_ id: RoomID, _ caller: Caller) async throws(ChatError) {
        let gateway = try await authenticated(caller)
        let room = try await rooms.room(id)
        guard room.visibility != .public else { return }
        let holds = try await storage { try await membership.records(in: id) }.contains { $0.member.gatewayID == gateway }
        guard holds else { throw ChatError(.roomNotFound, "room \(id) does not exist") }
    }

    /// A private or direct room's members: its roster with who is online, by user id.
    func rosterPage(of room: Room, after: UserID?, limit: Int, paged: Bool) async throws(ChatError) -> ServiceAPI.MemberList {
        let (roster, online) = try await storage { (try await access.roster(of: room.id), try await membership.onlineUsers(of: room.id)) }
        let sorted = roster.filter { entry in after.map { entry.userID.rawValue > $0.rawValue } ?? true }
            .sorted { $0.userID.rawValue < $1.userID.rawValue }
        let chosen = sorted.prefix(limit).map {
            ServiceAPI.MemberInfo(userID: $0.userID, username: $0.username, role: $0.role, online: online.contains($0.userID))
        }
        let kept = PageCut.fitting(chosen, maxBytes: pageBytes)
        let more = sorted.count > chosen.count || kept < chosen.count
        let page = chosen.prefix(kept).sorted { ($0.username, $0.userID.rawValue) < ($1.username, $1.userID.rawValue) }
        let next = more ? chosen.prefix(kept).last?.userID.rawValue : nil
        return ServiceAPI.MemberList(roomID: room.id, members: Array(page), hasMore: PageCut.hasMore(more, paged: paged), next: next)
    }

    /// The verified caller in token mode (recorded in the user directory); nil for anonymous callers and
    /// in username mode.
    func principal(_ caller: Caller) async throws(ChatError) -> VerifiedToken? {
        guard let verified = try await users.identify(caller.userToken, required: false) else { return nil }
        await record(verified)
        return verified
    }

    func record(_ verified: VerifiedToken) async {
        do {
            try await directory.seen(verified.userID, as: verified.username)
        } catch {
            logger.debug("could not record the user in the directory", metadata: ["user_id": "\(verified.userID)", "error": "\(error)"])
        }
    }

    static func require(_ operation: RoomPolicy.Operation, _ room: Room, _ standing: RoomPolicy.Standing) throws(ChatError) {
        if let error = RoomPolicy.check(operation, room: room, standing: standing) { throw error }
    }

    func storage<T>(_ body: () async throws -> T) async throws(ChatError) -> T {
        do { return try await body() } catch { throw ChatStorage.chatError(error) }
    }

    /// In token mode, the verified user the request acts for — who must be `user` (`forbidden`
    /// otherwise); nil in username mode.
    func acting(as user: UserID, _ caller: Caller) async throws(ChatError) -> VerifiedToken? {
        // A legacy gateway (no credential, CHAT_ALLOW_LEGACY_GATEWAYS) sends no user token either: taken on
        // its word, its users are unverified (public rooms only), as before user tokens.
        let legacy = caller.gateway == nil && allowLegacyGateways
        guard let verified = try await users.identify(caller.userToken, required: !legacy) else { return nil }
        guard verified.userID == user else { throw ChatError(.forbidden, "the user token is not user \(user)'s") }
        await record(verified)
        return verified
    }

    /// The gateway a request comes from, proven by its `GatewayCredential`; when the request names a
    /// gateway (`claiming`), it must be that one. Presence calls and everything done for a member
    /// (join, send, leave) need it: a holder of the gateway NATS credential cannot speak for another
    /// gateway.
    ///
    /// nil: a gateway without credential, accepted during an upgrade (`CHAT_ALLOW_LEGACY_GATEWAYS`); it
    /// is taken on its word (the gateway it names, any member), as the releases before credentials were.
    func authenticated(_ caller: Caller, claiming claimed: String? = nil) async throws(ChatError) -> GatewayID? {
        let claimed = try claimed.map(Self.gateway)
        guard let credential = caller.gateway else {
            if allowLegacyGateways { return claimed }
            throw ChatError(
                .unauthorized,
                "this request needs the \(ChatNames.gatewayHeader) and \(ChatNames.gatewayKeyHeader) headers of a gateway"
            )
        }
        if let claimed, claimed != credential.gatewayID {
            throw ChatError(.forbidden, "gateway \(credential.gatewayID) cannot speak for gateway \(claimed)")
        }
        try await presence.keys.authenticate(credential)
        return credential.gatewayID
    }
}
