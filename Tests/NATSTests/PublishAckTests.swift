import Testing

@testable import NATS

@Suite("PublishAck fast path agrees with the decoder")
struct PublishAckTests {
    @Test(arguments: [
        #"{"stream":"S","seq":1}"#,
        #"{"stream":"EVENTS","seq":1,"duplicate": true}"#,
        #"{"stream":"EVENTS","seq":18446744073709551615,"duplicate":false}"#,
        #"{"stream":"S", "seq": 42, "domain":"hub"}"#,
    ])
    func agrees(_ text: String) throws {
        let bytes = Array(text.utf8)
        let fast = try #require(PublishAck.parseFast(bytes))
        #expect(fast == (try JetStream.decode(bytes, as: PublishAck.self, context: "test")))
    }

    @Test func errorsAndOddShapesTakeTheDecoder() {
        #expect(
            PublishAck.parseFast(
                Array(#"{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 1"},"stream":"S","seq":0}"#.utf8)
            ) == nil
        )
        #expect(PublishAck.parseFast(Array(#"{"stream":"S\"x","seq":1}"#.utf8)) == nil)
        #expect(PublishAck.parseFast(Array(#"{"stream":"S","seq":99999999999999999999}"#.utf8)) == nil)
        #expect(PublishAck.parseFast(Array("[]".utf8)) == nil)
    }
}
