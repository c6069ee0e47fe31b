import NATS
import NATSTesting
import Testing

@Suite("Looking up consumers against a real nats-server")
struct ConsumerLookupTests {
    /// `limited` may not send consumer-info requests: the server drops them, so they time out.
    static let users = """
        authorization {
          users: [
            { user: admin, password: admin }
            { user: limited, password: limited, permissions: { publish: { deny: ["$JS.API.CONSUMER.INFO.>"] } } }
          ]
        }
        """

    static func connect(_ server: NATSServerProcess, user: String) async throws -> NATSConnection {
        var configuration = NATSConfiguration(url: server.url, name: user)
        configuration.user = user
        configuration.password = user
        configuration.requestTimeout = .seconds(1)
        return try await NATSConnection.connect(configuration, retryUntilConnected: false)
    }

    @Test func missingConsumerIsNilAndExistingOneIsFound() async throws {
        let server = try NATSServerProcess(configuration: Self.users)
        let js = try await Self.connect(server, user: "admin").jetStream
        try await js.createOrUpdateStream(StreamConfiguration(name: "S", subjects: ["s.>"]))
        #expect(try await js.consumerInfoIfExists(stream: "S", consumer: "c") == nil)
        try await js.createOrUpdateConsumer(stream: "S", ConsumerConfiguration(durableName: "c"))
        #expect(try await js.consumerInfoIfExists(stream: "S", consumer: "c")?.name == "c")
    }

    /// A lookup that times out is not mistaken for "no such consumer".
    @Test func lookupThatTimesOutThrows() async throws {
        let server = try NATSServerProcess(configuration: Self.users)
        let admin = try await Self.connect(server, user: "admin").jetStream
        try await admin.createOrUpdateStream(StreamConfiguration(name: "S", subjects: ["s.>"]))
        try await admin.createOrUpdateConsumer(stream: "S", ConsumerConfiguration(durableName: "c"))
        let limited = try await Self.connect(server, user: "limited").jetStream
        await #expect { try await limited.consumerInfoIfExists(stream: "S", consumer: "c") } throws: { error in
            (error as? NATSError)?.kind == .timeout
        }
    }

    /// A missing stream is an error, not a missing consumer.
    @Test func lookupOnMissingStreamThrows() async throws {
        let server = try NATSServerProcess(configuration: Self.users)
        let js = try await Self.connect(server, user: "admin").jetStream
        await #expect { try await js.consumerInfoIfExists(stream: "NOPE", consumer: "c") } throws: { error in
            (error as? NATSError)?.jetStreamCode == JetStreamErrorCode.streamNotFound
        }
    }
}
