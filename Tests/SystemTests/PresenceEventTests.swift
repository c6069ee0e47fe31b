import ChatCore
import ChatService
import Foundation
import NATS
import NATSTesting
import ServiceSupport
import Testing

/// UserJoined / UserLeft follow the member record's change even when publishing them fails for a
/// while: gateways learn presence only from these events, and the change itself is not repeated.
@Suite("presence events survive failed publishes")
struct PresenceEventTests {
    /// The event stream without (or again with) its presence subject: while it is off, a presence
    /// publish reaches only the test's subscriber, which never answers, so the attempt times out.
    static func takePresence(_ on: Bool, _ fixture: ChatFixture) async throws {
        var stream = ChatStorage.eventStreamConfiguration(fixture.configuration)
        if !on { stream.subjects.removeAll { $0 == "chat.room.*.presence" } }
        _ = try await fixture.client.jetStream.createOrUpdateStream(stream)
    }

    static func events(_ type: ChatEventType, room: RoomID, _ fixture: ChatFixture) async throws -> [PresenceEvent] {
        let js = fixture.client.jetStream
        let last = try await js.streamInfo(ChatNames.eventStream).state.lastSequence
        return try await js.messages(stream: ChatNames.eventStream, subject: ChatNames.presenceSubject(room), from: 1, limit: Int(last))
            .filter { $0.headers[ChatNames.eventTypeHeader] == type.rawValue }
            .map { try ChatJSON.decode(PresenceEvent.self, from: $0.payload) }
    }

    /// Stops the stream taking presence events, runs `change`, and returns its first publish attempt
    /// once it arrived (unanswered), with the stream taking presence events again.
    static func firstAttempt<T: Sendable>(
        room: RoomID,
        _ fixture: ChatFixture,
        _ change: @escaping @Sendable () async throws -> T
    ) async throws -> (NATSMessage, Task<T, any Error>) {
        try await takePresence(false, fixture)
        let attempts = try fixture.client.subscribe(ChatNames.presenceSubject(room))
        try await fixture.client.flush()
        let task = Task { try await change() }
        let first = await collect(attempts, count: 1, timeout: .seconds(20))
        attempts.unsubscribe()
        try await takePresence(true, fixture)
        return (try #require(first.first, "a publish attempt arrived"), task)
    }

    @Test func aLostPublishIsRetriedAndAStoredOneWhoseAckWasLostIsNotDoubled() async throws {
        // Publish attempts time out after a second, not five.
        let fixture = try await ChatFixture { $0.nats.requestTimeout = .seconds(1) }
        try await fixture.startReplica()
        let room = try await fixture.createRoom("outage")
        let ann = UserID.random()

        // The first UserJoined attempt is lost (nothing stored it): the join still reports the event.
        let (_, join) = try await Self.firstAttempt(room: room.id, fixture) { try await fixture.join(room.id, ann, "ann") }
        #expect(try await join.value.joined, "the join succeeds once the event is stored")
        #expect(try await Self.events(.userJoined, room: room.id, fixture).map(\.username) == ["ann"])

        // The first UserLeft attempt is stored, but its acknowledgement never reaches the chat-service
        // (the test stores it): the retry that follows must not store a second UserLeft.
        let (attempt, leave) = try await Self.firstAttempt(room: room.id, fixture) {
            let request = ServiceAPI.Leave(roomID: room.id.rawValue, userID: ann.rawValue)
            let result: ServiceAPI.LeaveResult = try await fixture.chat.call(.leave, request)
            return result
        }
        _ = try await fixture.client.jetStream.publish(attempt.subject, payload: attempt.payload, headers: attempt.headers)
        #expect(try await leave.value.left)
        #expect(try await Self.events(.userLeft, room: room.id, fixture).map(\.username) == ["ann"], "one UserLeft")
        #expect(try await Self.events(.userJoined, room: room.id, fixture).count == 1)
    }
}
