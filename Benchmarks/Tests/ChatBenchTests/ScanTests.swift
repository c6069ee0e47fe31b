import NIOCore
import Testing

@testable import ChatBench

@Suite("chat-bench frame scan (the byte scan that replaces a JSON decoder per frame)")
struct ScanTests {
    func scan(_ text: String) -> ScannedFrame { Scan.frame(ByteBuffer(string: text)) }

    @Test func messageFrameFieldsInAnyKeyOrder() {
        let gateway =
            #"{"client_msg_id":"a123n7","content":"t987654321 xxxx","message_id":"m","room_id":"5580ab","seq":42,"#
            + #""timestamp":"2024-01-15T10:30:00.000Z","type":"message","user_id":"u","username":"b1-3"}"#
        let f = scan(gateway)
        #expect(f.kind == .message)
        #expect(f.seq == 42)
        #expect(f.sentAt == 987_654_321)
        #expect(f.roomIDRange.map { Array(Array(gateway.utf8)[$0]) } == Array("5580ab".utf8))
        let typeFirst = scan(#"{"type":"message","seq":7,"room_id":"r","content":"t5 x"}"#)
        #expect(typeFirst.kind == .message && typeFirst.seq == 7 && typeFirst.sentAt == 5)
        let spaced = #"{"type": "message", "room_id": "r1", "seq": 8, "content": "t6 x"}"#
        let s = scan(spaced)
        #expect(s.kind == .message && s.seq == 8 && s.sentAt == 6)
        #expect(s.roomIDRange.map { Array(Array(spaced.utf8)[$0]) } == Array("r1".utf8))
    }

    @Test func ackJoinedErrorAndOtherFrames() {
        let ack = scan(#"{"client_msg_id":"a1700000000000n12","message_id":"m","room_id":"r","seq":9,"type":"ack"}"#)
        #expect(ack.kind == .ack && ack.seq == 9 && ack.sentAt == 1_700_000_000_000)
        let joined = scan(#"{"last_seq":41,"room":{"id":"r","name":"n","created_at":"c","member_count":2},"room_id":"r","type":"joined"}"#)
        #expect(joined.kind == .joined && joined.seq == 41)
        let error = scan(#"{"client_msg_id":"a55n1","code":"rate_limited","error":"slow down","retry_after_ms":120,"type":"error"}"#)
        #expect(error.kind == .error && error.errorCode == "rate_limited" && error.sentAt == 55)
        #expect(scan(#"{"type":"connected","user_id":"u"}"#).kind == .connected)
        #expect(scan(#"{"room_id":"r","type":"user_joined","user_id":"u","username":"x"}"#).kind == .other)
        let empty = scan(#"{"has_more":false,"messages":[],"room_id":"r","type":"history"}"#)
        #expect(empty.kind == .history && !empty.hasMessages)
        #expect(scan(#"{"messages": [ {"seq": 1}], "type": "history"}"#).hasMessages)
        #expect(scan("not json").kind == .other)
        #expect(scan("").kind == .other)
    }

    @Test func findHandlesPrefixesAndEdges() {
        let bytes = Array(#""typ""type":"x"#.utf8)
        bytes.withUnsafeBytes { raw in
            #expect(Scan.find(raw, "\"type\":\"") == 13)
            #expect(Scan.find(raw, "\"type\":\"", from: 13) == nil)
            #expect(Scan.find(raw, "\"seq\":") == nil)
            #expect(Scan.number(raw, at: 0) == nil)
        }
        Array("12345,".utf8).withUnsafeBytes { #expect(Scan.number($0, at: 0) == 12345) }
    }

    @Test func writeDecimal() {
        for value: UInt64 in [0, 7, 10, 1_234_567_890, UInt64.max] {
            var buffer = ByteBuffer()
            buffer.writeDecimal(value)
            #expect(String(buffer: buffer) == String(value))
        }
    }

    @Test func targetParsesURLs() throws {
        let t = try Target(url: "ws://127.0.0.1:3000/ws", api: nil)
        #expect(t.host == "127.0.0.1" && t.port == 3000 && t.path == "/ws" && t.apiPort == 3000)
        let u = try Target(url: "ws://localhost:81/chat/ws", api: "http://127.0.0.1:9000")
        #expect(u.path == "/chat/ws" && u.apiHost == "127.0.0.1" && u.apiPort == 9000)
        #expect(throws: BenchError.self) { try Target(url: "http://x/ws", api: nil) }
    }
}
