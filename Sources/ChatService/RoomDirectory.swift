import ChatCore
import Foundation
import Logging
import NATS
import Synchronization

/// The rooms: KV `chat_rooms` holds `id.<room>` → room and, for public rooms, `name.<hex(lowercased
/// name)>` → room id (the name entry is created first and only once, so two replicas cannot both
/// create one name). Private and direct rooms take no name entry: a taken name would tell anyone that a
/// private room of that name exists. `count` is the number of rooms (`RoomSlots`).
///
/// A room read is remembered for `ttl` (rooms are renamed, archived and deleted): this replica's own
/// changes replace the entry at once, another replica's show within `ttl`.
public final class RoomDirectory: Sendable {
    let rooms: KeyValue
    /// Read only, to count members: its subject index answers a room's count in one request.
    let members: KeyValue
    let js: JetStream
    /// `CHAT_MAX_ROOMS` (0 for no limit) and the room count behind it.
    let slots: RoomSlots
    let logger: Logger
    private let known = Mutex<[RoomID: (room: Room, readAt: ContinuousClock.Instant)]>([:])
    static let ttl: Duration = .seconds(2)

    init(rooms: KeyValue, members: KeyValue, js: JetStream, maxRooms: Int, logger: Logger) {
        self.rooms = rooms
        self.members = members
        self.js = js
        self.slots = RoomSlots(rooms: rooms, maxRooms: maxRooms, logger: logger)
        self.logger = logger
    }

    /// A new room. Public rooms take their name's entry (`room_exists` when taken) and announce
    /// themselves to every client (RoomCreated.v1); private rooms do neither.
    public func create(
        name: RoomName,
        visibility: RoomVisibility = .public,
        topic: String? = nil,
        owner: UserID? = nil
    )
        async throws(ChatError) -> Room
    {
        do {
            guard visibility == .public else {
                try await slots.take()
                let room = Room(
                    id: RoomID.random(),
                    name: name.rawValue,
                    createdAt: ChatTime.now().text,
                    visibility: visibility,
                    ownerID: owner,
                    topic: topic
                )
                try await rooms.create(ChatNames.roomKey(room.id), room.storedJSON)
                remember(room)
                logger.info("room created", metadata: ["room_id": "\(room.id)", "visibility": "\(visibility.rawValue)"])
                return room
            }
            let nameKey = ChatNames.roomNameKey(name)
            if let existing = try await rooms.value(nameKey) {
                throw Self.exists(name, try await self.room(for: existing, name: name))
            }
            // CHAT_MAX_ROOMS: a slot is taken before the room is written (exact across replicas).
            try await slots.take()
            let room = Room(id: RoomID.random(), name: name.rawValue, createdAt: ChatTime.now().text, ownerID: owner, topic: topic)
            // nil: another replica created the same name a moment ago.
            // A failed write keeps its slot: it may have been stored, and a count one high is
            // corrected at the limit (`RoomSlots`), while one low would let a room past the limit.
            if try await rooms.createIfAbsent(nameKey, Array(room.id.rawValue.utf8)) == nil {
                await slots.giveBack()
                guard let existing = try await rooms.confirmedValue(nameKey) else {
                    throw ChatError(.unavailable, "the room name is being created; try again")
                }
                throw Self.exists(name, try await self.room(for: existing, name: name))
            }
            try await rooms.put(ChatNames.roomKey(room.id), room.storedJSON)
            remember(room)
            var headers = NATSHeaders()
            headers[ChatNames.eventTypeHeader] = ChatEventType.roomCreated.rawValue
            let dedup = JetStream.PublishOptions(messageID: "room-created:\(room.id)")
            _ = try await js.publish(ChatNames.roomCreatedSubject, payload: ChatJSON.encode(room), headers: headers, options: dedup)
            logger.info("room created", metadata: ["room_id": "\(room.id)", "name": "\(room.name)"])
            return room
        } catch {
            throw ChatStorage.chatError(error)
        }
    }

    /// The direct room `id` of two users, created when absent; the same id always names the same pair
    /// (`DirectRooms.id`), so concurrent opens from both sides and from any replica meet in one room.
    /// Returns the room and whether this call created it.
    public func openDirect(_ id: RoomID, name: String) async throws(ChatError) -> (room: Room, created: Bool) {
        do {
            if let existing = try await load(id, fresh: true) { return (existing, false) }
            try await slots.take()
            let room = Room(id: id, name: name, createdAt: ChatTime.now().text, visibility: .direct)
            guard try await rooms.createIfAbsent(ChatNames.roomKey(id), room.storedJSON) != nil else {
                await slots.giveBack()
                guard let existing = try await load(id, fresh: true) else {
                    throw ChatError(.unavailable, "the direct room is being created; try again")
                }
                return (existing, false)
            }
            remember(room)
            return (room, true)
        } catch {
            throw ChatStorage.chatError(error)
        }
    }

    /// Applies `change` to the stored room by compare-and-set (retried when another writer came
    /// first). A public room's new name takes its name entry first (`room_exists` when taken) and
    /// frees the old one after.
    public func update(_ id: RoomID, _ change: (inout Room) throws(ChatError) -> Void) async throws(ChatError) -> Room {
        do {
            for _ in 0..<16 {
                guard let entry = try await rooms.confirmedValue(ChatNames.roomKey(id)),
                    let stored = try? ChatJSON.decode(Room.self, from: entry.value)
                else { throw ChatError(.roomNotFound, "room \(id) does not exist") }
                var room = stored
                try change(&room)
                let renamed = room.visibility == .public && room.name.lowercased() != stored.name.lowercased()
                if renamed, let name = RoomName(room.name) {
                    guard try await rooms.createIfAbsent(ChatNames.roomNameKey(name), Array(id.rawValue.utf8)) != nil else {
                        throw ChatError(.roomExists, "a room named '\(room.name)' already exists")
                    }
                }
                guard try await rooms.updateIfRevision(ChatNames.roomKey(id), room.storedJSON, revision: entry.revision) != nil
                else {
                    if renamed, let name = RoomName(room.name) { try await rooms.erase(ChatNames.roomNameKey(name)) }
                    continue
                }
                if renamed, let old = RoomName(stored.name) { try await rooms.erase(ChatNames.roomNameKey(old)) }
                remember(room)
                return room
            }
            throw ChatError(.unavailable, "room \(id) is changing too often; try again")
        } catch {
            throw ChatStorage.chatError(error)
        }
    }

    /// Removes the room's records and gives its slot back (its history and other records are the
    /// caller's: `RoomAdmin.delete`).
    public func erase(_ room: Room) async throws(ChatError) {
        do {
            if room.visibility == .public, let name = RoomName(room.name) {
                // Only the entry that still points to this room (the name may have been taken again).
                if let entry = try await rooms.value(ChatNames.roomNameKey(name)), entry.value == Array(room.id.rawValue.utf8) {
                    try await rooms.erase(ChatNames.roomNameKey(name))
                }
            }
            try await rooms.erase(ChatNames.roomKey(room.id))
            _ = known.withLock { $0.removeValue(forKey: room.id) }
            await slots.giveBack()
        } catch {
            throw ChatStorage.chatError(error)
        }
    }

    /// The room, or `room_not_found`; with `withMembers` its exact member count.
    public func room(_ id: RoomID, withMembers: Bool = false, fresh: Bool = false) async throws(ChatError) -> Room {
        do {
            guard let room = try await load(id, fresh: fresh) else { throw ChatError(.roomNotFound, "room \(id) does not exist") }
            return withMembers ? try await counted(room) : room
        } catch {
            throw ChatStorage.chatError(error)
        }
    }

    /// A page of rooms with their member counts: up to `limit` rooms created after the room `after`,
    /// cut at `maxBytes`. Pages follow the order the room records were written (creation order);
    /// within a page rooms are listed oldest first, as the whole list was before paging. `next` is
    /// the page's last room in creation order, the cursor for the next page.
    ///
    /// Cost: the page's own room records (a consumer starting after the cursor's record) and the
    /// hidden rooms between them, plus one read of the members bucket's subject index for the counts —
    /// that one follows the number of memberships of all rooms (docs/limits.md).
    /// `visible` decides which rooms the caller may see (others are left out of the page, which may
    /// then hold fewer than `limit`).
    public func page(
        after: RoomID?,
        limit: Int,
        maxBytes: Int,
        visible: (Room) -> Bool = { $0.visibility == .public }
    ) async throws(ChatError) -> (rooms: [Room], more: Bool, next: RoomID?) {
        do {
            var start: UInt64 = 0
            if let after {
                // A room the caller may not see is no cursor either (it would tell that the id exists).
                guard let cursor = try await rooms.confirmedValue(ChatNames.roomKey(after)),
                    let room = try? ChatJSON.decode(Room.self, from: cursor.value), visible(room)
                else {
                    throw ChatError(.invalidRequest, "after: no room \(after) (give the next of the previous page)")
                }
                start = cursor.revision
            }
            // Rooms the caller may not see are skipped, and reading goes on until the page is full and
            // one more visible room shows that more follow: a short page would tell where hidden rooms are.
            var found: [Room] = []
            reading: while true {
                let (entries, more) = try await rooms.page(matching: ChatNames.roomKeyPattern, after: start, limit: max(limit, 64))
                for entry in entries {
                    guard let room = try? ChatJSON.decode(Room.self, from: entry.value), visible(room) else { continue }
                    found.append(room)
                    if found.count > limit { break reading }
                }
                guard more, let last = entries.last else { break }
                start = last.revision
            }
            var candidates = Array(found.prefix(limit))
            if !candidates.isEmpty {
                var counts: [String: Int] = [:]
                for key in try await members.storedKeys(matching: ">") {
                    if let dot = key.firstIndex(of: ".") { counts[String(key[..<dot]), default: 0] += 1 }
                }
                for index in candidates.indices { candidates[index].memberCount = counts[candidates[index].id.rawValue] ?? 0 }
            }
            let kept = PageCut.fitting(candidates, maxBytes: maxBytes)
            let page = Array(candidates.prefix(kept))
            let hasMore = found.count > limit || kept < candidates.count
            let sorted = page.sorted { ($0.createdAt, $0.name) < ($1.createdAt, $1.name) }
            return (sorted, hasMore, hasMore ? page.last?.id : nil)
        } catch {
            throw ChatStorage.chatError(error)
        }
    }

    private static func exists(_ name: RoomName, _ room: Room) -> ChatError {
        ChatError(.roomExists, "a room named '\(name.rawValue)' already exists", room: room)
    }

    /// The room a name entry points to; repairs a room record lost to a crash between the two writes.
    private func room(for entry: KeyValueEntry, name: RoomName) async throws(NATSError) -> Room {
        guard let id = RoomID(String(decoding: entry.value, as: UTF8.self)) else {
            throw NATSError(.protocolError, message: "corrupt room name entry \(entry.key)")
        }
        if let room = try await load(id) { return try await counted(room) }
        let createdAt = ChatTime.format(Date(timeIntervalSince1970: Double(entry.createdNanoseconds) / 1e9))
        let repaired = Room(id: id, name: name.rawValue, createdAt: createdAt)
        try await rooms.put(ChatNames.roomKey(id), ChatJSON.encode(repaired))
        return repaired
    }

    private func load(_ id: RoomID, fresh: Bool = false) async throws(NATSError) -> Room? {
        let now = ContinuousClock.now
        if !fresh, let cached = known.withLock({ $0[id] }), now - cached.readAt < Self.ttl { return cached.room }
        guard let entry = try await rooms.confirmedValue(ChatNames.roomKey(id)),
            let room = try? ChatJSON.decode(Room.self, from: entry.value)
        else {
            _ = known.withLock { $0.removeValue(forKey: id) }
            return nil
        }
        remember(room, at: now)
        return room
    }

    private func remember(_ room: Room, at now: ContinuousClock.Instant = .now) {
        known.withLock { known in
            if known.count >= 100_000 { known.removeAll(keepingCapacity: true) }
            known[room.id] = (room.record, now)
        }
    }

    private func counted(_ room: Room) async throws(NATSError) -> Room {
        var room = room
        room.memberCount = try await members.storedKeys(matching: ChatNames.memberPattern(room.id)).count
        return room
    }
}
