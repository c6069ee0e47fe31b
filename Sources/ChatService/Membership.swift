import ChatCore
import NATS
import Synchronization

/// Who is in which room: KV `chat_members`, `<room>.<user>` → member (with the gateway holding the
/// connection). Every change emits its event (UserJoined / UserLeft), and only the replica whose
/// compare-and-set made the change emits it.
public final class Membership: Sendable {
    /// What this replica remembers, both only hints: memberships seen in KV recently, so a burst of
    /// sends costs one KV read per member per `knownMemberTTL`, not one per message; and each room's
    /// member count for `joined` replies (see `count(of:)`).
    private struct State {
        var knownMembers: [String: (seen: ContinuousClock.Instant, gateway: GatewayID)] = [:]
        var counts: [RoomID: (count: Int, readAt: ContinuousClock.Instant)] = [:]
    }

    /// Removals by this replica drop a known member at once; a removal by another replica is seen
    /// within this TTL (the gateway also checks membership itself before it forwards a send).
    static let knownMemberTTL: Duration = .seconds(2)
    static let cacheLimit = 100_000
    /// How long a room's member count for `joined` replies is reused (see `count(of:)`).
    static let countTTL: Duration = .seconds(2)

    let members: KeyValue
    let events: PresenceEvents
    private let state = Mutex(State())

    init(members: KeyValue, events: PresenceEvents) {
        self.members = members
        self.events = events
    }

    /// Adds the member; false when already a member (joining again changes nothing and emits nothing).
    public func join(room id: RoomID, user: UserID, username: Username, gateway: GatewayID) async throws(ChatError) -> Bool {
        do {
            let now = ChatTime.now()
            let member = Member(
                userID: user,
                username: username.rawValue,
                gatewayID: gateway,
                joinedAt: now.text,
                joinedAtMilliseconds: now.milliseconds
            )
            let key = ChatNames.memberKey(id, user)
            guard let revision = try await members.createIfAbsent(key, ChatJSON.encode(member)) else { return false }
            try await events.publish(.userJoined, room: id, user: user, username: username.rawValue, reason: nil, change: (key, revision))
            adjustCount(of: id, by: 1)
            return true
        } catch {
            throw ChatStorage.chatError(error)
        }
    }

    /// Removes the member; false when it was not one (or, with `heldBy`, is held by another gateway).
    public func leave(room id: RoomID, user: UserID, reason: String, heldBy gateway: GatewayID? = nil) async throws(ChatError) -> Bool {
        do {
            return try await remove(room: id, user: user, reason: reason) { member, _ in gateway == nil || member.gatewayID == gateway }
        } catch {
            throw ChatStorage.chatError(error)
        }
    }

    /// Deletes the membership (compare-and-set, so only one remover emits UserLeft) and emits the event.
    /// `only`: the record is removed only if it still satisfies this when read (a sweep decided on an
    /// older read, and the member may have joined again since); it gets the record and when nats-server
    /// stored it (milliseconds, the server's clock).
    func remove(
        room id: RoomID,
        user: UserID,
        reason: String,
        only: (Member, Int64) -> Bool = { _, _ in true }
    ) async throws(NATSError) -> Bool {
        let key = ChatNames.memberKey(id, user)
        state.withLock { $0.knownMembers[key] = nil }
        guard let entry = try await members.confirmedValue(key), let member = try? ChatJSON.decode(Member.self, from: entry.value),
            only(member, Self.storedAt(entry))
        else { return false }
        // Emptying the value by compare-and-set first: of two concurrent removers only one gets past here.
        guard let emptied = try await members.updateIfRevision(key, [], revision: entry.revision) else { return false }
        // Erased, not deleted: no delete marker stays behind, so counting a room's members is one
        // look at the bucket's subject index (`storedKeys`), not a read of every member.
        try await members.erase(key)
        adjustCount(of: id, by: -1)
        try await events.publish(.userLeft, room: id, user: user, username: member.username, reason: reason, change: (key, emptied))
        return true
    }

    /// A page of the room's members: up to `limit` with user ids after `after`, cut at `maxBytes`.
    /// Pages follow user id order; within a page members are listed by name, as the whole list was
    /// before paging. `next` is the page's last user id, the cursor for the next page.
    ///
    /// Cost: the room's keys from the bucket's subject index (no values), then one direct get per
    /// member of the page, so a page never reads the records of the whole room.
    public func page(
        of id: RoomID,
        after: UserID?,
        limit: Int,
        maxBytes: Int
    ) async throws(ChatError) -> (members: [ServiceAPI.MemberInfo], more: Bool, next: UserID?) {
        do {
            let prefix = id.rawValue + "."
            let users = try await members.storedKeys(matching: ChatNames.memberPattern(id)).compactMap { key -> String? in
                guard key.hasPrefix(prefix) else { return nil }
                let user = String(key.dropFirst(prefix.count))
                return after.map { user > $0.rawValue } ?? true ? user : nil
            }.sorted()
            let chosen = Array(users.prefix(limit))
            let found = try await memberRecords(chosen.map { prefix + $0 })
            let kept = PageCut.fitting(found, maxBytes: maxBytes)
            let more = users.count > chosen.count || kept < found.count
            let next = kept < found.count ? found[kept - 1].userID : chosen.last.flatMap(UserID.init)
            let page = found.prefix(kept).sorted { ($0.username, $0.userID.rawValue) < ($1.username, $1.userID.rawValue) }
            return (page, more, more ? next : nil)
        } catch {
            throw ChatStorage.chatError(error)
        }
    }

    /// The members under these keys, in their order; keys whose record is gone or emptied (a removal
    /// under way) are left out. All read at once, one direct get each.
    private func memberRecords(_ keys: [String]) async throws(NATSError) -> [ServiceAPI.MemberInfo] {
        let members = self.members
        let results = await withTaskGroup(of: (Int, Result<KeyValueEntry?, NATSError>).self) { group in
            for (index, key) in keys.enumerated() {
                group.addTask {
                    do throws(NATSError) { return (index, .success(try await members.value(key))) } catch {
                        return (index, .failure(error))
                    }
                }
            }
            var results = [Result<KeyValueEntry?, NATSError>](repeating: .success(nil), count: keys.count)
            for await (index, result) in group { results[index] = result }
            return results
        }
        var found: [ServiceAPI.MemberInfo] = []
        for result in results {
            guard let entry = try result.get(), !entry.value.isEmpty, let member = try? ChatJSON.decode(Member.self, from: entry.value)
            else { continue }
            found.append(ServiceAPI.MemberInfo(userID: member.userID, username: member.username))
        }
        return found
    }

    /// The users connected to the room now: its keys in the bucket's subject index (no values).
    func onlineUsers(of room: RoomID) async throws(NATSError) -> Set<UserID> {
        let prefix = room.rawValue + "."
        return Set(
            try await members.storedKeys(matching: ChatNames.memberPattern(room)).compactMap { UserID(String($0.dropFirst(prefix.count))) }
        )
    }

    /// Every member record of the room (every room with nil), skipping emptied ones (a removal under way),
    /// with when nats-server stored it (milliseconds, the server's clock: presence decisions compare
    /// it with `serverNow()`, never with a chat-service host's clock, which may be minutes off).
    func records(in room: RoomID? = nil) async throws(NATSError) -> [(room: RoomID, member: Member, storedAt: Int64)] {
        try await members.values(matching: room.map(ChatNames.memberPattern) ?? ">").compactMap { entry in
            let parts = entry.key.split(separator: ".")
            guard !entry.value.isEmpty, parts.count == 2, let room = RoomID(String(parts[0])),
                let member = try? ChatJSON.decode(Member.self, from: entry.value)
            else { return nil }
            return (room, member, Self.storedAt(entry))
        }
    }

    static func storedAt(_ entry: KeyValueEntry) -> Int64 { entry.createdNanoseconds / 1_000_000 }

    /// The members bucket's clock now: the time nats-server gives a fresh write of this replica's probe
    /// key (`clock.<id>`, which no room key can be). Two round trips; for presence decisions only.
    func serverNow() async throws(NATSError) -> Int64 {
        try await members.put(clockKey, [])
        guard let entry = try await members.get(clockKey, leader: true) else {
            throw NATSError(.jetStream, message: "clock probe \(clockKey) not found after writing it")
        }
        return Self.storedAt(entry)
    }

    private let clockKey = "clock." + String(makeUUID().prefix(8))

    /// `not_member` unless the user is a member of the room — with `heldBy`, one whose connection that
    /// gateway holds (in username mode a gateway may act only for its own clients).
    public func requireMember(room id: RoomID, user: UserID, heldBy gateway: GatewayID? = nil) async throws(ChatError) {
        guard let holder = try await holder(room: id, user: user), gateway == nil || holder == gateway else {
            throw ChatError(.notMember, "join room \(id) before sending to it")
        }
    }

    /// The gateway holding the member's connection; nil when the user is not a member.
    public func holder(room id: RoomID, user: UserID) async throws(ChatError) -> GatewayID? {
        let key = ChatNames.memberKey(id, user)
        let now = ContinuousClock.now
        if let known = state.withLock({ $0.knownMembers[key] }), now - known.seen < Self.knownMemberTTL { return known.gateway }
        do {
            guard let entry = try await members.confirmedValue(key), !entry.value.isEmpty,
                let member = try? ChatJSON.decode(Member.self, from: entry.value)
            else { return nil }
            state.withLock { state in
                if state.knownMembers.count >= Self.cacheLimit { state.knownMembers.removeAll(keepingCapacity: true) }
                state.knownMembers[key] = (now, member.gatewayID)
            }
            return member.gatewayID
        } catch {
            throw ChatStorage.chatError(error)
        }
    }

    /// The room's member count for a `joined` reply. Counting reads the members bucket's subject
    /// index, and on nats-server 2.9 that walks every member key of every room (~2 ms of server CPU
    /// per join at 15,000 members: a join storm was quadratic, nats-server at 80 % for 400 joins/s).
    /// So a count is read at most once per `countTTL` per room and adjusted meanwhile by this
    /// replica's own joins and leaves; other replicas' show within the TTL. Exact counts:
    /// `RoomDirectory.room(_:withMembers:)` and the room list.
    public func count(of id: RoomID) async throws(ChatError) -> Int {
        let now = ContinuousClock.now
        if let cached = state.withLock({ $0.counts[id] }), now - cached.readAt < Self.countTTL { return cached.count }
        do {
            let count = try await members.storedKeys(matching: ChatNames.memberPattern(id)).count
            state.withLock { state in
                if state.counts.count >= Self.cacheLimit { state.counts.removeAll(keepingCapacity: true) }
                state.counts[id] = (count, now)
            }
            return count
        } catch {
            throw ChatStorage.chatError(error)
        }
    }

    private func adjustCount(of id: RoomID, by delta: Int) {
        state.withLock { state in
            guard var cached = state.counts[id] else { return }
            cached.count = max(0, cached.count + delta)
            state.counts[id] = cached
        }
    }
}
