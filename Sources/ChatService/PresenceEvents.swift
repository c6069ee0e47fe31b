import ChatCore
import NATS

/// Publishes UserJoined.v1 / UserLeft.v1 to `chat.room.<room>.presence` in the event stream, from
/// where the broadcaster hands them to every gateway holding the room.
///
/// An event follows the KV change it reports: the compare-and-set on the member record decides who
/// joined or left (of concurrent joiners or removers only one), so it cannot be published first. The
/// change is not repeated by a retry (a second join finds the record, a second leave finds none), so
/// a failed publish is retried here until JetStream acknowledges it. Every attempt carries the same
/// `Nats-Msg-Id`, derived from the record's revision: an attempt that was stored although its
/// acknowledgement was lost makes the next one a duplicate that JetStream drops, so gateways never
/// see one change twice. Retries stop within half the duplicate window, where that still holds.
struct PresenceEvents: Sendable {
    let js: JetStream
    /// The event stream's duplicate window.
    let duplicateWindow: Duration
    /// Pause after the first failed attempt; doubled after each failure up to `maxRetryDelay`.
    static let firstRetryDelay: Duration = .milliseconds(50)
    static let maxRetryDelay: Duration = .seconds(1)

    /// Stores the event, retrying until acknowledged. `change`: the member key and the revision of
    /// the write that made the change, unique to it.
    func publish(
        _ type: ChatEventType,
        room: RoomID,
        user: UserID,
        username: String,
        reason: String?,
        change: (key: String, revision: UInt64)
    ) async throws(NATSError) {
        let event = PresenceEvent(roomID: room, userID: user, username: username, timestamp: ChatTime.now().text, reason: reason)
        try await store(type, room: room, payload: ChatJSON.encode(event), messageID: "\(type.rawValue):\(change.key):\(change.revision)")
    }

    /// A membership or moderation event (MemberAdded.v1 …), in the same room order as presence.
    /// `messageID` names the change (e.g. the record key and revision, or the request's unique id).
    func publish(_ type: ChatEventType, _ event: AccessEvent, messageID: String) async throws(NATSError) {
        try await store(type, room: event.roomID, payload: ChatJSON.encode(event), messageID: "\(type.rawValue):\(messageID)")
    }

    private func store(_ type: ChatEventType, room: RoomID, payload: [UInt8], messageID: String) async throws(NATSError) {
        var headers = NATSHeaders()
        headers[ChatNames.eventTypeHeader] = type.rawValue
        headers[ChatNames.roomHeader] = room.rawValue
        let options = JetStream.PublishOptions(messageID: messageID)
        let deadline = ContinuousClock.now + duplicateWindow / 2
        var delay = Self.firstRetryDelay
        while true {
            do {
                _ = try await js.publish(ChatNames.presenceSubject(room), payload: payload, headers: headers, options: options)
                return
            } catch {
                // Past the deadline a retry could be stored a second time; a cancelled task (shutdown) stops.
                guard error.kind != .invalidArgument, !Task.isCancelled, ContinuousClock.now + delay < deadline else { throw error }
            }
            // Backoff between attempts, not synchronisation: the stream or the connection is away.
            try? await Task.sleep(for: delay)
            delay = min(delay * 2, Self.maxRetryDelay)
        }
    }
}
