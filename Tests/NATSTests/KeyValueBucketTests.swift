import NATSTesting
import Testing

@testable import NATS

@Suite("Creating KV buckets against a real nats-server")
struct KeyValueBucketTests {
    @Test func createsTheBucketStreamAsNATSKeyValueDoes() async throws {
        let server = try NATSServerProcess()
        let connection = try await server.connect()
        var config = KeyValueConfiguration(bucket: "settings", history: 5, ttl: .seconds(30))
        config.maxValueSize = 1024
        let (kv, differences) = try await connection.openBucket(config)
        #expect(differences.isEmpty)
        let stream = try await connection.jetStream.streamInfo("KV_settings").config
        #expect(stream.subjects == ["$KV.settings.>"])
        #expect(stream.maxMessagesPerSubject == 5)
        #expect(stream.maxAge == 30_000_000_000)
        #expect(stream.duplicateWindow == 30_000_000_000)
        #expect(stream.maxMessageSize == 1024)
        #expect(stream.allowRollup && stream.denyDelete && stream.allowDirect)
        #expect(stream.discard == "new")
        _ = try await kv.put("a", [1])
        #expect(try await kv.value("a")?.value == [1])

        // The same configuration again opens it without complaint.
        let (_, again) = try await connection.openBucket(config)
        #expect(again.isEmpty)
    }

    /// An existing bucket with other settings is opened as it is, and the difference reported.
    @Test func existingBucketWithOtherSettingsIsKeptAndReported() async throws {
        let server = try NATSServerProcess()
        let connection = try await server.connect()
        let first = try await connection.keyValue(KeyValueConfiguration(bucket: "rooms"))
        _ = try await first.put("r", [7])
        let (kv, differences) = try await connection.openBucket(KeyValueConfiguration(bucket: "rooms", history: 5))
        #expect(differences == ["history 1 (configured 5)"])
        #expect(try await kv.value("r")?.value == [7])
        #expect(try await connection.jetStream.streamInfo("KV_rooms").config.maxMessagesPerSubject == 1)
    }

    /// A create refused for another reason than "exists" throws, even when the bucket exists.
    @Test func refusedCreateDoesNotBindTheExistingBucket() async throws {
        let server = try NATSServerProcess()
        let connection = try await server.connect()
        _ = try await connection.keyValue(KeyValueConfiguration(bucket: "rooms"))
        await #expect { _ = try await connection.keyValue(KeyValueConfiguration(bucket: "rooms", history: 100)) } throws: { error in
            (error as? NATSError)?.kind == .invalidArgument
        }
        await #expect { _ = try await connection.keyValue(KeyValueConfiguration(bucket: "no.dots")) } throws: { error in
            (error as? NATSError)?.kind == .invalidArgument
        }
    }

    /// A create that times out throws rather than binding the bucket that exists.
    @Test func createThatTimesOutThrows() async throws {
        let server = try NATSServerProcess(
            configuration: """
                authorization {
                  users: [
                    { user: admin, password: admin }
                    { user: limited, password: limited, permissions: { publish: { deny: ["$JS.API.STREAM.CREATE.>"] } } }
                  ]
                }
                """
        )
        func connect(_ user: String) async throws -> NATSConnection {
            var configuration = NATSConfiguration(url: server.url, name: user)
            configuration.user = user
            configuration.password = user
            configuration.requestTimeout = .seconds(1)
            return try await NATSConnection.connect(configuration, retryUntilConnected: false)
        }
        _ = try await connect("admin").keyValue(KeyValueConfiguration(bucket: "rooms"))
        let limited = try await connect("limited")
        await #expect { _ = try await limited.keyValue(KeyValueConfiguration(bucket: "rooms", history: 2)) } throws: { error in
            (error as? NATSError)?.kind == .timeout
        }
    }
}
