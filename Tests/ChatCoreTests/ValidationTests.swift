import Foundation
import Testing

@testable import ChatCore

@Suite("Identifiers and names: nothing unsafe reaches a subject or key")
struct ValidationTests {
    @Test(arguments: [
        "a.b", "*", ">", "", " ", "room id", "../etc/passwd", "chat.room.>", "0000000-0000-0000-0000-000000000000",
        "00000000-0000-0000-0000-00000000000g", "00000000_0000-0000-0000-000000000000", "00000000-0000-0000-0000-0000000000000",
    ])
    func hostileRoomIDsAreRejected(_ text: String) {
        #expect(RoomID(text) == nil)
        #expect(UserID(text) == nil)
    }

    @Test func uuidsAreCanonicalised() throws {
        let id = try #require(RoomID("6F9619FF-8B86-D011-B42D-00C04FC964FF"))
        #expect(id.rawValue == "6f9619ff-8b86-d011-b42d-00c04fc964ff")
        #expect(ChatNames.messageSubject(id) == "chat.room.6f9619ff-8b86-d011-b42d-00c04fc964ff.msg")
        let random = RoomID.random()
        #expect(RoomID(random.rawValue) == random)
        #expect(random.rawValue.count == 36)
    }

    @Test func asciiAndUnicodeNamesFollowTheSameLengthRule() {
        #expect(Username(String(repeating: "é", count: 32))?.rawValue.count == 32)
        #expect(
            Username(String(repeating: "e\u{301}", count: 32))?.rawValue == String(repeating: "é", count: 32),
            "NFC: e + combining acute becomes é"
        )
        #expect(Username(String(repeating: "é", count: 33)) == nil)
        #expect(Username("\tann bob\n")?.rawValue == "ann bob", "surrounding whitespace is trimmed on the ASCII path too")
        #expect(Username("ann\u{7F}") == nil, "DEL is a control character")
    }

    @Test func timestampsMatchFoundationsISO8601() throws {
        let style = Date.ISO8601FormatStyle(includingFractionalSeconds: true, timeZone: .gmt)
        var generator = SystemRandomNumberGenerator()
        // 1970 … 2200 at millisecond precision, plus the edges of days, leap days and centuries.
        let fixed: [Int64] = [0, 999, 86_399_999, 86_400_000, 951_782_400_000, 951_868_799_999, 4_107_542_400_000, 1_705_314_600_123]
        for milliseconds in fixed + (0..<2000).map({ _ in Int64.random(in: 0...7_258_118_400_000, using: &generator) }) {
            // Foundation truncates the binary Double (.374 can print as .373): 0.2 ms inside the millisecond.
            let date = Date(timeIntervalSince1970: (Double(milliseconds) + 0.2) / 1000)
            #expect(ChatTime.format(milliseconds: milliseconds) == date.formatted(style), "\(milliseconds)")
        }
        #expect(ChatTime.format(milliseconds: 1_705_314_600_123) == "2024-01-15T10:30:00.123Z")
        let (text, milliseconds) = ChatTime.now()
        #expect(text == ChatTime.format(milliseconds: milliseconds))
        #expect((try? style.parseStrategy.parse(text)) != nil)
    }

    @Test func tokensAllowOnlySafeCharacters() {
        #expect(GatewayID("gw-1_A") != nil)
        for bad in ["gw.1", "gw*", "gw>", "gw 1", "", String(repeating: "a", count: 65), "gw/1", "é"] {
            #expect(GatewayID(bad) == nil, "\(bad)")
            #expect(ClientMessageID(bad) == nil, "\(bad)")
        }
    }

    @Test func usernamesAndRoomNames() throws {
        #expect(Username("  ann  ")?.rawValue == "ann")
        #expect(Username(String(repeating: "x", count: 32)) != nil)
        #expect(Username(String(repeating: "x", count: 33)) == nil)
        #expect(Username("") == nil)
        #expect(Username("a\u{0}b") == nil)
        #expect(Username("a\nb") == nil)
        #expect(Username("evil\u{202E}txt") == nil, "right-to-left override is refused")
        #expect(Username("<img src=x>")?.rawValue == "<img src=x>", "HTML is data, escaped by clients")
        #expect(Username("👩‍💻 dev")?.rawValue == "👩‍💻 dev")
        #expect(RoomName("General")?.normalized == RoomName(" general ")?.normalized)
        #expect(RoomName(String(repeating: "é", count: 64)) != nil)
        #expect(RoomName(String(repeating: "é", count: 65)) == nil)
    }

    @Test func keysHexEncodeUntrustedText() throws {
        let room = try #require(RoomID("6f9619ff-8b86-d011-b42d-00c04fc964ff"))
        let key = ChatNames.idempotencyKey(room, .username(try #require(Username("a.b *>"))), try #require(ClientMessageID("c-1")))
        #expect(key == "6f9619ff-8b86-d011-b42d-00c04fc964ff.612e62202a3e.c-1")
        let user = try #require(UserID("0f6af3d1-c5e5-49c1-9482-ab9312c5ecb1"))
        let byUser = ChatNames.idempotencyKey(room, .user(user), try #require(ClientMessageID("c-1")))
        #expect(byUser == "6f9619ff-8b86-d011-b42d-00c04fc964ff.u-0f6af3d1-c5e5-49c1-9482-ab9312c5ecb1.c-1")
        #expect(ChatNames.roomNameKey(try #require(RoomName("Ab"))) == ChatNames.roomNameKey(try #require(RoomName("aB"))))
    }
}

@Suite("WebSocket frames")
struct FrameTests {
    func parse(_ text: String) throws(ChatError) -> ClientFrame { try ClientFrame.parse(Array(text.utf8)) }

    @Test func seedFramesParse() throws {
        #expect(try parse(#"{"type":"join","room_id":"r"}"#) == .join(roomID: "r", since: nil))
        #expect(try parse(#"{"type":"join","room_id":"r","since":7}"#) == .join(roomID: "r", since: 7))
        #expect(try parse(#"{"type":"leave"}"#) == .leave(roomID: nil))
        #expect(try parse(#"{"type":"message","content":"Hello!"}"#) == .message(content: "Hello!", roomID: nil, clientMessageID: nil))
        #expect(try parse(#"{"type":"history","room_id":"r","limit":5,"before":9}"#) == .history(roomID: "r", limit: 5, before: 9))
        #expect(try parse(#"{"type":"members","room_id":"r"}"#) == .members(roomID: "r"))
        #expect(try parse(#"{"type":"room_list"}"#) == .roomList())
        #expect(try parse(#"{"type":"room_list","limit":2,"after":"r"}"#) == .roomList(limit: 2, after: "r"))
        #expect(try parse(#"{"type":"members","room_id":"r","limit":3,"after":"u"}"#) == .members(roomID: "r", limit: 3, after: "u"))
        #expect(try parse(#"{"type":"typing","room_id":"r","extra":true}"#) == .typing(roomID: "r"))
    }

    @Test func theAuthFrameCarriesAToken() throws {
        let frame = try parse(#"{"type":"auth","token":"a.b.c"}"#)
        #expect(frame == .auth(token: "a.b.c") && frame.type == "auth" && frame.roomID == nil)
        let answer = String(decoding: ServerFrame.authenticated(expiresAt: Date(timeIntervalSince1970: 1_800_000_000)), as: UTF8.self)
        #expect(answer == #"{"expires_at":"2027-01-15T08:00:00.000Z","type":"authenticated"}"#, "\(answer)")
    }

    @Test(arguments: [
        (#"not json"#, "invalid JSON"),
        (#"{"type":"dance"}"#, "unknown message type 'dance'"),
        (#"{"room_id":"r"}"#, "missing field 'type'"),
        (#"{"type":"join"}"#, "missing field 'room_id'"),
        (#"{"type":"join","room_id":5}"#, "field 'room_id' must be a string"),
        (#"{"type":"message","content":null}"#, "field 'content' must be a string, not null"),
        (#"{"type":"join","room_id":"r","since":-1}"#, "field 'since'"),
        (#"{"type":"join","room_id":"r","since":1e300}"#, "field 'since'"),
        (#"[1,2]"#, "must be a JSON object"),
        (#"{"type":"history","room_id":"r","limit":2.5}"#, "field 'limit' must be a non-negative integer"),
        (#"{"type":"auth"}"#, "missing field 'token'"),
        (#"{"type":"auth","token":null}"#, "field 'token' must be a string, not null"),
    ])
    func badFramesGetPreciseErrors(_ input: String, _ expected: String) {
        do {
            _ = try parse(input)
            Issue.record("\(input) parsed")
        } catch {
            #expect(error.code == .invalidRequest)
            #expect(error.error.contains(expected), "\(error.error)")
        }
    }

    @Test func deepNestingIsAnErrorNotACrash() {
        let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        #expect(throws: ChatError.self) { _ = try parse(deep) }
    }

    @Test func serverFramesKeepTheSeedShapeAndEscapeNothingAway() throws {
        let room = RoomID.random()
        let message = ChatMessage(
            messageID: "m",
            roomID: room,
            userID: UserID.random(),
            username: "ann",
            content: "<script>\"x\"</script>",
            timestamp: "t",
            seq: 3
        )
        let json = try #require(try JSONSerialization.jsonObject(with: Data(ServerFrame.message(message))) as? [String: Any])
        #expect(json["type"] as? String == "message")
        #expect(json["room_id"] as? String == room.rawValue)
        #expect(json["content"] as? String == "<script>\"x\"</script>")
        #expect(json["seq"] as? Int == 3)
        for key in ["message_id", "user_id", "username", "timestamp"] { #expect(json[key] != nil, "\(key)") }

        let error = try #require(
            try JSONSerialization.jsonObject(
                with: Data(ServerFrame.error(ChatError(.rateLimited, "slow"), clientMessageID: "c", retryAfterMilliseconds: 50))
            ) as? [String: Any]
        )
        #expect(error["type"] as? String == "error")
        #expect(error["code"] as? String == "rate_limited")
        #expect(error["retry_after_ms"] as? Int == 50)
        #expect(error["client_msg_id"] as? String == "c")

        let event = PresenceEvent(roomID: room, userID: UserID.random(), username: "bob", timestamp: "t")
        let frame = try #require(ServerFrame.forEvent(type: "UserLeft.v1", payload: ChatJSON.encode(event)))
        #expect(frame.room == room)
        #expect(frame.seq == nil)
        let bytes = try #require(frame.frame)
        let presence = try #require(try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any])
        #expect(presence["type"] as? String == "user_left")
        #expect(ServerFrame.forEvent(type: "Bogus.v9", payload: []) == nil)
    }

    @Test func timestampsAreRFC3339UTC() {
        let text = ChatTime.format(Date(timeIntervalSince1970: 1_705_314_600.5))
        #expect(text == "2024-01-15T10:30:00.500Z")
    }
}

@Suite("Hostile text: content, names, query strings")
struct HostileTextTests {
    @Test func contentRules() {
        #expect(throws: ChatError(.contentInvalid, "message content is empty")) { try MessageContent.validate(" \n\t", maxBytes: 10) }
        #expect((try? MessageContent.validate("a\u{0}b", maxBytes: 10)) == nil)
        #expect((try? MessageContent.validate("\u{1B}[31m", maxBytes: 10)) == nil)
        #expect((try? MessageContent.validate("a\u{85}", maxBytes: 10)) == nil)
        #expect((try? MessageContent.validate("line\r\n\ttab <b>", maxBytes: 100)) != nil)
        #expect((try? MessageContent.validate("😀😀😀", maxBytes: 11)) == nil, "12 bytes")
    }

    @Test func namesAreNFCWithoutInvisibleOrBidiCharacters() {
        #expect(RoomName("cafe\u{301}")?.rawValue == "caf\u{E9}")
        #expect(RoomName("Cafe\u{301}")?.normalized == RoomName("CAF\u{C9}")?.normalized)
        for bad in ["a\u{200B}b", "\u{FEFF}x", "a\u{2066}b", "x\u{AD}", "a\u{200F}", "a" + String(repeating: "\u{301}", count: 200)] {
            #expect(Username(bad) == nil, "\(bad.unicodeScalars.map { $0.value })")
        }
        #expect(Username("👨‍👩‍👧")?.rawValue == "👨‍👩‍👧", "ZWJ sequences stay allowed")
    }

    @Test func formQueryAndHistoryParams() throws {
        let query = FormQuery.parse("username=a+b%2Bc&username=second&bad=%FF&broken=%4&flag")
        #expect(query["username"] == .some("a b+c"))
        #expect(query["bad"] == .some(nil))
        #expect(query["broken"] == .some(nil))
        #expect(query["flag"] == .some(""))
        #expect(try HistoryQuery.parse(limit: "50", before: "42") == (50, 42))
        for bad in ["0", "-1", "+5", "1e3", "", "99999999999999999999999"] {
            #expect((try? HistoryQuery.parse(limit: bad, before: nil)) == nil, "\(bad)")
        }
    }
}
