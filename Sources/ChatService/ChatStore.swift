import ChatCore
import Foundation
import Logging
import Metrics
import NATS
import Synchronization

/// All chat state lives in JetStream and KV; this type is the only code that writes it.
///
/// - Rooms: KV `chat_rooms` (`id.<room>` → room, `name.<hex(lowercased name)>` → room id, for uniqueness).
/// - Members: KV `chat_members` (`<room>.<user>` → member with the gateway that holds the connection).
/// - Messages: stream `CHAT_EVENTS`, subject `chat.room.<room>.msg`, kept per room by
///   `max_msgs_per_subject`; each stored message is its own MessageSent.v1 event.
/// - Per-room `seq`: the previous message's `Chat-Seq` + 1, stored with
///   `Nats-Expected-Last-Subject-Sequence`, so concurrent writers (any number of replicas) cannot
///   both take a number; the loser re-reads and retries. No in-process counter is trusted: the cache
///   below is only a hint that the server verifies on every write.
public final class ChatStore: Sendable {
    struct Position: Sendable {
        var streamSequence: UInt64
        var roomSeq: UInt64
    }

    struct IdempotencyRecord: Codable, JSONWritable {
        var messageID: String
        var seq: UInt64
        var streamSequence: UInt64
        enum CodingKeys: String, CodingKey {
            case seq
            case messageID = "message_id"
            case streamSequence = "stream_seq"
        }

        func write(to writer: inout JSONWriter) {
            writer.beginObject()
            writer.key("message_id"); writer.string(messageID)
            writer.key("seq"); writer.number(seq)
            writer.key("stream_seq"); writer.number(streamSequence)
            writer.endObject()
        }
    }

    struct GatewayRecord: Codable {
        var gatewayID: String
        var lastSeenMilliseconds: Int64
        var connections: Int
        /// Set by the presence sweeper when it removed this gateway's members: its next heartbeat is
        /// told to re-join them (the bucket's TTL removes records of gateways that never come back).
        var expired: Bool?
        enum CodingKeys: String, CodingKey {
            case connections, expired
            case gatewayID = "gateway_id"
            case lastSeenMilliseconds = "last_seen_ms"
        }
    }

    let connection: NATSConnection
    let js: JetStream
    let rooms: KeyValue
    let members: KeyValue
    let idempotency: KeyValue
    let gateways: KeyValue
    let leases: KeyValue
    let configuration: ChatServiceConfiguration
    let logger: Logger
    /// What this replica remembers, all behind one lock: rooms (never change once created), each room's
    /// last position (a hint the server verifies on every write), when each gateway was last recorded
    /// alive from a join, and memberships seen in KV recently (see `membershipCacheTTL`).
    private struct Caches {
        var rooms: [RoomID: Room] = [:]
        var positions: [RoomID: Position] = [:]
        var gatewaysTouched: [GatewayID: ContinuousClock.Instant] = [:]
        var knownMembers: [String: ContinuousClock.Instant] = [:]
        var memberCounts: [RoomID: (count: Int, readAt: ContinuousClock.Instant)] = [:]
        var idempotencyKeys: IdempotencyFilter
        var idempotencyLookups = IdempotencyLookups()
    }

    /// How many sends with a `client_msg_id` read the idempotency bucket and how many skipped it.
    public struct IdempotencyLookups: Sendable, Equatable {
        public var read = 0
        public var skipped = 0
        public init() {}
    }
    public var idempotencyLookups: IdempotencyLookups { caches.withLock { $0.idempotencyLookups } }
    private let caches: Mutex<Caches>
    private let roomWriters = KeyedSerializer<RoomID>()
    /// Memberships this replica saw in KV recently, so a burst of sends costs one KV read per member
    /// per `membershipCacheTTL`, not one per message. Removals by this replica drop the entry at once;
    /// a removal by another replica is seen within the TTL (the gateway also checks membership itself
    /// before it forwards a send).
    static let membershipCacheTTL: Duration = .seconds(2)

    static let membershipCacheLimit = 100_000

    /// How long a room's member count for `joined` replies is reused (see `memberCount(of:)`).
    static let memberCountTTL: Duration = .seconds(2)

    private init(
        connection: NATSConnection, rooms: KeyValue, members: KeyValue, idempotency: KeyValue, gateways: KeyValue, leases: KeyValue,
        configuration: ChatServiceConfiguration, filter: IdempotencyFilter, logger: Logger
    ) {
        self.connection = connection
        self.js = connection.jetStream
        self.rooms = rooms
        self.members = members
        self.idempotency = idempotency
        self.gateways = gateways
        self.leases = leases
        self.configuration = configuration
        self.logger = logger
        self.caches = Mutex(Caches(idempotencyKeys: filter))
    }

    /// The event stream's configuration; also used by the broadcaster's tests.
    public static func eventStreamConfiguration(_ configuration: ChatServiceConfiguration) -> StreamConfiguration {
        var stream = StreamConfiguration(name: ChatNames.eventStream, subjects: ChatNames.eventStreamSubjects)
        stream.description = "nats-chat messages (MessageSent.v1, the history) and room events"
        stream.maxMessagesPerSubject = Int64(configuration.retentionPerRoom)
        stream.duplicateWindow = configuration.duplicateWindow.inNanoseconds
        stream.replicas = configuration.replicas
        stream.allowDirect = true
        stream.maxMessageSize = Int32(configuration.maxContentBytes * 2 + 4096)
        return stream
    }

    /// Creates (or updates) the stream and buckets, then returns the store.
    public static func open(connection: NATSConnection, configuration: ChatServiceConfiguration, logger: Logger) async throws(NATSError) -> ChatStore {
        let events = try await connection.jetStream.createOrUpdateStream(eventStreamConfiguration(configuration))
        func bucket(_ name: String, history: Int = 1, ttl: Duration? = nil) async throws(NATSError) -> KeyValue {
            var config = KeyValueConfiguration(bucket: name, history: history, ttl: ttl)
            config.replicas = configuration.replicas
            return try await connection.keyValue(config)
        }
        let idempotency = try await bucket(ChatNames.idempotencyBucket, ttl: configuration.idempotencyTTL)
        // The idempotency filter works with the settings the stream and bucket actually have (an existing
        // bucket keeps its TTL; another replica may have set another duplicate window): the longer TTL,
        // the shorter window. A bucket without a TTL keeps records for good.
        let bucketTTL = try await connection.jetStream.streamInfo("KV_" + ChatNames.idempotencyBucket).config.maxAge
        let filter = IdempotencyFilter(
            ttl: .nanoseconds(bucketTTL == 0 ? Int64.max / 4 : max(bucketTTL, configuration.idempotencyTTL.inNanoseconds)),
            duplicateWindow: .nanoseconds(min(events.config.duplicateWindow, configuration.duplicateWindow.inNanoseconds))
        )
        return ChatStore(
            connection: connection,
            rooms: try await bucket(ChatNames.roomsBucket),
            members: try await bucket(ChatNames.membersBucket),
            idempotency: idempotency,
            gateways: try await bucket(ChatNames.gatewaysBucket, ttl: .seconds(3600)),
            leases: try await bucket(ChatNames.leasesBucket),
            configuration: configuration,
            filter: filter,
            logger: logger
        )
    }

    /// Errors leaving the store are ChatErrors; storage failures become `unavailable`.
    static func chatError(_ error: any Error) -> ChatError {
        switch error {
        case let error as ChatError: error
        case let error as NATSError: ChatError(.unavailable, "chat storage unavailable (\(error.kind.rawValue))")
        default: ChatError(.internal, "internal error")
        }
    }

    // MARK: Rooms

    public func createRoom(name: RoomName) async throws(ChatError) -> Room {
        do {
            let nameKey = ChatNames.roomNameKey(name)
            if let existing = try await rooms.value(nameKey) {
                let room = try await roomForNameEntry(existing, name: name)
                throw ChatError(.roomExists, "a room named '\(name.rawValue)' already exists", room: room)
            }
            // CHAT_MAX_ROOMS: counted from the bucket's keys, so replicas creating rooms at the same
            // moment can overshoot by the number of concurrent creates (documented in the README).
            if configuration.maxRooms > 0 {
                // Rooms are never deleted, so the bucket's subject index counts them in one request.
                let count = try await rooms.storedKeys(matching: "id.*").count
                if count >= configuration.maxRooms {
                    throw ChatError(.roomLimitReached, "this server already has \(count) rooms, the limit (\(configuration.maxRooms)); no new rooms can be created")
                }
            }
            let now = ChatTime.now()
            let room = Room(id: RoomID.random(), name: name.rawValue, createdAt: now.text)
            // nil: another replica created the same name a moment ago.
            let nameTaken = try await rooms.createIfAbsent(nameKey, Array(room.id.rawValue.utf8)) == nil
            if nameTaken, let existing = try await rooms.value(nameKey) {
                let room = try await roomForNameEntry(existing, name: name)
                throw ChatError(.roomExists, "a room named '\(name.rawValue)' already exists", room: room)
            }
            try await rooms.put(ChatNames.roomKey(room.id), ChatJSON.encode(room))
            caches.withLock { $0.rooms[room.id] = room }
            var headers = NATSHeaders()
            headers[ChatNames.eventTypeHeader] = ChatEventType.roomCreated.rawValue
            _ = try await js.publish(ChatNames.roomCreatedSubject, payload: ChatJSON.encode(room), headers: headers, options: .init(messageID: "room-created:\(room.id)"))
            logger.info("room created", metadata: ["room_id": "\(room.id)", "name": "\(room.name)"])
            return room
        } catch {
            throw Self.chatError(error)
        }
    }

    /// The room a name entry points to; repairs a room record lost to a crash between the two writes.
    private func roomForNameEntry(_ entry: KeyValueEntry, name: RoomName) async throws(NATSError) -> Room {
        guard let id = RoomID(String(decoding: entry.value, as: UTF8.self)) else {
            throw NATSError(.protocolError, message: "corrupt room name entry \(entry.key)")
        }
        if let room = try await loadRoom(id) { return try await withMemberCount(room) }
        let repaired = Room(id: id, name: name.rawValue, createdAt: ChatTime.format(Date(timeIntervalSince1970: Double(entry.createdNanoseconds) / 1e9)))
        try await rooms.put(ChatNames.roomKey(id), ChatJSON.encode(repaired))
        return repaired
    }

    private func loadRoom(_ id: RoomID) async throws(NATSError) -> Room? {
        if let cached = caches.withLock({ $0.rooms[id] }) { return cached }
        guard let entry = try await rooms.confirmedValue(ChatNames.roomKey(id)), let room = try? ChatJSON.decode(Room.self, from: entry.value) else { return nil }
        // Rooms never change after creation, so a positive lookup can be cached for good.
        caches.withLock { $0.rooms[id] = room }
        return room
    }

    public func room(_ id: RoomID, withMembers: Bool = false) async throws(ChatError) -> Room {
        do {
            guard let room = try await loadRoom(id) else { throw ChatError(.roomNotFound, "room \(id) does not exist") }
            return withMembers ? try await withMemberCount(room) : room
        } catch {
            throw Self.chatError(error)
        }
    }

    private func withMemberCount(_ room: Room) async throws(NATSError) -> Room {
        var room = room
        room.memberCount = try await members.storedKeys(matching: ChatNames.memberPattern(room.id)).count
        return room
    }

    public func listRooms() async throws(ChatError) -> [Room] {
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
            throw Self.chatError(error)
        }
    }

    // MARK: Membership

    public func join(room id: RoomID, user: UserID, username: Username, gateway: GatewayID) async throws(ChatError) -> ServiceAPI.JoinResult {
        let room = try await room(id)
        do {
            let now = ChatTime.now()
            let member = Member(userID: user, username: username.rawValue, gatewayID: gateway, joinedAt: now.text, joinedAtMilliseconds: now.milliseconds)
            // nil: already a member; joining again changes nothing and emits nothing.
            let joined = try await members.createIfAbsent(ChatNames.memberKey(id, user), ChatJSON.encode(member)) != nil
            if joined {
                // A join is also a sign of life of its gateway, so a gateway that dies before its first
                // heartbeat still has a record for presence expiry to find. Once a second is plenty.
                let now = ContinuousClock.now
                let stale = caches.withLock { caches in
                    guard let last = caches.gatewaysTouched[gateway], now - last < .seconds(1) else {
                        caches.gatewaysTouched[gateway] = now
                        return true
                    }
                    return false
                }
                if stale { try await touchGateway(gateway, connections: nil) }
                try await publishPresence(.userJoined, room: id, user: user, username: username.rawValue, reason: nil)
            }
            // Read, not the cached hint: another replica may have stored messages this one has not
            // seen, and a stale `last_seq` left a joining member without them until a later message
            // revealed the gap (a chaos run ended with 3 such messages missing: no later message came).
            let position = try await position(of: id, fresh: true)
            if joined { adjustMemberCount(of: id, by: 1) }
            var counted = room
            counted.memberCount = try await memberCount(of: id)
            return ServiceAPI.JoinResult(room: counted, lastSeq: position.roomSeq, joined: joined)
        } catch {
            throw Self.chatError(error)
        }
    }

    /// The room's member count for a `joined` reply. Counting reads the members bucket's subject
    /// index, and on nats-server 2.9 that walks every member key of every room (~2 ms of server CPU
    /// per join at 15,000 members: a join storm was quadratic, nats-server at 80 % for 400 joins/s).
    /// So a count is read at most once per `memberCountTTL` per room and adjusted meanwhile by this
    /// replica's own joins and leaves; other replicas' show within the TTL. Exact counts: `GET
    /// /api/v1/rooms/:id` and the room list.
    func memberCount(of id: RoomID) async throws(NATSError) -> Int {
        let now = ContinuousClock.now
        if let cached = caches.withLock({ $0.memberCounts[id] }), now - cached.readAt < Self.memberCountTTL { return cached.count }
        let count = try await members.storedKeys(matching: ChatNames.memberPattern(id)).count
        caches.withLock { caches in
            if caches.memberCounts.count >= Self.membershipCacheLimit { caches.memberCounts.removeAll(keepingCapacity: true) }
            caches.memberCounts[id] = (count, now)
        }
        return count
    }

    private func adjustMemberCount(of id: RoomID, by delta: Int) {
        caches.withLock { caches in
            guard var cached = caches.memberCounts[id] else { return }
            cached.count = max(0, cached.count + delta)
            caches.memberCounts[id] = cached
        }
    }

    public func leave(room id: RoomID, user: UserID, reason: String) async throws(ChatError) -> ServiceAPI.LeaveResult {
        _ = try await room(id)
        do {
            return ServiceAPI.LeaveResult(roomID: id, left: try await removeMember(room: id, user: user, reason: reason))
        } catch {
            throw Self.chatError(error)
        }
    }

    /// Deletes the membership (compare-and-set, so only one remover emits UserLeft) and emits the event.
    /// `only`: the record is removed only if it still satisfies this when read (a sweep decided on an
    /// older read, and the member may have joined again since).
    func removeMember(room id: RoomID, user: UserID, reason: String, only: (Member) -> Bool = { _ in true }) async throws(NATSError) -> Bool {
        let key = ChatNames.memberKey(id, user)
        caches.withLock { $0.knownMembers[key] = nil }
        guard let entry = try await members.confirmedValue(key), let member = try? ChatJSON.decode(Member.self, from: entry.value), only(member) else { return false }
        // Emptying the value by compare-and-set first: of two concurrent removers only one gets past here.
        guard try await members.updateIfRevision(key, [], revision: entry.revision) != nil else { return false }
        // Erased, not deleted: no delete marker stays behind, so counting a room's members is one
        // look at the bucket's subject index (`storedKeys`), not a read of every member.
        try await members.erase(key)
        adjustMemberCount(of: id, by: -1)
        try await publishPresence(.userLeft, room: id, user: user, username: member.username, reason: reason)
        return true
    }

    public func members(of id: RoomID) async throws(ChatError) -> [ServiceAPI.MemberInfo] {
        _ = try await room(id)
        do {
            return try await members.values(matching: ChatNames.memberPattern(id)).compactMap { entry in
                guard !entry.value.isEmpty, let member = try? ChatJSON.decode(Member.self, from: entry.value) else { return nil }
                return ServiceAPI.MemberInfo(userID: member.userID, username: member.username)
            }.sorted { ($0.username, $0.userID.rawValue) < ($1.username, $1.userID.rawValue) }
        } catch {
            throw Self.chatError(error)
        }
    }

    public func isMember(room id: RoomID, user: UserID) async throws(ChatError) -> Bool {
        let key = ChatNames.memberKey(id, user)
        let now = ContinuousClock.now
        if let seen = caches.withLock({ $0.knownMembers[key] }), now - seen < Self.membershipCacheTTL { return true }
        do {
            guard let entry = try await members.confirmedValue(key), !entry.value.isEmpty else { return false }
            caches.withLock { caches in
                if caches.knownMembers.count >= Self.membershipCacheLimit { caches.knownMembers.removeAll(keepingCapacity: true) }
                caches.knownMembers[key] = now
            }
            return true
        } catch {
            throw Self.chatError(error)
        }
    }

    private func publishPresence(_ type: ChatEventType, room: RoomID, user: UserID, username: String, reason: String?) async throws(NATSError) {
        let event = PresenceEvent(roomID: room, userID: user, username: username, timestamp: ChatTime.now().text, reason: reason)
        var headers = NATSHeaders()
        headers[ChatNames.eventTypeHeader] = type.rawValue
        headers[ChatNames.roomHeader] = room.rawValue
        _ = try await js.publish(ChatNames.presenceSubject(room), payload: ChatJSON.encode(event), headers: headers)
    }

    // MARK: Messages

    /// The room's last message position: the cached hint, or with `fresh` (or nothing cached) read from
    /// the stream.
    private func position(of room: RoomID, fresh: Bool = false) async throws(NATSError) -> Position {
        if !fresh, let cached = caches.withLock({ $0.positions[room] }) { return cached }
        let position: Position
        if let last = try await js.lastMessage(stream: ChatNames.eventStream, subject: ChatNames.messageSubject(room)) {
            position = Position(streamSequence: last.sequence, roomSeq: Self.roomSeq(last))
        } else {
            position = Position(streamSequence: 0, roomSeq: 0)
        }
        return caches.withLock { caches in
            // A writer of this replica may have moved on meanwhile: keep the newer position.
            if let cached = caches.positions[room], cached.roomSeq > position.roomSeq { return cached }
            caches.positions[room] = position
            return position
        }
    }

    static func roomSeq(_ message: JetStream.StoredMessage) -> UInt64 {
        message.headers[ChatNames.roomSeqHeader].flatMap(UInt64.init) ?? 0
    }

    public func send(room id: RoomID, user: UserID, username: Username, content: String, clientMessageID: ClientMessageID?) async throws(ChatError) -> ServiceAPI.SendResult {
        try MessageContent.validate(content, maxBytes: configuration.maxContentBytes)
        _ = try await room(id)
        guard try await isMember(room: id, user: user) else { throw ChatError(.notMember, "join room \(id) before sending to it") }
        do {
            let idempotencyKey = clientMessageID.map { ChatNames.idempotencyKey(id, username, $0) }
            var skippedAt: ContinuousClock.Instant?
            if let idempotencyKey {
                if mayHaveRecord(idempotencyKey) {
                    if let (result, _) = try await recordedResult(idempotencyKey) { return result }
                } else {
                    skippedAt = .now
                }
            }
            let (result, streamSequence) = try await roomWriters.run(id) {
                // The skip was decided against the proof's age at that moment; a send that waited long
                // for its room's writer decides again (the window counts from its publish).
                if let idempotencyKey, let skippedAt, ContinuousClock.now - skippedAt > .seconds(5),
                   self.mayHaveRecord(idempotencyKey), let recorded = try await self.recordedResult(idempotencyKey) {
                    return recorded
                }
                return try await self.append(room: id, user: user, username: username, content: content, clientMessageID: clientMessageID, idempotencyKey: idempotencyKey)
            }
            // For retries after JetStream's duplicate window (CHAT_DUPLICATE_WINDOW_MS, 2 min): recorded
            // after the room's writer is released and without waiting for the store's acknowledgement
            // (the reply does not wait a round trip for it); a retry within the window is caught by
            // JetStream itself, so the record only has to land within the window.
            if let idempotencyKey, !result.duplicate {
                let record = IdempotencyRecord(messageID: result.message.messageID, seq: result.message.seq, streamSequence: streamSequence)
                do {
                    try idempotency.putWithoutAck(idempotencyKey, ChatJSON.encode(record))
                    if configuration.idempotencyFilter {
                        let epoch = connection.reconnects
                        if let probe = caches.withLock({ $0.idempotencyKeys.probeToWrite(now: .now, epoch: epoch) }) {
                            try idempotency.putWithoutAck(probe, [])
                        }
                    }
                } catch {
                    logger.warning("idempotency record not written", metadata: ["room_id": "\(id)", "error": "\(error)"])
                }
            }
            return result
        } catch {
            throw Self.chatError(error)
        }
    }

    /// The original send's result (and its stream sequence) when the bucket holds a record for the key.
    private func recordedResult(_ key: String) async throws(NATSError) -> (ServiceAPI.SendResult, UInt64)? {
        guard let record = try await idempotency.value(key),
              let original = try? JSONDecoder().decode(IdempotencyRecord.self, from: Data(record.value)),
              let stored = try await storedMessage(at: original.streamSequence) else { return nil }
        return (ServiceAPI.SendResult(message: stored, duplicate: true), original.streamSequence)
    }

    private static let idempotencyReads = Counter(label: "chat_service_idempotency_lookups_total", dimensions: [("outcome", "read")])
    private static let idempotencySkips = Counter(label: "chat_service_idempotency_lookups_total", dimensions: [("outcome", "skipped")])

    /// False when the idempotency filter proves no record exists for the key (the read is skipped).
    private func mayHaveRecord(_ key: String) -> Bool {
        let epoch = connection.reconnects
        let enabled = configuration.idempotencyFilter
        let may = caches.withLock { caches in
            let may = !enabled || caches.idempotencyKeys.mayHold(key, now: .now, epoch: epoch)
            if may { caches.idempotencyLookups.read += 1 } else { caches.idempotencyLookups.skipped += 1 }
            return may
        }
        (may ? Self.idempotencyReads : Self.idempotencySkips).increment()
        return may
    }

    /// The idempotency follower takes the records of this long in one pull rather than one wake-up per
    /// send. A record that reaches the filter later only delays the next proof: what a lagging filter
    /// misses is newer than the proof's probe, which is JetStream's duplicate-window case anyway.
    static let followerLinger: Duration = .milliseconds(25)

    /// Feeds the idempotency filter with every record's key as it is stored (`KeyValue.followPuts`),
    /// until cancelled; after an error it starts again (replaying the bucket, which the filter tolerates).
    public func followIdempotencyRecords() async {
        while !Task.isCancelled {
            do {
                // After an error, start after what was delivered: the bucket is not replayed.
                let after = caches.withLock { $0.idempotencyKeys.newestRevision }
                try await idempotency.followPuts(after: after, linger: Self.followerLinger) { entries in
                    // In slices: sends take the same lock.
                    var start = entries.startIndex
                    while start < entries.endIndex {
                        let end = min(start + 128, entries.endIndex)
                        caches.withLock { caches in
                            for entry in entries[start..<end] {
                                caches.idempotencyKeys.delivered(entry.key, revision: entry.revision, storedNanoseconds: entry.createdNanoseconds)
                            }
                        }
                        start = end
                    }
                }
            } catch {
                logger.warning("idempotency follower failed; sends read the bucket until it is back", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: .seconds(1))
            }
        }
    }

    /// Stores the next message of the room. Called one at a time per room (see `roomWriters`).
    /// Returns the result and the message's stream sequence.
    private func append(room id: RoomID, user: UserID, username: Username, content: String, clientMessageID: ClientMessageID?, idempotencyKey: String?) async throws -> (ServiceAPI.SendResult, UInt64) {
        do {
            let messageID = makeUUID()
            let now = ChatTime.now().text
            // Within the duplicate window JetStream itself rejects a retry with the same msg id atomically.
            let dedupID = idempotencyKey.map { "c:" + $0 } ?? "m:" + messageID
            for _ in 0..<64 {
                let last = try await position(of: id)
                let message = ChatMessage(
                    messageID: messageID, roomID: id, userID: user, username: username.rawValue, content: content,
                    timestamp: now, seq: last.roomSeq + 1, clientMessageID: clientMessageID?.rawValue
                )
                var headers = NATSHeaders()
                headers[ChatNames.eventTypeHeader] = ChatEventType.messageSent.rawValue
                headers[ChatNames.roomSeqHeader] = String(message.seq)
                headers[ChatNames.roomHeader] = id.rawValue
                // nil: another writer took this seq; drop the hint and re-read the room's last message.
                guard let ack = try await publishMessage(message, headers: headers, dedupID: dedupID, expectedLast: last.streamSequence) else {
                    caches.withLock { $0.positions[id] = nil }
                    continue
                }
                if ack.duplicate, let stored = try await storedMessage(at: ack.sequence) {
                    return (ServiceAPI.SendResult(message: stored, duplicate: true), ack.sequence)
                }
                caches.withLock { caches in
                    if (caches.positions[id]?.roomSeq ?? 0) < message.seq {
                        caches.positions[id] = Position(streamSequence: ack.sequence, roomSeq: message.seq)
                    }
                }
                return (ServiceAPI.SendResult(message: message, duplicate: false), ack.sequence)
            }
            throw ChatError(.unavailable, "room \(id) is too busy, try again")
        } catch {
            throw Self.chatError(error)
        }
    }

    private func publishMessage(_ message: ChatMessage, headers: NATSHeaders, dedupID: String, expectedLast: UInt64) async throws(NATSError) -> PublishAck? {
        do {
            return try await js.publish(
                ChatNames.messageSubject(message.roomID), payload: ChatJSON.encode(message), headers: headers,
                options: .init(messageID: dedupID, expectedLastSubjectSequence: expectedLast)
            )
        } catch {
            if error.kind == .wrongLastSequence { return nil }
            throw error
        }
    }

    private func storedMessage(at sequence: UInt64) async throws(NATSError) -> ChatMessage? {
        guard let stored = try await js.message(stream: ChatNames.eventStream, sequence: sequence) else { return nil }
        return try? ChatJSON.decode(ChatMessage.self, from: stored.payload)
    }

    // MARK: History

    /// Newest `limit` messages before `before` (or after `after`), oldest first.
    ///
    /// Cost does not grow with the room's size: the first and last messages of the room's subject are
    /// direct gets; the page start is found by a binary search over stream sequences (each probe a
    /// `next_by_subj` direct get, O(log n) probes, usually one because a room's sequences are dense);
    /// then the page is read forward.
    public func history(room id: RoomID, limit requested: Int?, before: UInt64?, after: UInt64?) async throws(ChatError) -> ServiceAPI.HistoryResult {
        _ = try await room(id)
        let limit = UInt64(min(max(requested ?? configuration.historyDefaultLimit, 1), configuration.historyMaxLimit))
        do {
            let subject = ChatNames.messageSubject(id)
            let stream = ChatNames.eventStream
            // The room's newest and oldest message, both at once.
            async let newestMessage = js.lastMessage(stream: stream, subject: subject)
            async let oldestMessage = js.directGet(stream: stream, sequence: 1, nextBySubject: subject)
            guard let last = try await newestMessage, let first = try await oldestMessage else {
                return ServiceAPI.HistoryResult(roomID: id, messages: [], hasMore: false, lastSeq: 0)
            }
            let newest = Self.roomSeq(last)
            let oldest = Self.roomSeq(first)
            let lower: UInt64, upper: UInt64, hasMore: Bool
            if let after {
                lower = max(after &+ 1, oldest)
                upper = min(newest, lower &+ limit - 1)
                hasMore = upper < newest
            } else {
                upper = min(newest, (before ?? UInt64.max) &- 1)
                lower = max(oldest, upper >= limit ? upper - limit + 1 : 1)
                hasMore = lower > oldest
            }
            guard upper >= lower, upper >= oldest, lower <= newest else {
                return ServiceAPI.HistoryResult(roomID: id, messages: [], hasMore: false, lastSeq: newest)
            }
            guard let start = try await locate(lower, subject: subject, first: first, oldest: oldest, last: last, newest: newest) else {
                return ServiceAPI.HistoryResult(roomID: id, messages: [], hasMore: false, lastSeq: newest)
            }
            var messages: [ChatMessage] = []
            let stored = try await js.messages(stream: stream, subject: subject, from: start, limit: Int(upper - lower + 1))
            for item in stored {
                guard let message = try? ChatJSON.decode(ChatMessage.self, from: item.payload), message.seq <= upper else { break }
                messages.append(message)
            }
            return ServiceAPI.HistoryResult(roomID: id, messages: messages, hasMore: hasMore, lastSeq: newest)
        } catch {
            throw Self.chatError(error)
        }
    }

    /// Stream sequence of the room's message with `seq == target` (oldest ≤ target ≤ newest).
    private func locate(_ target: UInt64, subject: String, first: JetStream.StoredMessage, oldest: UInt64, last: JetStream.StoredMessage, newest: UInt64) async throws(NATSError) -> UInt64? {
        if target == oldest { return first.sequence }
        if target == newest { return last.sequence }
        // Each room message has its own stream sequence, so S(target) lies within [low, high].
        var low = first.sequence + (target - oldest)
        var high = last.sequence - (newest - target)
        // In a room with no interleaved traffic the low bound is exactly right: one probe.
        var probe = low
        while low <= high {
            guard let found = try await js.directGet(stream: ChatNames.eventStream, sequence: probe, nextBySubject: subject) else { return nil }
            let seq = Self.roomSeq(found)
            if seq == target { return found.sequence }
            if seq < target {
                low = found.sequence + 1
            } else {
                high = probe - 1  // the first room message at or after `probe` is already past the target
            }
            guard low <= high else { break }
            probe = low + (high - low) / 2
        }
        return nil
    }

    // MARK: Presence

    private func gatewayRecord(_ gateway: GatewayID) async throws(NATSError) -> GatewayRecord? {
        guard let entry = try await gateways.value(ChatNames.gatewayKey(gateway)) else { return nil }
        return try? JSONDecoder().decode(GatewayRecord.self, from: Data(entry.value))
    }

    /// Records a sign of life. From a join (`connections` nil) an expired record is left as it is, so
    /// the gateway's next heartbeat still learns that its other members were removed.
    func touchGateway(_ gateway: GatewayID, connections: Int?) async throws(NATSError) {
        if connections == nil, try await gatewayRecord(gateway)?.expired == true { return }
        let record = GatewayRecord(gatewayID: gateway.rawValue, lastSeenMilliseconds: ChatTime.now().milliseconds, connections: connections ?? -1)
        try await gateways.put(ChatNames.gatewayKey(gateway), Array((try? JSONEncoder().encode(record)) ?? Data()))
    }

    /// Records the gateway as alive. Returns true when the presence sweeper had declared it dead and
    /// removed its members (or this is its first sign of life): the gateway must join them again.
    public func heartbeat(gateway: GatewayID, connections: Int) async throws(ChatError) -> Bool {
        do {
            let record = try await gatewayRecord(gateway)
            try await touchGateway(gateway, connections: connections)
            return record == nil || record?.expired == true
        } catch {
            throw Self.chatError(error)
        }
    }

    /// A live gateway's statement of what it holds (`ServiceAPI.PresenceSync`): removes its member
    /// records older than `presenceSyncGrace` that the statement does not list — in `room` the users
    /// not in `users`; without `room`, every room not in `rooms` — of the users (or rooms) whose id
    /// starts with `partition` ("" for all). Returns how many were removed.
    public func syncPresence(gateway: GatewayID, room: RoomID?, users: Set<UserID>, rooms: Set<RoomID>, partition: String = "", nowMilliseconds: Int64) async throws(ChatError) -> Int {
        let cutoff = nowMilliseconds - configuration.presenceSyncGrace.inMilliseconds
        func isStale(_ member: Member, in memberRoom: RoomID) -> Bool {
            guard member.gatewayID == gateway, member.joinedAtMilliseconds < cutoff else { return false }
            if let room {
                return room == memberRoom && member.userID.rawValue.hasPrefix(partition) && !users.contains(member.userID)
            }
            return memberRoom.rawValue.hasPrefix(partition) && !rooms.contains(memberRoom)
        }
        do {
            var removed = 0
            for entry in try await members.values(matching: room.map(ChatNames.memberPattern) ?? ">") {
                let parts = entry.key.split(separator: ".")
                guard !entry.value.isEmpty, parts.count == 2, let memberRoom = RoomID(String(parts[0])),
                      let member = try? ChatJSON.decode(Member.self, from: entry.value), isStale(member, in: memberRoom) else { continue }
                if try await removeMember(room: memberRoom, user: member.userID, reason: "presence_sync", only: { isStale($0, in: memberRoom) }) {
                    removed += 1
                }
            }
            if removed > 0 {
                logger.notice("presence sync removed members the gateway does not hold", metadata: [
                    "gateway_id": "\(gateway)", "room_id": "\(room.map(\.rawValue) ?? "*")", "partition": "\(partition.isEmpty ? "*" : partition)", "members": "\(removed)",
                ])
            }
            return removed
        } catch {
            throw Self.chatError(error)
        }
    }

    /// Removes every member held by a gateway that stopped heartbeating, emitting UserLeft for each.
    /// Run by the presence leader only. Returns how many members were removed.
    ///
    /// `reconcile` also checks every member against the gateway records, not only the members of
    /// gateways that just expired: a member of a gateway declared dead earlier (tombstone) that joined
    /// before the tombstone, or of a gateway with no record at all, is stale. Such records come back
    /// when a delete is lost — nats-server 2.12/2.15 resurrect purged KV entries written before one
    /// crash when it crashes again (README, "Presence") — so the leader reconciles after a NATS
    /// reconnect and every `presenceReconcileInterval`.
    @discardableResult
    public func sweepExpiredGateways(nowMilliseconds: Int64, reconcile: Bool = false) async throws(NATSError) -> Int {
        let timeout = configuration.presenceTimeout.inMilliseconds
        var dead: Set<String> = []
        var alive: Set<String> = []
        var tombstones: [String: Int64] = [:]
        // Every sweep (each second): read without creating a consumer (see `valuesOfStoredKeys`).
        for entry in try await gateways.valuesOfStoredKeys(matching: ">") {
            guard let record = try? JSONDecoder().decode(GatewayRecord.self, from: Data(entry.value)) else { continue }
            if record.expired == true {
                tombstones[entry.key] = record.lastSeenMilliseconds
            } else if record.lastSeenMilliseconds + timeout < nowMilliseconds {
                dead.insert(entry.key)
            } else {
                alive.insert(entry.key)
            }
        }
        guard !dead.isEmpty || reconcile else { return 0 }
        /// Stale: held by a gateway that just expired, or (reconciling) by one declared dead before the
        /// member joined, or by one with no record that would have beaten by now.
        func isStale(_ member: Member) -> Bool {
            let gateway = member.gatewayID.rawValue
            if alive.contains(gateway) { return false }
            if dead.contains(gateway) { return true }
            guard reconcile else { return false }
            if let declaredDead = tombstones[gateway] { return member.joinedAtMilliseconds < declaredDead }
            return member.joinedAtMilliseconds + timeout < nowMilliseconds
        }
        var removed = 0
        for entry in try await members.values(matching: ">") {
            guard !entry.value.isEmpty, let member = try? ChatJSON.decode(Member.self, from: entry.value), isStale(member) else { continue }
            let parts = entry.key.split(separator: ".")
            guard parts.count == 2, let room = RoomID(String(parts[0])) else { continue }
            let joinedAt = member.joinedAtMilliseconds
            if try await removeMember(room: room, user: member.userID, reason: "gateway_expired", only: { $0.gatewayID == member.gatewayID && $0.joinedAtMilliseconds == joinedAt }) {
                removed += 1
            }
        }
        for key in dead {
            // A tombstone, not a delete: the gateway may only be cut off (a partition, a pause), and its
            // next heartbeat must learn that it has to join its members again.
            let tombstone = GatewayRecord(gatewayID: key, lastSeenMilliseconds: nowMilliseconds, connections: 0, expired: true)
            try await gateways.put(key, Array((try? JSONEncoder().encode(tombstone)) ?? Data()))
        }
        if removed > 0 { logger.notice("removed members of expired gateways", metadata: ["gateways": "\(dead.sorted())", "members": "\(removed)", "reconcile": "\(reconcile)"]) }
        return removed
    }
}
