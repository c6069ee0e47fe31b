import ChatCore
import NATS
import Testing

/// `CHAT_MAX_ROOMS` through the room count in `chat_rooms` (`RoomSlots`): started from the rooms when
/// the bucket predates it or holds garbage, never lowered while fresh.
@Suite("CHAT_MAX_ROOMS: the room count key")
struct RoomCountTests {
    @Test func countStartsFromTheRoomsAndHoldsTheLimit() async throws {
        let fixture = try await ChatFixture { $0.maxRooms = 4 }
        try await fixture.startReplica()
        let kv = try await fixture.client.keyValue(KeyValueConfiguration(bucket: ChatNames.roomsBucket))
        func count() async throws -> String? {
            try await kv.value(ChatNames.roomCountKey, leader: true).map { String(decoding: $0.value, as: UTF8.self) }
        }
        let first = try await fixture.createRoom("one")
        _ = try await fixture.createRoom("two")
        #expect(try await count() == "2")
        // An existing name takes no slot.
        #expect(await expectChatError(.roomExists) { _ = try await fixture.createRoom("ONE") }?.room?.id == first.id)
        #expect(try await count() == "2")

        // A bucket from before the count: the next create counts the rooms first.
        try await kv.erase(ChatNames.roomCountKey)
        #expect(try await count() == nil)
        _ = try await fixture.createRoom("three")
        #expect(try await count() == "3")

        // A corrupt count is replaced by the rooms' number, then the limit holds.
        try await kv.put(ChatNames.roomCountKey, Array("garbage".utf8))
        _ = try await fixture.createRoom("four")
        #expect(try await count() == "4")
        let refused = await expectChatError(.roomLimitReached) { _ = try await fixture.createRoom("five") }
        #expect(refused?.error.contains("limit (4)") == true)
        #expect(try await count() == "4")

        // A count above the rooms (a crash after taking a slot) is not lowered while it is fresh.
        try await kv.put(ChatNames.roomCountKey, Array("9".utf8))
        #expect(await expectChatError(.roomLimitReached) { _ = try await fixture.createRoom("six") } != nil)
        let list: ServiceAPI.RoomList = try await fixture.chat.call(.listRooms, ServiceAPI.ListRooms())
        #expect(list.rooms.map(\.name).sorted() == ["four", "one", "three", "two"])
    }
}
