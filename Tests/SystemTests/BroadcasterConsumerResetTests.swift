import ChatCore
import Logging
import NATS
import NATSTesting
import Testing

@testable import Broadcaster

@Suite("Broadcaster consumer reset against a real nats-server")
struct BroadcasterConsumerResetTests {
    /// `limited` may not send consumer-info requests: the server drops them, so they time out.
    static let users = """
        authorization {
          users: [
            { user: admin, password: admin }
            { user: limited, password: limited, permissions: { publish: { deny: ["$JS.API.CONSUMER.INFO.>"] } } }
          ]
        }
        """

    static func configuration(_ server: NATSServerProcess, user: String) -> NATSConfiguration {
        var configuration = NATSConfiguration(url: server.url, name: user)
        configuration.user = user
        configuration.password = user
        configuration.requestTimeout = .seconds(1)
        return configuration
    }

    /// The reset resumes after the ack floor; when the consumer lookup times out it fails (and is
    /// retried) rather than treating the consumer as missing and keeping it as it is.
    @Test func resetResumesAfterTheAckFloorAndFailsWhenTheLookupTimesOut() async throws {
        let server = try NATSServerProcess(configuration: Self.users)
        let admin = try await NATSConnection.connect(Self.configuration(server, user: "admin"), retryUntilConnected: false)
        let js = admin.jetStream
        try await js.createOrUpdateStream(StreamConfiguration(name: ChatNames.eventStream, subjects: ChatNames.eventStreamSubjects))
        for index in 0..<3 { _ = try await js.publish("chat.rooms.created", payload: [UInt8(index)]) }
        let runner = BroadcasterRunner(configuration: BroadcasterConfiguration(nats: admin.configuration), logger: Logger(label: "test"))

        let first = try await runner.resetConsumer(js)
        let events = try await first.fetch(batch: 3, expires: .seconds(5))
        #expect(events.map(\.streamSequence) == [1, 2, 3])
        try await events[1].ackSync()  // ack policy all: the floor is 2

        let limited = try await NATSConnection.connect(Self.configuration(server, user: "limited"), retryUntilConnected: false)
        await #expect { _ = try await runner.resetConsumer(limited.jetStream) } throws: { error in
            (error as? NATSError)?.kind == .timeout
        }

        let resumed = try await runner.resetConsumer(js)
        let again = try await resumed.fetch(batch: 3, expires: .seconds(1))
        #expect(again.map(\.streamSequence) == [3])
    }
}
