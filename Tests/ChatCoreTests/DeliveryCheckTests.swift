import ChatCore
import Testing

@Suite("Deliveries a gateway forwards")
struct DeliveryCheckTests {
    let room = RoomID.random()

    @Test func theBroadcastersFramesPass() throws {
        let message = ChatMessage(
            messageID: "m-1",
            roomID: room,
            userID: UserID.random(),
            username: "ann",
            content: "hi",
            timestamp: "2026-12-04T00:00:00.000Z",
            seq: 3
        )
        #expect(DeliveryCheck.isRoomFrame(ServerFrame.message(message), room: room, seq: 3))
        #expect(!DeliveryCheck.isRoomFrame(ServerFrame.message(message), room: room, seq: 4), "seq must match Chat-Seq")
        #expect(!DeliveryCheck.isRoomFrame(ServerFrame.message(message), room: RoomID.random(), seq: 3), "another room's")
    }

    @Test func anythingElseIsRefused() {
        let r = room.rawValue
        for text in [
            "", "x", "[]", #"{"type":"connected"}"#, #"{"type":"typing","room_id":"\#(r)"}"#, #"{"type":"message","room_id":"\#(r)"}"#,
        ] {
            #expect(!DeliveryCheck.isRoomFrame(Array(text.utf8), room: room, seq: 1), "\(text)")
        }
        #expect(DeliveryCheck.isRoomNews(Array(#"{"type":"room_created","room":{"id":"x"}}"#.utf8)))
        #expect(!DeliveryCheck.isRoomNews(Array(#"{"type":"message","room":{}}"#.utf8)))
        #expect(!DeliveryCheck.isRoomNews(Array("garbage".utf8)))
    }
}
