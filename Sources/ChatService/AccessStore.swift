import ChatCore
import NATS
import Synchronization

/// Rosters, bans and mutes: KV `chat_access` (`<room>.role.<user>`, `<room>.ban.<user>`,
/// `<room>.mute.<user>`), apart from presence (`chat_members`: who is connected).
///
/// Sends ask for the sender's standing on every message, so standings are cached per record for
/// `ttl`: a burst of sends costs one KV read per record per `ttl`, not one per message. A change made
/// by this replica replaces its cache entry at once; one made by another replica is seen within
/// `ttl`. Joins and management read fresh (`fresh: true`), so an invite or ban acts at once there, and
/// a removed or banned member is cut off at once on the delivery side: the gateway applies the
/// removal event in the room's order (docs/access.md).
public final class AccessStore: Sendable {
    static let ttl: Duration = .seconds(2)
    static let cacheLimit = 100_000

    let bucket: KeyValue
    private let cache = Mutex<[String: (value: [UInt8]?, readAt: ContinuousClock.Instant)]>([:])

    init(bucket: KeyValue) { self.bucket = bucket }

    /// The caller's standing in `room`; `user` nil: anonymous (nothing to look up).
    public func standing(in room: RoomID, of user: UserID?, fresh: Bool = false) async throws(NATSError) -> RoomPolicy.Standing {
        guard let user else { return .anonymous }
        // One after another: cached, these are dictionary lookups (the send path); fresh, three direct gets.
        let role = try await record(ChatNames.rosterKey(room, user), as: RosterEntry.self, fresh: fresh)?.role
        let ban = try await restriction(.ban, in: room, of: user, fresh: fresh)
        let mute = try await restriction(.mute, in: room, of: user, fresh: fresh)
        return RoomPolicy.Standing(verified: true, role: role, ban: ban, mute: mute)
    }

    /// The restriction when it is in force (a lapsed one reads as none).
    public func restriction(
        _ kind: Restriction.Kind,
        in room: RoomID,
        of user: UserID,
        fresh: Bool = false
    ) async throws(NATSError)
        -> Restriction?
    {
        guard let found = try await record(ChatNames.restrictionKey(kind, room, user), as: Restriction.self, fresh: fresh),
            found.inForce(atMilliseconds: ChatTime.now().milliseconds)
        else { return nil }
        return found
    }

    public func rosterEntry(_ room: RoomID, _ user: UserID) async throws(NATSError) -> RosterEntry? {
        try await record(ChatNames.rosterKey(room, user), as: RosterEntry.self, fresh: true)
    }

    /// The whole roster (at most `CHAT_MAX_ROSTER` entries), in stream order.
    public func roster(of room: RoomID) async throws(NATSError) -> [RosterEntry] {
        try await bucket.values(matching: ChatNames.rosterPattern(room)).compactMap {
            try? ChatJSON.decode(RosterEntry.self, from: $0.value)
        }
    }

    public func rosterCount(of room: RoomID) async throws(NATSError) -> Int {
        try await bucket.storedKeys(matching: ChatNames.rosterPattern(room)).count
    }

    /// The user's role in every room whose roster holds them (the room list's `my_role` and which
    /// private rooms it shows).
    public func roles(of user: UserID) async throws(NATSError) -> [RoomID: RoomRole] {
        var roles: [RoomID: RoomRole] = [:]
        for entry in try await bucket.values(matching: ChatNames.rosterPattern(of: user)) {
            guard let room = entry.key.split(separator: ".").first.flatMap({ RoomID(String($0)) }),
                let roster = try? ChatJSON.decode(RosterEntry.self, from: entry.value)
            else { continue }
            roles[room] = roster.role
        }
        return roles
    }

    /// Adds the entry only when the user is not on the roster; false when they already were.
    public func add(_ entry: RosterEntry, to room: RoomID) async throws(NATSError) -> Bool {
        let key = ChatNames.rosterKey(room, entry.userID)
        guard try await bucket.createIfAbsent(key, ChatJSON.encode(entry)) != nil else { return false }
        remember(key, ChatJSON.encode(entry))
        return true
    }

    public func put(_ entry: RosterEntry, in room: RoomID) async throws(NATSError) {
        let key = ChatNames.rosterKey(room, entry.userID)
        try await bucket.put(key, ChatJSON.encode(entry))
        remember(key, ChatJSON.encode(entry))
    }

    /// Erased (no delete marker), so counting a roster stays one look at the subject index.
    public func remove(_ user: UserID, from room: RoomID) async throws(NATSError) {
        let key = ChatNames.rosterKey(room, user)
        try await bucket.erase(key)
        remember(key, nil)
    }

    public func restrict(_ kind: Restriction.Kind, _ restriction: Restriction, in room: RoomID) async throws(NATSError) {
        let key = ChatNames.restrictionKey(kind, room, restriction.userID)
        try await bucket.put(key, ChatJSON.encode(restriction))
        remember(key, ChatJSON.encode(restriction))
    }

    /// True when a restriction was in place.
    public func lift(_ kind: Restriction.Kind, of user: UserID, in room: RoomID) async throws(NATSError) -> Bool {
        let key = ChatNames.restrictionKey(kind, room, user)
        let existed = try await bucket.value(key, leader: true) != nil
        try await bucket.erase(key)
        remember(key, nil)
        return existed
    }

    /// Every record of the room: its roster, bans and mutes (the room is being deleted).
    public func erase(room: RoomID) async throws(NATSError) {
        for key in try await bucket.storedKeys(matching: ChatNames.roomRecordsPattern(room)) {
            try await bucket.erase(key)
            remember(key, nil)
        }
    }

    private func record<T: Decodable>(_ key: String, as type: T.Type, fresh: Bool) async throws(NATSError) -> T? {
        let now = ContinuousClock.now
        if !fresh, let cached = cache.withLock({ $0[key] }), now - cached.readAt < Self.ttl {
            return cached.value.flatMap { try? ChatJSON.decode(T.self, from: $0) }
        }
        let value = try await (fresh ? bucket.value(key, leader: true) : bucket.value(key))?.value
        remember(key, value, at: now)
        return value.flatMap { try? ChatJSON.decode(T.self, from: $0) }
    }

    private func remember(_ key: String, _ value: [UInt8]?, at now: ContinuousClock.Instant = .now) {
        cache.withLock { cache in
            if cache.count >= Self.cacheLimit { cache.removeAll(keepingCapacity: true) }
            cache[key] = (value, now)
        }
    }
}
