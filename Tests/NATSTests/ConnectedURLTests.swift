import NATSTesting
import Testing

@testable import NATS

@Suite("Connected URL shown in logs and /health")
struct ConnectedURLTests {
    @Test func credentialsInTheURLAreNeverShown() {
        #expect(ConnectionHandle.withoutUserInfo("nats://gateway:s3cret@nats:4222") == "nats://nats:4222")
        #expect(ConnectionHandle.withoutUserInfo("tls://token@10.0.0.1:4222") == "tls://10.0.0.1:4222")
        #expect(ConnectionHandle.withoutUserInfo("nats://127.0.0.1:4222") == "nats://127.0.0.1:4222")
    }

    @Test func aRealConnectionReportsItsURLWithoutUserInfo() async throws {
        let server = try NATSServerProcess(configuration: "authorization { user: u, password: p4ss }")
        var configuration = NATSConfiguration(url: "nats://u:p4ss@127.0.0.1:\(server.port)", name: "url-test")
        configuration.maxReconnectAttempts = 0
        let connection = try await NATSConnection.connect(configuration)
        #expect(connection.connectedURL == "nats://127.0.0.1:\(server.port)")
        await connection.drain()
    }
}
