import ChatCore
import NATS

/// Publishes UserJoined.v1 / UserLeft.v1 to `chat.room.<room>.presence` in the event stream, from
/// where the broadcaster hands them to every gateway holding the room.
struct PresenceEvents: Sendable {
    let js: JetStream
    /// The event stream's duplicate window.
    let duplicateWindow: Duration

    func publish(_ type: ChatEventType, room: RoomID, user: UserID, username: String, reason: String?) async throws(NATSError) {
        let event = PresenceEvent(roomID: room, userID: user, username: username, timestamp: ChatTime.now().text, reason: reason)
        var headers = NATSHeaders()
        headers[ChatNames.eventTypeHeader] = type.rawValue
        headers[ChatNames.roomHeader] = room.rawValue
        _ = try await js.publish(ChatNames.presenceSubject(room), payload: ChatJSON.encode(event), headers: headers)
    }
}
