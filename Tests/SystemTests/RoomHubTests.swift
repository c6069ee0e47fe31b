import ChatCore
import Logging
import NATS
import NATSTesting
import ServiceSupport
import Testing

@testable import Gateway

/// A room's lifecycle on one gateway (`RoomHub`), against a real nats-server.
@Suite("Room hub lifecycle")
struct RoomHubTests {
    static func hub(_ connection: NATSConnection, subscribeTimeout: Duration = .seconds(5)) -> RoomHub {
        RoomHub(
            connection: connection,
            chat: ChatServiceClient(connection: connection),
            logger: Logger(label: "room-hub-test"),
            metrics: GatewayMetrics(),
            subscribeTimeout: subscribeTimeout
        )
    }

    @Test func concurrentJoinersShareOneWorkerAndTheLastReleaseEndsIt() async throws {
        let server = try NATSServerProcess()
        let connection = try await server.connect(name: "gateway")
        let hub = Self.hub(connection)
        let room = RoomID.random()
        let workers = try await withThrowingTaskGroup(of: RoomWorker.self) { group in
            for _ in 0..<8 { group.addTask { try await hub.retain(room) } }
            return try await group.reduce(into: [RoomWorker]()) { $0.append($1) }
        }
        #expect(workers.count == 8)
        #expect(workers.allSatisfy { $0 === workers[0] })
        #expect(hub.roomCount == 1)
        for _ in 0..<7 { hub.release(room) }
        #expect(hub.roomCount == 1, "seven of eight released: the room stays")
        hub.release(room)
        #expect(hub.roomCount == 0)
        // A new joiner gets a new worker.
        let again = try await hub.retain(room)
        #expect(again !== workers[0])
    }

    /// A second joiner used to return at once, before the first had confirmed the subscription; when
    /// that failed, the room stayed behind with a worker that never ran (its joins waited forever).
    @Test func whenSubscribingFailsEveryWaitingJoinerGetsTheErrorAndTheRoomIsGone() async throws {
        let server = try NATSServerProcess()
        let connection = try await server.connect(name: "gateway")
        let hub = Self.hub(connection, subscribeTimeout: .seconds(2))
        // A frozen server keeps the TCP connection but never confirms the subscription.
        server.pause()
        defer { server.resume() }
        let room = RoomID.random()
        let first = Task { () -> Result<RoomWorker, NATSError> in
            do throws(NATSError) { return .success(try await hub.retain(room)) } catch { return .failure(error) }
        }
        try await eventually("the first joiner is subscribing", timeout: .seconds(5)) { hub.roomCount == 1 }
        let second = Task { () -> Result<RoomWorker, NATSError> in
            do throws(NATSError) { return .success(try await hub.retain(room)) } catch { return .failure(error) }
        }
        let firstResult = await first.value
        let secondResult = await second.value
        guard case .failure = firstResult else {
            Issue.record("the first joiner's subscribe should fail with the server down")
            return
        }
        guard case .failure = secondResult else {
            Issue.record("the second joiner got a room whose subscription failed")
            return
        }
        #expect(hub.roomCount == 0, "a room whose start failed is gone")
    }
}
