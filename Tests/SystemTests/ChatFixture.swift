import ChatCore
import ChatService
import Foundation
import Logging
import NATS
import NATSTesting
import ServiceSupport
import Synchronization

/// A real nats-server plus N in-process chat-service replicas, and a client connection.
final class ChatFixture: @unchecked Sendable {
    // @unchecked: replicas are only changed by the owning test.
    let server: NATSServerProcess
    let client: NATSConnection
    let chat: ChatServiceClient
    var configuration: ChatServiceConfiguration
    private var replicas: [(runner: ChatServiceRunner, task: Task<Void, any Error>)] = []

    init(configure: (inout ChatServiceConfiguration) -> Void = { _ in }) async throws {
        server = try NATSServerProcess()
        client = try await server.connect(name: "test-client")
        // Generous: CI machines are loaded; the tests check outcomes, not latency.
        chat = Self.gateway("gw-test", connection: client)
        var configuration = ChatServiceConfiguration(nats: NATSConfiguration(url: server.url, name: "chat-service"))
        configuration.presenceSweepInterval = .milliseconds(200)
        // Only the presence test wants gateways to expire; elsewhere a slow CI machine must not remove members.
        configuration.presenceTimeout = .seconds(60)
        configure(&configuration)
        self.configuration = configuration
        startHeartbeat()
    }

    deinit {
        for replica in replicas { replica.task.cancel() }
        heartbeat?.cancel()
    }

    /// The default test gateway beats like a live one, so presence expiry never removes its members.
    private var heartbeat: Task<Void, Never>?

    /// A client that speaks as gateway `id`: its key is made from the id, so every client of one id
    /// proves the same key (an id that is not a valid gateway id gets gw-test's).
    func gateway(_ id: String) -> ChatServiceClient { Self.gateway(id, connection: client) }

    private static func gateway(_ id: String, connection: NATSConnection) -> ChatServiceClient {
        let gateway = GatewayID(id) ?? GatewayID("gw-test")!
        let key = "test-key-of-" + String(repeating: "0", count: 32) + "-" + gateway.rawValue
        // Generous: CI machines are loaded; the tests check outcomes, not latency.
        return ChatServiceClient(connection: connection, timeout: .seconds(15), credential: GatewayCredential(gatewayID: gateway, key: key))
    }

    func startHeartbeat(gateway: String = "gw-test") {
        let chat = self.gateway(gateway)
        heartbeat = Task {
            while !Task.isCancelled {
                let _: ServiceAPI.Ok? = try? await chat.call(.heartbeat, ServiceAPI.Heartbeat(gatewayID: gateway, connections: 1))
                try? await Task.sleep(for: .milliseconds(500))
            }
        }
    }

    /// Starts one more chat-service replica and waits until it answers `$SRV.PING`.
    @discardableResult
    func startReplica(instance: String? = nil) async throws -> ChatServiceRunner {
        var configuration = self.configuration
        configuration.instanceID = instance ?? "chat-test-\(replicas.count)"
        var logger = Logger(label: "chat-service")
        logger.logLevel = ProcessInfo.processInfo.environment["TEST_LOG_LEVEL"].flatMap { Logger.Level(rawValue: $0) } ?? .warning
        let runner = ChatServiceRunner(configuration: configuration, logger: logger)
        let task = Task { try await runner.run() }
        replicas.append((runner, task))
        let failure = Mutex<(any Error)?>(nil)
        let watcher = Task { if case .failure(let error) = await task.result { failure.withLock { $0 = error } } }
        defer { watcher.cancel() }
        try await eventually("replica \(configuration.instanceID) serving", timeout: .seconds(20)) {
            if let error = failure.withLock({ $0 }) { throw error }
            guard let service = runner.service else { return false }
            return (try? await self.client.request("$SRV.PING.chat.\(service.id)", timeout: .milliseconds(500))) != nil
        }
        return runner
    }

    /// Stops a replica abruptly (its task is cancelled; its subscriptions end with its connection).
    func stopReplica(_ index: Int) async {
        replicas[index].task.cancel()
        _ = await replicas[index].task.result
    }

    // Typed helpers.
    func createRoom(_ name: String) async throws(ChatError) -> Room {
        try await chat.call(.createRoom, ServiceAPI.CreateRoom(name: name))
    }

    func join(_ room: RoomID, _ user: UserID, _ name: String, gateway: String = "gw-test") async throws(ChatError) -> ServiceAPI.JoinResult
    {
        try await self.gateway(gateway).call(
            .join,
            ServiceAPI.Join(roomID: room.rawValue, userID: user.rawValue, username: name, gatewayID: gateway)
        )
    }

    func send(
        _ room: RoomID,
        _ user: UserID,
        _ name: String,
        _ content: String,
        clientID: String? = nil
    ) async throws(ChatError) -> ServiceAPI.SendResult {
        try await chat.call(
            .send,
            ServiceAPI.Send(roomID: room.rawValue, userID: user.rawValue, username: name, content: content, clientMessageID: clientID)
        )
    }

    func history(
        _ room: RoomID,
        limit: Int? = nil,
        before: UInt64? = nil,
        after: UInt64? = nil
    ) async throws(ChatError) -> ServiceAPI.HistoryResult {
        try await chat.call(.history, ServiceAPI.History(roomID: room.rawValue, limit: limit, before: before, after: after))
    }
}

func expectChatError(_ code: ChatErrorCode, _ body: () async throws -> Void) async -> ChatError? {
    do {
        try await body()
        return nil
    } catch let error as ChatError {
        return error.code == code ? error : ChatError(error.code, "unexpected: \(error)")
    } catch {
        return nil
    }
}
