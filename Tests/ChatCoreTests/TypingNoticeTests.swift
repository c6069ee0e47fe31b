import ChatCore
import Testing

@Suite("Typing notices from NATS")
struct TypingNoticeTests {
    let room = RoomID.random()
    let user = UserID.random()

    @Test func aGatewaysNoticeRoundTrips() throws {
        let notice = TypingNotice(userID: user, username: try #require(Username("ann")))
        #expect(TypingNotice.decode(notice.encoded(room: room), room: room) == notice)
    }

    @Test func anythingElseIsDropped() {
        let (r, u) = (room.rawValue, user.rawValue)
        let refused: [String] = [
            "", "garbage", "[]", "null",
            #"{"type":"message","room_id":"\#(r)","user_id":"\#(u)","username":"ann"}"#,
            #"{"type":"typing","room_id":"\#(RoomID.random().rawValue)","user_id":"\#(u)","username":"ann"}"#,
            #"{"type":"typing","room_id":"\#(r)","user_id":"nope","username":"ann"}"#,
            #"{"type":"typing","room_id":"\#(r)","user_id":"\#(u)","username":"\u0007"}"#,
            #"{"type":"typing","room_id":"\#(r)","user_id":"\#(u)","username":"ann","content":"x"}"#,
            #"{"type":"typing","room_id":"\#(r)","user_id":"\#(u)","username":7}"#,
            #"{"type":"typing","room_id":"\#(r)","user_id":"\#(u)"}"#,
        ]
        for text in refused { #expect(TypingNotice.decode(Array(text.utf8), room: room) == nil, "\(text)") }
    }
}
