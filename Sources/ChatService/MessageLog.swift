import ChatCore
import Logging
import NATS
import Synchronization

/// The rooms' messages: stream `CHAT_EVENTS`, subject `chat.room.<room>.msg`, kept per room by
/// `max_msgs_per_subject`; each stored message is its own MessageSent.v1 event.
///
/// Per-room `seq`: the previous message's `Chat-Seq` + 1, stored with
/// `Nats-Expected-Last-Subject-Sequence`, so concurrent writers (any number of replicas) cannot both
/// take a number; the loser re-reads and retries. No in-process counter is trusted: the positions
/// remembered here are only a hint that the server verifies on every write.
public final class MessageLog: Sendable {
    struct Position: Sendable {
        var streamSequence: UInt64
        var roomSeq: UInt64
    }

    let js: JetStream
    let configuration: ChatServiceConfiguration
    let idempotency: IdempotencyRecords
    let logger: Logger
    /// Each room's last position as this replica last saw it.
    private let positions = Mutex<[RoomID: Position]>([:])
    private let roomWriters = KeyedSerializer<RoomID>()

    init(js: JetStream, configuration: ChatServiceConfiguration, idempotency: IdempotencyRecords, logger: Logger) {
        self.js = js
        self.configuration = configuration
        self.idempotency = idempotency
        self.logger = logger
    }

    /// `content_invalid` / `content_too_long` unless the content may be sent.
    public func validate(_ content: String) throws(ChatError) {
        try MessageContent.validate(content, maxBytes: configuration.maxContentBytes)
    }

    /// The room's last `seq`, read from the stream, not the remembered hint: another replica may have
    /// stored messages this one has not seen, and a stale `last_seq` left a joining member without
    /// them until a later message revealed the gap (a chaos run ended with 3 such messages missing).
    public func lastSeq(of room: RoomID) async throws(ChatError) -> UInt64 {
        do {
            return try await position(of: room, fresh: true).roomSeq
        } catch {
            throw ChatStorage.chatError(error)
        }
    }

    /// Stores the message as the room's next (membership is the caller's check). A retry with the same
    /// `client_msg_id` in the same `scope` (default: the username) returns the original, marked duplicate.
    public func send(
        room id: RoomID,
        user: UserID,
        username: Username,
        content: String,
        clientMessageID: ClientMessageID?,
        scope: ChatNames.IdempotencyScope? = nil
    ) async throws(ChatError) -> ServiceAPI.SendResult {
        do {
            let idempotencyKey = clientMessageID.map { ChatNames.idempotencyKey(id, scope ?? .username(username), $0) }
            var skippedAt: ContinuousClock.Instant?
            if let idempotencyKey {
                if idempotency.mayHaveRecord(idempotencyKey) {
                    if let (result, _) = try await recordedResult(idempotencyKey) { return result }
                } else {
                    skippedAt = .now
                }
            }
            let (result, streamSequence) = try await roomWriters.run(id) {
                // The skip was decided against the proof's age at that moment; a send that waited long
                // for its room's writer decides again (the window counts from its publish).
                if let idempotencyKey, let skippedAt, ContinuousClock.now - skippedAt > .seconds(5),
                    self.idempotency.mayHaveRecord(idempotencyKey), let recorded = try await self.recordedResult(idempotencyKey)
                {
                    return recorded
                }
                let dedupID = idempotencyKey.map { "c:" + $0 }
                return try await self.append(
                    room: id,
                    user: user,
                    username: username,
                    content: content,
                    clientMessageID: clientMessageID,
                    dedupID: dedupID
                )
            }
            // For retries after JetStream's duplicate window (CHAT_DUPLICATE_WINDOW_MS, 2 min): recorded
            // after the room's writer is released.
            if let idempotencyKey, !result.duplicate {
                let message = result.message
                idempotency.store(idempotencyKey, .init(messageID: message.messageID, seq: message.seq, streamSequence: streamSequence))
            }
            return result
        } catch {
            throw ChatStorage.chatError(error)
        }
    }

    /// The original send's result (and its stream sequence) when the bucket holds a record for the key.
    private func recordedResult(_ key: String) async throws(NATSError) -> (ServiceAPI.SendResult, UInt64)? {
        guard let record = try await idempotency.record(key),
            let stored = try await storedMessage(at: record.streamSequence)
        else { return nil }
        return (ServiceAPI.SendResult(message: stored, duplicate: true), record.streamSequence)
    }

    /// Stores the next message of the room. Called one at a time per room (see `roomWriters`).
    /// Returns the result and the message's stream sequence.
    private func append(
        room id: RoomID,
        user: UserID,
        username: Username,
        content: String,
        clientMessageID: ClientMessageID?,
        dedupID: String?
    ) async throws -> (ServiceAPI.SendResult, UInt64) {
        let messageID = makeUUID()
        let now = ChatTime.now().text
        // Within the duplicate window JetStream itself rejects a retry with the same msg id atomically.
        let dedupID = dedupID ?? "m:" + messageID
        for _ in 0..<64 {
            let last = try await position(of: id)
            let message = ChatMessage(
                messageID: messageID,
                roomID: id,
                userID: user,
                username: username.rawValue,
                content: content,
                timestamp: now,
                seq: last.roomSeq + 1,
                clientMessageID: clientMessageID?.rawValue
            )
            var headers = NATSHeaders()
            headers[ChatNames.eventTypeHeader] = ChatEventType.messageSent.rawValue
            headers[ChatNames.roomSeqHeader] = String(message.seq)
            headers[ChatNames.roomHeader] = id.rawValue
            // nil: another writer took this seq; drop the hint and re-read the room's last message.
            guard let ack = try await publish(message, headers: headers, dedupID: dedupID, expectedLast: last.streamSequence) else {
                positions.withLock { $0[id] = nil }
                continue
            }
            if ack.duplicate, let stored = try await storedMessage(at: ack.sequence) {
                return (ServiceAPI.SendResult(message: stored, duplicate: true), ack.sequence)
            }
            positions.withLock { positions in
                if (positions[id]?.roomSeq ?? 0) < message.seq {
                    positions[id] = Position(streamSequence: ack.sequence, roomSeq: message.seq)
                }
            }
            return (ServiceAPI.SendResult(message: message, duplicate: false), ack.sequence)
        }
        throw ChatError(.unavailable, "room \(id) is too busy, try again")
    }

    private func publish(
        _ message: ChatMessage,
        headers: NATSHeaders,
        dedupID: String,
        expectedLast: UInt64
    ) async throws(NATSError) -> PublishAck? {
        do {
            return try await js.publish(
                ChatNames.messageSubject(message.roomID),
                payload: ChatJSON.encode(message),
                headers: headers,
                options: .init(messageID: dedupID, expectedLastSubjectSequence: expectedLast)
            )
        } catch {
            if error.kind == .wrongLastSequence { return nil }
            throw error
        }
    }

    func storedMessage(at sequence: UInt64) async throws(NATSError) -> ChatMessage? {
        guard let stored = try await js.message(stream: ChatNames.eventStream, sequence: sequence) else { return nil }
        return try? ChatJSON.decode(ChatMessage.self, from: stored.payload)
    }

    /// The room's last message position: the remembered hint, or with `fresh` (or nothing remembered)
    /// read from the stream.
    private func position(of room: RoomID, fresh: Bool = false) async throws(NATSError) -> Position {
        if !fresh, let cached = positions.withLock({ $0[room] }) { return cached }
        let position: Position
        if let last = try await js.lastMessage(stream: ChatNames.eventStream, subject: ChatNames.messageSubject(room)) {
            position = Position(streamSequence: last.sequence, roomSeq: Self.roomSeq(last))
        } else {
            position = Position(streamSequence: 0, roomSeq: 0)
        }
        return positions.withLock { positions in
            // A writer of this replica may have moved on meanwhile: keep the newer position.
            if let cached = positions[room], cached.roomSeq > position.roomSeq { return cached }
            positions[room] = position
            return position
        }
    }

    static func roomSeq(_ message: JetStream.StoredMessage) -> UInt64 {
        message.headers[ChatNames.roomSeqHeader].flatMap(UInt64.init) ?? 0
    }
}
