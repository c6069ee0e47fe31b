import ChatCore
import Foundation
import Logging
import NATS
import Synchronization

/// The rooms: KV `chat_rooms` holds `id.<room>` → room and `name.<hex(lowercased name)>` → room id (the
/// name entry is created first and only once, so two replicas cannot both create one name). Rooms
/// never change once created and are never deleted, so a room read once is remembered for good.
public final class RoomDirectory: Sendable {
    let rooms: KeyValue
    /// Read only, to count members: its subject index answers a room's count in one request.
    let members: KeyValue
    let js: JetStream
    /// `CHAT_MAX_ROOMS`, 0 for no limit.
    let maxRooms: Int
    let logger: Logger
    private let known = Mutex<[RoomID: Room]>([:])

    init(rooms: KeyValue, members: KeyValue, js: JetStream, maxRooms: Int, logger: Logger) {
        self.rooms = rooms
        self.members = members
        self.js = js
        self.maxRooms = maxRooms
        self.logger = logger
    }

    public func create(name: RoomName) async throws(ChatError) -> Room {
        do {
            let nameKey = ChatNames.roomNameKey(name)
            if let existing = try await rooms.value(nameKey) {
                throw Self.exists(name, try await self.room(for: existing, name: name))
            }
            // CHAT_MAX_ROOMS: counted from the bucket's keys, so replicas creating rooms at the same
            // moment can overshoot by the number of concurrent creates (documented in docs/limits.md).
            if maxRooms > 0 {
                // Rooms are never deleted, so the bucket's subject index counts them in one request.
                let count = try await rooms.storedKeys(matching: "id.*").count
                if count >= maxRooms {
                    throw ChatError(
                        .roomLimitReached,
                        "this server already has \(count) rooms, the limit (\(maxRooms)); no new rooms can be created"
                    )
                }
            }
            let room = Room(id: RoomID.random(), name: name.rawValue, createdAt: ChatTime.now().text)
            // nil: another replica created the same name a moment ago.
            let nameTaken = try await rooms.createIfAbsent(nameKey, Array(room.id.rawValue.utf8)) == nil
            if nameTaken, let existing = try await rooms.value(nameKey) {
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

    /// Every room with its member count, oldest first.
    public func list() async throws(ChatError) -> [Room] {
        do {
            let entries = try await rooms.values(matching: "id.*")
            var counts: [String: Int] = [:]
            for key in try await members.storedKeys(matching: ">") {
                if let dot = key.firstIndex(of: ".") { counts[String(key[..<dot]), default: 0] += 1 }
            }
            return entries.compactMap { entry -> Room? in
                guard var room = try? ChatJSON.decode(Room.self, from: entry.value) else { return nil }
                room.memberCount = counts[room.id.rawValue] ?? 0
                return room
            }.sorted { ($0.createdAt, $0.name) < ($1.createdAt, $1.name) }
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
