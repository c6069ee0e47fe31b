import NATS
import NATSTesting
import Testing

@Suite("Short-lived consumers against a real nats-server")
struct ConsumerCleanupTests {
    /// The ephemeral consumer of a key read is deleted right after the read, without the caller
    /// waiting for the delete and without a task left behind.
    @Test func keyReadDeletesItsConsumer() async throws {
        let server = try NATSServerProcess()
        let connection = try await server.connect()
        let kv = try await connection.keyValue(KeyValueConfiguration(bucket: "rooms"))
        for index in 0..<3 { _ = try await kv.put("room.\(index)", [UInt8(index)]) }
        let values = try await kv.values(matching: "room.*")
        #expect(values.map(\.key) == ["room.0", "room.1", "room.2"])
        try await eventually("the read's consumer deleted", timeout: .seconds(5)) {
            try await connection.jetStream.streamInfo("KV_rooms").state.consumerCount == 0
        }
    }
}
