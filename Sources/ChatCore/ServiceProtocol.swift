import Foundation

/// JSON bodies of the chat-service endpoints (`chat.svc.*`). Success replies are the response type;
/// error replies are a `ChatError` body plus `Nats-Service-Error` / `Nats-Service-Error-Code` headers.
///
/// Ids arrive as plain strings and are validated by the service, so a bad id gets a precise error
/// instead of a generic decoding failure.
public enum ServiceAPI {
    public struct CreateRoom: Codable, Sendable {
        public var name: String
        /// Absent: `public` (the seed's rooms).
        public var visibility: String?
        public var topic: String?
        public init(name: String, visibility: String? = nil, topic: String? = nil) {
            (self.name, self.visibility, self.topic) = (name, visibility, topic)
        }
    }

    public struct RoomRef: Codable, Sendable {
        public var roomID: String
        public init(roomID: String) { self.roomID = roomID }
        enum CodingKeys: String, CodingKey { case roomID = "room_id" }
    }

    /// Paging of the room and member lists (see `PageRequest`).
    public enum Page {
        /// Large enough that a small deployment's list is one page, as before paging existed.
        public static let defaultLimit = 500
        public static let maxLimit = 1000
        /// The most bytes of items a page holds, whatever `limit` says: far below NATS's default
        /// 1 MB `max_payload` (a reply above the connection's `max_payload` can never be sent).
        public static let maxBytes = 512 * 1024
    }

    /// `limit` items after the cursor `after` (the `next` of the previous page).
    public struct ListRooms: Codable, Sendable {
        public var limit: Int?
        public var after: String?
        public init(limit: Int? = nil, after: String? = nil) { (self.limit, self.after) = (limit, after) }
    }

    /// `total` counts the rooms of this page. `has_more` and `next` are present only when the request
    /// was paged (`limit` or `after`) or more rooms follow, so an unpaged reply for a small list is
    /// what it was before paging.
    public struct RoomList: Codable, Sendable {
        public var rooms: [Room]
        public var total: Int
        public var hasMore: Bool?
        public var next: String?
        public init(rooms: [Room], hasMore: Bool? = nil, next: String? = nil) {
            (self.rooms, self.total, self.hasMore, self.next) = (rooms, rooms.count, hasMore, next)
        }
        enum CodingKeys: String, CodingKey {
            case rooms, total, next
            case hasMore = "has_more"
        }
    }

    public struct ListMembers: Codable, Sendable {
        public var roomID: String
        public var limit: Int?
        public var after: String?
        public init(roomID: String, limit: Int? = nil, after: String? = nil) {
            (self.roomID, self.limit, self.after) = (roomID, limit, after)
        }
        enum CodingKeys: String, CodingKey {
            case limit, after
            case roomID = "room_id"
        }
    }

    public struct Join: Codable, Sendable {
        public var roomID: String
        public var userID: String
        public var username: String
        public var gatewayID: String
        public init(roomID: String, userID: String, username: String, gatewayID: String) {
            self.roomID = roomID
            self.userID = userID
            self.username = username
            self.gatewayID = gatewayID
        }
        enum CodingKeys: String, CodingKey {
            case username
            case roomID = "room_id"
            case userID = "user_id"
            case gatewayID = "gateway_id"
        }
    }

    public struct JoinResult: Codable, Sendable {
        public var room: Room
        /// The room's newest `seq` when the join was recorded (0: no messages yet).
        public var lastSeq: UInt64
        /// False when the user was already a member (no event was emitted).
        public var joined: Bool
        /// The joining user is muted here (until `mutedUntilMilliseconds`, or until lifted): the gateway
        /// then stops the user's typing notices itself (they never reach the chat-service).
        public var muted: Bool?
        public var mutedUntilMilliseconds: Int64?
        public init(room: Room, lastSeq: UInt64, joined: Bool, mute: Restriction? = nil) {
            self.room = room
            self.lastSeq = lastSeq
            self.joined = joined
            if let mute { (muted, mutedUntilMilliseconds) = (true, mute.untilMilliseconds) }
        }
        enum CodingKeys: String, CodingKey {
            case room, joined, muted
            case lastSeq = "last_seq"
            case mutedUntilMilliseconds = "muted_until_ms"
        }
    }

    public struct Leave: Codable, Sendable {
        public var roomID: String
        public var userID: String
        /// `leave` (asked by the client) or `disconnect` (socket closed).
        public var reason: String?
        public init(roomID: String, userID: String, reason: String? = nil) {
            self.roomID = roomID
            self.userID = userID
            self.reason = reason
        }
        enum CodingKeys: String, CodingKey {
            case reason
            case roomID = "room_id"
            case userID = "user_id"
        }
    }

    public struct LeaveResult: Codable, Sendable {
        public var roomID: RoomID
        public var left: Bool
        public init(roomID: RoomID, left: Bool) {
            self.roomID = roomID
            self.left = left
        }
        enum CodingKeys: String, CodingKey {
            case left
            case roomID = "room_id"
        }
    }

    /// A public room's members are who is connected (user_id, username: the seed's shape); a private or
    /// direct room's are its roster, with `role` and whether each is `online`.
    public struct MemberInfo: Codable, Sendable, Equatable {
        public var userID: UserID
        public var username: String
        public var role: RoomRole?
        public var online: Bool?
        public init(userID: UserID, username: String, role: RoomRole? = nil, online: Bool? = nil) {
            self.userID = userID
            self.username = username
            self.role = role
            self.online = online
        }
        enum CodingKeys: String, CodingKey {
            case username, role, online
            case userID = "user_id"
        }
    }

    /// `has_more` and `next` as in `RoomList`.
    public struct MemberList: Codable, Sendable {
        public var roomID: RoomID
        public var members: [MemberInfo]
        public var hasMore: Bool?
        public var next: String?
        public init(roomID: RoomID, members: [MemberInfo], hasMore: Bool? = nil, next: String? = nil) {
            (self.roomID, self.members, self.hasMore, self.next) = (roomID, members, hasMore, next)
        }
        enum CodingKeys: String, CodingKey {
            case members, next
            case roomID = "room_id"
            case hasMore = "has_more"
        }
    }

    public struct Send: Codable, Sendable {
        public var roomID: String
        public var userID: String
        public var username: String
        public var content: String
        public var clientMessageID: String?
        /// `ack_only: true` asks for a `SendAck` (ids and `seq`) instead of a `SendResult`: all a
        /// WebSocket ack needs, so the stored message is not encoded again, sent back and parsed.
        public var ackOnly: Bool?
        public init(roomID: String, userID: String, username: String, content: String, clientMessageID: String? = nil, ackOnly: Bool? = nil)
        {
            self.roomID = roomID
            self.userID = userID
            self.username = username
            self.content = content
            self.clientMessageID = clientMessageID
            self.ackOnly = ackOnly
        }
        enum CodingKeys: String, CodingKey {
            case username, content
            case roomID = "room_id"
            case userID = "user_id"
            case clientMessageID = "client_msg_id"
            case ackOnly = "ack_only"
        }
    }

    /// The reply to a `Send` with `ack_only`. Reads a full `SendResult` as well (a chat-service from
    /// before `ack_only` ignores it), so gateways and services can be upgraded in any order.
    public struct SendAck: Codable, Sendable, Equatable {
        public var messageID: String
        public var roomID: RoomID
        public var seq: UInt64
        public var duplicate: Bool
        public init(messageID: String, roomID: RoomID, seq: UInt64, duplicate: Bool) {
            self.messageID = messageID
            self.roomID = roomID
            self.seq = seq
            self.duplicate = duplicate
        }
        public init(_ result: SendResult) {
            self.init(
                messageID: result.message.messageID,
                roomID: result.message.roomID,
                seq: result.message.seq,
                duplicate: result.duplicate
            )
        }
        enum CodingKeys: String, CodingKey {
            case seq, duplicate
            case messageID = "message_id"
            case roomID = "room_id"
        }
    }

    public struct SendResult: Codable, Sendable {
        public var message: ChatMessage
        /// True when this was a retry of an earlier send with the same `client_msg_id`.
        public var duplicate: Bool
        public init(message: ChatMessage, duplicate: Bool) {
            self.message = message
            self.duplicate = duplicate
        }
    }

    public struct History: Codable, Sendable {
        public var roomID: String
        public var limit: Int?
        /// Messages with `seq` < `before` (older pages).
        public var before: UInt64?
        /// Messages with `seq` > `after` (resume / gap fill); wins over `before`.
        public var after: UInt64?
        public init(roomID: String, limit: Int? = nil, before: UInt64? = nil, after: UInt64? = nil) {
            self.roomID = roomID
            self.limit = limit
            self.before = before
            self.after = after
        }
        enum CodingKeys: String, CodingKey {
            case limit, before, after
            case roomID = "room_id"
        }
    }

    public struct HistoryResult: Codable, Sendable {
        public var roomID: RoomID
        /// Oldest first.
        public var messages: [ChatMessage]
        public var hasMore: Bool
        public var lastSeq: UInt64
        public init(roomID: RoomID, messages: [ChatMessage], hasMore: Bool, lastSeq: UInt64) {
            self.roomID = roomID
            self.messages = messages
            self.hasMore = hasMore
            self.lastSeq = lastSeq
        }
        enum CodingKeys: String, CodingKey {
            case messages
            case roomID = "room_id"
            case hasMore = "has_more"
            case lastSeq = "last_seq"
        }
    }

    public struct Heartbeat: Codable, Sendable {
        public var gatewayID: String
        public var connections: Int
        public init(gatewayID: String, connections: Int) {
            self.gatewayID = gatewayID
            self.connections = connections
        }
        enum CodingKeys: String, CodingKey {
            case connections
            case gatewayID = "gateway_id"
        }
    }

    /// A gateway's statement of the members it really holds (anti-entropy). The chat-service removes
    /// this gateway's member records that it does not list and that are older than the sync grace:
    /// records a lost delete brought back (nats-server ≥ 2.11 can resurrect purged KV entries after a
    /// second crash) or whose leave never arrived.
    /// - `roomID` + `users`: every user the gateway holds in that room;
    /// - `rooms` (no `roomID`): every room the gateway holds members in.
    /// - `partition`: the statement covers only the ids (users, or rooms) that start with this lowercase
    ///   hex prefix; records outside it are left alone. A statement too long for one request is sent as
    ///   the partitions of `plan(_:maxEntries:)`, each complete for its prefix, so any replica can apply
    ///   any of them alone.
    public struct PresenceSync: Codable, Sendable {
        /// Users (or rooms) one request may list: 20,000 UUIDs stay under NATS's 1 MB payload limit.
        public static let maxEntries = 20_000
        /// A partition is 1 to 8 lowercase hex digits: a prefix of the UUID's first group.
        public static let maxPartitionLength = 8
        public var gatewayID: String
        public var roomID: String?
        public var users: [String]?
        public var rooms: [String]?
        public var partition: String?
        /// How long before sending the gateway took the snapshot this statement lists (its monotonic
        /// clock). The partitions of one snapshot go out one after another, so a late one may describe
        /// the gateway as it was well before it arrives: the chat-service then removes only records older
        /// than the snapshot minus the sync grace, never a member who joined after the snapshot.
        public var snapshotAgeMilliseconds: Int64?
        /// A statement may be at most this old (ms); an older one would remove nothing anyway.
        public static let maxSnapshotAgeMilliseconds: Int64 = 3_600_000
        public init(
            gatewayID: String,
            roomID: String? = nil,
            users: [String]? = nil,
            rooms: [String]? = nil,
            partition: String? = nil,
            snapshotAgeMilliseconds: Int64? = nil
        ) {
            self.gatewayID = gatewayID
            self.roomID = roomID
            self.users = users
            self.rooms = rooms
            self.partition = partition
            self.snapshotAgeMilliseconds = snapshotAgeMilliseconds
        }
        enum CodingKeys: String, CodingKey {
            case users, rooms, partition
            case gatewayID = "gateway_id"
            case roomID = "room_id"
            case snapshotAgeMilliseconds = "snapshot_age_ms"
        }

        /// True for a valid partition: 1 to `maxPartitionLength` lowercase hex digits.
        public static func isValidPartition(_ text: String) -> Bool {
            let bytes = text.utf8
            return (1...maxPartitionLength).contains(bytes.count)
                && bytes.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
        }

        /// The requests that state `ids` (canonical UUIDs) with at most `maxEntries` ids each.
        public struct Plan: Equatable, Sendable {
            /// (partition, ids): nil covers every id. A partition with no ids is stated too: it says
            /// the gateway holds nothing there.
            public var statements: [Statement] = []
            /// Ids left unstated: a partition of `maxPartitionLength` digits still over the limit.
            public var skipped = 0
        }

        public struct Statement: Equatable, Sendable {
            public var partition: String?
            public var ids: [String]
        }

        /// One statement when `ids` fit one request; otherwise one per leading hex digit, split again by
        /// the next digit where a partition is still too long (so 16 requests state up to 16 ×
        /// `maxEntries` ids spread evenly, as random UUIDs are).
        public static func plan(_ ids: [String], maxEntries: Int) -> Plan {
            var plan = Plan()
            guard ids.count > maxEntries else {
                plan.statements = [Statement(partition: nil, ids: ids)]
                return plan
            }
            func split(_ ids: [String], prefix: String) {
                let digits = Array("0123456789abcdef")
                var groups = [[String]](repeating: [], count: 16)
                let position = prefix.utf8.count
                for id in ids {
                    let utf8 = id.utf8
                    let byte = utf8[utf8.index(utf8.startIndex, offsetBy: position)]
                    let digit = byte <= 0x39 ? Int(byte) - 0x30 : Int(byte) - 0x61 + 10
                    groups[digit].append(id)
                }
                for (digit, group) in groups.enumerated() {
                    let partition = prefix + String(digits[digit])
                    if group.count <= maxEntries {
                        plan.statements.append(Statement(partition: partition, ids: group))
                    } else if partition.utf8.count < maxPartitionLength {
                        split(group, prefix: partition)
                    } else {
                        plan.skipped += group.count
                    }
                }
            }
            // Only canonical UUIDs can be partitioned (their first group is 8 hex digits); others
            // cannot be stated and count as skipped.
            let valid = ids.filter { canonicalUUID($0) == $0 }
            plan.skipped = ids.count - valid.count
            split(valid, prefix: "")
            return plan
        }
    }

    public struct PresenceSyncResult: Codable, Sendable {
        public var removed: Int
        public init(removed: Int) { self.removed = removed }
    }

    public struct Ok: Codable, Sendable {
        public var ok: Bool
        public init() { ok = true }
    }

    /// The reply to a heartbeat. `rejoin`: the chat-service had no record of this gateway (it was
    /// declared dead — e.g. partitioned or paused longer than the presence timeout — and its members
    /// were removed), so the gateway must join its connected members again.
    public struct HeartbeatResult: Codable, Sendable {
        public var ok: Bool
        public var rejoin: Bool?
        public init(rejoin: Bool) {
            ok = true
            self.rejoin = rejoin
        }
    }
}

/// The JSON coders used for every chat body: fixed key order, no escaping of `/`.
public enum ChatJSON {
    public static func encode(_ value: some Encodable) -> [UInt8] {
        if let writable = value as? any JSONWritable {
            var writer = JSONWriter()
            writable.write(to: &writer)
            return writer.bytes
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Encoding our own Codable types cannot fail.
        return Array((try? encoder.encode(value)) ?? Data("{}".utf8))
    }

    public static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws(ChatError) -> T {
        if let readable = type as? any JSONReadable.Type {
            return try readable.init(json: try JSONReader.parse(bytes)) as! T
        }
        do {
            return try JSONDecoder().decode(type, from: Data(bytes))
        } catch let error as DecodingError {
            throw ChatError(.invalidRequest, describe(error))
        } catch {
            throw ChatError(.invalidRequest, "invalid JSON")
        }
    }

    /// A short human explanation of a decoding failure, naming the field.
    public static func describe(_ error: DecodingError) -> String {
        func path(_ codingPath: [any CodingKey]) -> String {
            codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
        }
        switch error {
        case .keyNotFound(let key, _): return "missing field '\(key.stringValue)'"
        case .typeMismatch(let type, let context):
            if context.codingPath.isEmpty { return "the message must be a JSON object" }
            return "field '\(path(context.codingPath))' must be \(describe(type))"
        case .valueNotFound(let type, let context): return "field '\(path(context.codingPath))' must be \(describe(type)), not null"
        case .dataCorrupted(let context):
            return context.codingPath.isEmpty
                ? "invalid JSON" : "field '\(path(context.codingPath))' is invalid: \(context.debugDescription)"
        @unknown default: return "invalid request"
        }
    }

    static func describe(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: "a string"
        case is Int.Type, is UInt64.Type, is Int64.Type: "an integer"
        case is Double.Type: "a number"
        case is Bool.Type: "a boolean"
        default: "of type \(type)"
        }
    }
}
