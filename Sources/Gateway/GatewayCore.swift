import ChatCore
import Foundation
import Logging
import NATS
import NIOCore
import NIOWebSocket
import ServiceLifecycle
import ServiceSupport
import Synchronization

/// The gateway's shared parts and its long-running duties: presence heartbeats to the chat-service,
/// NATS state for health and metrics, and on shutdown closing every socket with 1001 (going away)
/// so clients reconnect to another gateway.
public final class GatewayCore: Service, Sendable {
    public let configuration: GatewayConfiguration
    public let connection: NATSConnection
    let chat: ChatServiceClient
    let hub: RoomHub
    let metrics = GatewayMetrics()
    let logger: Logger
    let auth: Authenticator
    /// Send and room-creation limits shared by all connections of a user or an address.
    let limits: GatewayRateLimits
    /// `MAX_CONNECTIONS(_PER_IP)`, and the client address of a request (`TRUSTED_PROXIES`).
    let connectionLimiter: ConnectionLimiter
    private let clients = Mutex<[String: ClientConnection]>([:])

    init(configuration: GatewayConfiguration, connection: NATSConnection, auth: Authenticator, logger: Logger) {
        self.configuration = configuration
        self.connection = connection
        self.logger = logger
        self.chat = ChatServiceClient(connection: connection, timeout: configuration.requestTimeout, credential: configuration.credential)
        self.hub = RoomHub(
            connection: connection,
            chat: chat,
            logger: logger,
            metrics: metrics,
            presenceSyncMaxEntries: configuration.presenceSyncMaxEntries
        )
        self.auth = auth
        self.limits = GatewayRateLimits(configuration: configuration)
        self.connectionLimiter = ConnectionLimiter(
            maxConnections: configuration.maxConnections,
            maxPerIP: configuration.maxConnectionsPerIP,
            trustedProxies: configuration.trustedProxies
        )
    }

    public var connectionCount: Int { clients.withLock { $0.count } }
    public var roomCount: Int { hub.roomCount }

    func register(_ client: ClientConnection) {
        let count = clients.withLock { clients in
            clients[client.id] = client
            return clients.count
        }
        metrics.connections.record(count)
    }

    func unregister(_ client: ClientConnection) {
        let count = clients.withLock { clients in
            clients[client.id] = nil
            return clients.count
        }
        metrics.connections.record(count)
    }

    public func run() async throws {
        metrics.natsConnected.record(connection.isConnected ? 1 : 0)
        await withDiscardingTaskGroup { rooms in
            // The rooms' loops outlive the duties below: they serve the sockets until those are closed.
            rooms.addTask { await self.hub.run() }
            await withGracefulShutdownHandler {
                await withDiscardingTaskGroup { group in
                    group.addTask { await self.heartbeat() }
                    group.addTask { await self.forwardRoomNews() }
                    group.addTask { await self.forwardUserFrames() }
                    group.addTask { await self.followConnectionEvents() }
                    if configuration.presenceSyncInterval > .zero {
                        group.addTask {
                            while !Task.isCancelled {
                                try? await Task.sleep(for: self.configuration.presenceSyncInterval)
                                if Task.isCancelled { break }
                                await self.hub.syncPresence(gatewayID: self.configuration.presenceID)
                            }
                        }
                    }
                    // The handler below only closes the sockets; this ends the loops above, else run()
                    // never returns and the ServiceGroup (and the process) waits forever after SIGTERM.
                    try? await gracefulShutdown()
                    group.cancelAll()
                }
            } onGracefulShutdown: {
                self.logger.info("shutting down: closing WebSockets with 1001")
                for client in self.clients.withLock({ Array($0.values) }) {
                    client.close(.goingAway, reason: "server shutting down")
                }
            }
            // Wait (bounded) for sockets to close and their memberships to be released.
            let deadline = ContinuousClock.now.advanced(by: configuration.shutdownGrace)
            while connectionCount > 0, ContinuousClock.now < deadline {
                try? await Task.sleep(for: .milliseconds(20))
            }
            for client in clients.withLock({ Array($0.values) }) { client.channel.close(promise: nil) }
            rooms.cancelAll()
        }
        await connection.drain()
    }

    private func followConnectionEvents() async {
        for await event in connection.events() {
            metrics.natsConnected.record(event == .reconnected ? 1 : 0)
            guard event == .reconnected else { continue }
            hub.resyncAll()
            // A restarted nats-server may have brought back members deleted before it died; sync now
            // and once more past the sync grace (records younger than it are left alone by the first).
            hub.spawn {
                await self.hub.syncPresence(gatewayID: self.configuration.presenceID)
                try? await Task.sleep(for: .seconds(15))
                guard !Task.isCancelled else { return }
                await self.hub.syncPresence(gatewayID: self.configuration.presenceID)
            }
        }
    }

    /// Room-wide news (`room_created`) goes to every connected client.
    private func forwardRoomNews() async {
        await follow(ChatNames.roomsDeliverySubject) { message in
            DeliveryCheck.isRoomNews(message.payload)
        } recipients: { _ in
            { _ in true }
        }
    }

    /// `added` / `removed` go to every socket of the user named in `Chat-User`.
    private func forwardUserFrames() async {
        await follow(ChatNames.usersDeliverySubject) { message in
            DeliveryCheck.userFrame(message.payload) != nil && message.headers[ChatNames.userHeader].flatMap(UserID.init) != nil
        } recipients: { message in
            let user = message.headers[ChatNames.userHeader].flatMap(UserID.init)
            let frame = DeliveryCheck.userFrame(message.payload)
            return { client in
                guard client.userID == user else { return false }
                switch frame {
                case .muted(let room, let until): client.setMute(room, untilMilliseconds: .some(until))
                case .unmuted(let room): client.setMute(room, untilMilliseconds: .none)
                case .notice, nil: break
                }
                return true
            }
        }
    }

    /// Subscribes to a gateway-wide delivery subject and sends each checked frame to the matching
    /// clients. A failed subscribe is retried (it fails only while the connection is closed); it must
    /// not end the gateway's other duties.
    private func follow(
        _ subject: String,
        check: @escaping (NATSMessage) -> Bool,
        recipients: @escaping (NATSMessage) -> (ClientConnection) -> Bool
    ) async {
        var delay = Duration.milliseconds(100)
        while !Task.isCancelled {
            let subscription: NATSSubscription
            do {
                subscription = try connection.subscribe(subject, bufferLimit: 1024)
            } catch {
                logger.warning("could not subscribe to \(subject); retrying", metadata: [LogKey.error: "\(error)"])
                try? await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(5))
                continue
            }
            await withTaskCancellationHandler {
                for await message in subscription {
                    guard check(message) else {
                        metrics.deliveriesRefused.increment()
                        continue
                    }
                    let frame = WebSocketFrameBytes.text(message.payload)
                    let matches = recipients(message)
                    var flushes = FlushBatch()
                    for client in clients.withLock({ Array($0.values) }) where matches(client) { flushes.send(frame, to: client) }
                    flushes.submit()
                }
            } onCancel: {
                subscription.unsubscribe()
            }
        }
    }

    private func heartbeat() async {
        // A heartbeat lost with a dying chat-service replica or a NATS restart must not cost
        // REQUEST_TIMEOUT_MS (5 s) + the interval: that exceeded CHAT_PRESENCE_TIMEOUT_MS (6 s), and the
        // sweeper removed the members of a live gateway (seen in the 30-minute chaos run).
        let chat = ChatServiceClient(
            connection: connection,
            timeout: min(configuration.requestTimeout, configuration.heartbeatInterval),
            credential: configuration.credential
        )
        while !Task.isCancelled {
            do {
                let result: ServiceAPI.HeartbeatResult = try await chat.call(
                    .heartbeat,
                    ServiceAPI.Heartbeat(gatewayID: configuration.presenceID, connections: connectionCount)
                )
                if result.rejoin == true, hub.roomCount > 0 {
                    // Declared dead while still serving its sockets (a partition or a pause longer than
                    // the presence timeout): the chat-service removed its members; join them again.
                    logger.notice(
                        "the chat-service had expired this gateway; joining its members again",
                        metadata: ["rooms": "\(hub.roomCount)"]
                    )
                    hub.rejoinAll(gatewayID: configuration.presenceID)
                }
            } catch {
                logger.debug("heartbeat failed", metadata: [LogKey.error: "\(error)"])
            }
            try? await Task.sleep(for: configuration.heartbeatInterval)
        }
    }

    func health() -> (healthy: Bool, body: [UInt8]) {
        HealthReport.make(
            service: "gateway",
            instance: configuration.gatewayID,
            connection: connection,
            extra: [
                "connections": connectionCount, "rooms": roomCount,
            ]
        )
    }
}
