import ChatCore
import Foundation
import Logging
import NATS
import Synchronization

/// The rooms: KV `chat_rooms` holds `id.<room>` → room and `name.<hex(lowercased name)>` → room id (the
/// name entry is created first and only once, so two replicas cannot both create one name). Rooms
/// never change once created and are never deleted, so a room read once is remembered for good.
/// `count` is the number of rooms (`RoomSlots`).
public final class RoomDirectory: Sendable {
    let rooms: KeyValue
    /// Read only, to count members: its subject index answers a room's count in one request.
    let members: KeyValue
    let js: JetStream
    /// `CHAT_MAX_ROOMS` (0 for no limit) and the room count behind it.
    let slots: RoomSlots
    let logger: Logger
    private let known = Mutex<[RoomID: Room]>([:])

    init(rooms: KeyValue, members: KeyValue, js: JetStream, maxRooms: Int, logger: Logger) {
        self.rooms = rooms
        self.members = members
        self.js = js
        self.slots = RoomSlots(rooms: rooms, maxRooms: maxRooms, logger: logger)
        self.logger = logger
    }

    public func create(name: RoomName) async throws(ChatError) -> Room {
        do {
            let nameKey = ChatNames.roomNameKey(name)
            if let existing = try await rooms.value(nameKey) {
                throw Self.exists(name, try await self.room(for: existing, name: name))
            }
            // CHAT_MAX_ROOMS: a slot is taken before the room is written (exact across replicas).
            try await slots.take()
            let room = Room(id: RoomID.random(), name: name.rawValue, createdAt: ChatTime.now().text)
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
            try await rooms.put(ChatNames.roomKey(room.id), ChatJSON.encode(room))
            known.withLock { $0[room.id] = room }
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

    /// The room, or `room_not_found`; with `withMembers` its exact member count.
    public func room(_ id: RoomID, withMembers: Bool = false) async throws(ChatError) -> Room {
        do {
            guard let room = try await load(id) else { throw ChatError(.roomNotFound, "room \(id) does not exist") }
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
    /// Cost: the page's own room records (a consumer starting after the cursor's record), plus one
    /// read of the members bucket's subject index for the counts — that one follows the number of
    /// memberships of all rooms (docs/limits.md).
    public func page(after: RoomID?, limit: Int, maxBytes: Int) async throws(ChatError) -> (rooms: [Room], more: Bool, next: RoomID?) {
        do {
            var start: UInt64 = 0
            if let after {
                guard let cursor = try await rooms.confirmedValue(ChatNames.roomKey(after)) else {
                    throw ChatError(.invalidRequest, "after: no room \(after) (give the next of the previous page)")
                }
                start = cursor.revision
            }
            let (entries, more) = try await rooms.page(matching: ChatNames.roomKeyPattern, after: start, limit: limit)
            var counts: [String: Int] = [:]
            if !entries.isEmpty {
                for key in try await members.storedKeys(matching: ">") {
                    if let dot = key.firstIndex(of: ".") { counts[String(key[..<dot]), default: 0] += 1 }
                }
            }
            let found = entries.compactMap { entry -> Room? in
                guard var room = try? ChatJSON.decode(Room.self, from: entry.value) else { return nil }
                room.memberCount = counts[room.id.rawValue] ?? 0
                return room
            }
            let kept = PageCut.fitting(found, maxBytes: maxBytes)
            let page = Array(found.prefix(kept))
            let hasMore = more || kept < found.count
            // The cursor is the last record read (even one that did not decode), so pages always advance.
            let lastRead = entries.last.flatMap { RoomID(String($0.key.dropFirst(ChatNames.roomKeyPattern.count - 1))) }
            let next = kept < found.count ? found[kept - 1].id : lastRead
            let sorted = page.sorted { ($0.createdAt, $0.name) < ($1.createdAt, $1.name) }
            return (sorted, hasMore, hasMore ? next : nil)
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

    private func load(_ id: RoomID) async throws(NATSError) -> Room? {
        if let cached = known.withLock({ $0[id] }) { return cached }
        guard let entry = try await rooms.confirmedValue(ChatNames.roomKey(id)),
            let room = try? ChatJSON.decode(Room.self, from: entry.value)
        else { return nil }
        // Rooms never change after creation, so a positive lookup can be kept for good.
        known.withLock { $0[id] = room }
        return room
    }

    private func counted(_ room: Room) async throws(NATSError) -> Room {
        var room = room
        room.memberCount = try await members.storedKeys(matching: ChatNames.memberPattern(room.id)).count
        return room
    }
}
