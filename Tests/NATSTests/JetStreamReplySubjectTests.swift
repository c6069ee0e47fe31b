import NATSTesting
import Testing

@testable import NATS

@Suite("JetStream reply subjects parse on their bytes")
struct JetStreamReplySubjectTests {
    @Test func bothFormsParseAndMalformedOnesDoNot() async throws {
        let server = try NATSServerProcess()
        let connection = try await server.connect()
        func parse(_ reply: String) -> JetStreamMessage? {
            JetStreamMessage(message: NATSMessage(subject: "s", reply: reply, headers: NATSHeaders(), payload: []), connection: connection)
        }
        let v1 = try #require(parse("$JS.ACK.CHAT_EVENTS.broadcaster.2.18446744073709551615.7.1764230000000000000.12"))
        #expect(v1.stream == "CHAT_EVENTS" && v1.consumer == "broadcaster")
        #expect(v1.deliveries == 2 && v1.streamSequence == UInt64.max && v1.consumerSequence == 7)
        #expect(v1.timestampNanoseconds == 1_764_230_000_000_000_000 && v1.pending == 12)
        let v2 = try #require(parse("$JS.ACK.hub.ACCHASH.KV_x.follower.1.42.43.1764230000000000001.0.random"))
        #expect(v2.stream == "KV_x" && v2.consumer == "follower" && v2.streamSequence == 42 && v2.consumerSequence == 43 && v2.pending == 0)
        for bad in [
            "$JS.ACK.S.C.1.2.3.4", "$JS.ACK.S.C.1.x.3.4.5", "$JS.ACK.S.C.1..3.4.5", "$JS.ACK.S.C.1.18446744073709551616.3.4.5",
            "$JS.ACK.S.C.1.-2.3.4.5", "$JS.NAK.S.C.1.2.3.4.5", "_INBOX.x",
        ] {
            #expect(parse(bad) == nil, "\(bad)")
        }
        await connection.drain()
    }
}
