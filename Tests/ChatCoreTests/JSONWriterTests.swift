import Foundation
import Testing

@testable import ChatCore

@Suite("Hand-written JSON agrees with JSONEncoder; UUIDs are well formed")
struct JSONWriterTests {
    static let contents = [
        "hello", "", "quote \" backslash \\ slash /", "line\nbreak\r\ttab\u{8}\u{C}", "nul \u{0} bell \u{7} esc \u{1B} \u{1F}",
        "emoji 🎉 and RTL \u{202E} zero\u{200B}width", "<script>alert(1)</script>", "ünïcödé e\u{301}", "\u{7F}\u{80}\u{FFFF}",
    ]

    static func message(_ content: String, clientMessageID: String?) -> ChatMessage {
        ChatMessage(
            messageID: makeUUID(),
            roomID: RoomID(makeUUID())!,
            userID: UserID(makeUUID())!,
            username: "ann \"o\" \(content)",
            content: content,
            timestamp: "2026-11-26T19:38:36.123Z",
            seq: 18_446_744_073_709_551_615,
            clientMessageID: clientMessageID
        )
    }

    static func plain(_ value: some Encodable) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array(try encoder.encode(value))
    }

    @Test(arguments: contents)
    func messageRoundTripsThroughJSONDecoder(_ content: String) throws {
        for clientMessageID in [nil, "c-1"] as [String?] {
            let message = Self.message(content, clientMessageID: clientMessageID)
            let written = ChatJSON.encode(message)
            #expect(try JSONDecoder().decode(ChatMessage.self, from: Data(written)) == message)
            let result = ServiceAPI.SendResult(message: message, duplicate: true)
            let decoded = try JSONDecoder().decode(ServiceAPI.SendResult.self, from: Data(ChatJSON.encode(result)))
            #expect(decoded.message == message && decoded.duplicate)
            let send = ServiceAPI.Send(
                roomID: message.roomID.rawValue,
                userID: message.userID.rawValue,
                username: message.username,
                content: content,
                clientMessageID: clientMessageID
            )
            let sent = try JSONDecoder().decode(ServiceAPI.Send.self, from: Data(ChatJSON.encode(send)))
            #expect(
                sent.content == content && sent.username == send.username && sent.clientMessageID == clientMessageID
                    && sent.roomID == send.roomID
            )
            #expect(ChatJSON.encode(send) == (try Self.plain(send)))
            var ackOnly = send
            ackOnly.ackOnly = true
            #expect(ChatJSON.encode(ackOnly) == (try Self.plain(ackOnly)))
            #expect(try ChatJSON.decode(ServiceAPI.Send.self, from: ChatJSON.encode(ackOnly)).ackOnly == true)
            #expect(try ChatJSON.decode(ServiceAPI.Send.self, from: ChatJSON.encode(send)).ackOnly == nil)
        }
    }

    @Test func sendAckReadsBothReplyForms() throws {
        let message = Self.message("hi", clientMessageID: "c-1")
        let result = ServiceAPI.SendResult(message: message, duplicate: true)
        let ack = ServiceAPI.SendAck(result)
        #expect(ack == ServiceAPI.SendAck(messageID: message.messageID, roomID: message.roomID, seq: message.seq, duplicate: true))
        let compact = ChatJSON.encode(ack)
        #expect(compact == (try Self.plain(ack)), "byte-identical to JSONEncoder's sorted output")
        #expect(!String(decoding: compact, as: UTF8.self).contains("content"))
        #expect(try ChatJSON.decode(ServiceAPI.SendAck.self, from: compact) == ack)
        // A chat-service that does not know `ack_only` answers with the whole result.
        #expect(try ChatJSON.decode(ServiceAPI.SendAck.self, from: ChatJSON.encode(result)) == ack)
        #expect(throws: ChatError.self) {
            try ChatJSON.decode(
                ServiceAPI.SendAck.self,
                from: Array(#"{"message_id":"m","room_id":"nope","seq":1,"duplicate":false}"#.utf8)
            )
        }
        #expect(throws: ChatError.self) {
            try ChatJSON.decode(
                ServiceAPI.SendAck.self,
                from: Array(#"{"message_id":"m","room_id":"\#(message.roomID)","duplicate":false}"#.utf8)
            )
        }
        #expect(throws: ChatError.self) {
            try ChatJSON.decode(
                ServiceAPI.Send.self,
                from: Array(#"{"room_id":"r","user_id":"u","username":"n","content":"c","ack_only":"yes"}"#.utf8)
            )
        }
    }

    @Test func bytesEqualJSONEncoderForPlainText() throws {
        let message = Self.message("hello / world", clientMessageID: "c-1")
        #expect(ChatJSON.encode(message) == (try Self.plain(message)))
        let result = ServiceAPI.SendResult(message: Self.message("x", clientMessageID: nil), duplicate: false)
        #expect(ChatJSON.encode(result) == (try Self.plain(result)))
    }

    @Test func messageAndAckFrames() throws {
        let message = Self.message("hi \"there\"", clientMessageID: "c-9")
        let frame = try #require(try JSONSerialization.jsonObject(with: Data(ServerFrame.message(message))) as? [String: Any])
        #expect(frame["type"] as? String == "message")
        #expect(frame["content"] as? String == message.content)
        #expect(frame["seq"] as? UInt64 == message.seq)
        #expect(frame["client_msg_id"] as? String == "c-9")
        let ack = try #require(
            try JSONSerialization.jsonObject(
                with: Data(
                    ServerFrame.ack(clientMessageID: "c-9", ServiceAPI.SendAck(ServiceAPI.SendResult(message: message, duplicate: false)))
                )
            ) as? [String: Any]
        )
        #expect(ack["type"] as? String == "ack")
        #expect(ack["message_id"] as? String == message.messageID)
        #expect(ack["room_id"] as? String == message.roomID.rawValue)
        #expect(ack["seq"] as? UInt64 == message.seq)
    }

    @Test func connectedFrameEqualsTheEncodableOne() throws {
        let user = UserID.random()
        for name in ["ann", "quote\" back\\ slash", "tab\tnew\nline", "é 👋 </script>"] {
            let written = ServerFrame.connected(userID: user, username: name, gatewayID: "gw-1")
            let encoded = ServerFrame.encode(type: "connected", ["user_id": user.rawValue, "username": name, "gateway_id": "gw-1"])
            #expect(written == encoded, "\(String(decoding: written, as: UTF8.self))")
        }
    }

    @Test func numbers() {
        for value: UInt64 in [0, 1, 9, 10, 1234567890, .max] {
            var writer = JSONWriter()
            writer.number(value)
            #expect(writer.bytes == Array(String(value).utf8))
        }
    }

    @Test func uuidsAreVersion4AndDistinct() {
        var seen = Set<String>()
        for _ in 0..<2000 {
            let text = makeUUID()
            #expect(text.utf8.count == 36)
            #expect(RoomID(text) != nil)
            let characters = Array(text)
            #expect(characters[14] == "4")
            #expect("89ab".contains(characters[19]))
            #expect(UUID(uuidString: text)?.uuidString.lowercased() == text)
            seen.insert(text)
        }
        #expect(seen.count == 2000)
    }
}
