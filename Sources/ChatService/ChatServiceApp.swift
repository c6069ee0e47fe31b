import ChatCore
import Foundation
import Hummingbird
import Logging
import NATS
import ServiceLifecycle
import ServiceSupport
import Synchronization

/// The chat-service's long-running work: connect, ensure the stream and buckets, serve `chat.svc.*`
/// in queue group `chat-service`, and (on the one replica holding the lease) expire the members of
/// dead gateways. Stops taking requests on graceful shutdown and lets in-flight ones finish.
public final class ChatServiceRunner: Service, Sendable {
    struct State {
        var connection: NATSConnection?
        var service: NATSService?
        var storage: ChatStorage?
    }

    public let configuration: ChatServiceConfiguration
    let logger: Logger
    private let state = Mutex(State())

    public init(configuration: ChatServiceConfiguration, logger: Logger) {
        self.configuration = configuration
        var logger = logger
        logger[metadataKey: LogKey.instance] = "\(configuration.instanceID)"
        self.logger = logger
    }

    public var service: NATSService? { state.withLock { $0.service } }
    public var storage: ChatStorage? { state.withLock { $0.storage } }

    public func run() async throws {
        // The keys first: a key set file that cannot be used ends start-up before anything connects.
        var verifier: TokenVerifier?
        if let auth = configuration.auth { verifier = try await TokenVerifier.start(configuration: auth, logger: logger) }
        let connection = try await NATSConnection.connect(configuration.nats, logger: logger)
        let (configuration, logger) = (self.configuration, self.logger)
        let storage = try await StartupRetry.run("creating the event stream and buckets", logger: logger) { () throws(NATSError) in
            try await ChatStorage.open(connection: connection, configuration: configuration, logger: logger)
        }
        let service = NATSService(
            connection: connection,
            name: ChatNames.serviceName,
            version: ChatVersion.current,
            description: "nats-chat rooms, membership, messages and history",
            metadata: ["instance": configuration.instanceID],
            logger: logger
        )
        // Token mode here too: the chat-service verifies who a request acts for itself.
        logger.info("auth mode: \(configuration.auth?.summary ?? "username (no AUTH_JWT_SECRET or AUTH_JWKS_*)")")
        let users = UserTokens(verifier: verifier, logger: logger)
        if configuration.allowLegacyGateways {
            logger.warning(
                "CHAT_ALLOW_LEGACY_GATEWAYS is on: member requests without a gateway credential are taken on their word",
                metadata: ["fix": "unset it once every gateway is upgraded"]
            )
        }
        ChatHandlers(storage: storage, users: users, allowLegacyGateways: configuration.allowLegacyGateways, logger: logger)
            .register(on: service)
        let leases = storage.leases
        // A lease shorter than a few seconds would flap on a loaded machine; expiry itself is checked by time.
        let lease = Lease(
            bucket: leases,
            name: "presence-sweeper",
            holder: configuration.instanceID,
            duration: max(.seconds(3), configuration.presenceTimeout / 2)
        )
        state.withLock { $0 = State(connection: connection, service: service, storage: storage) }

        try await withGracefulShutdownHandler {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await service.run() }
                group.addTask { await self.sweepPresence(storage.presence, lease: lease, connection: connection) }
                if self.configuration.idempotencyFilter {
                    group.addTask { await storage.idempotency.follow() }
                }
                try await group.next()
                group.cancelAll()
            }
        } onGracefulShutdown: {
            self.logger.info("shutting down: draining requests")
            service.stop()
        }
        await connection.drain()
    }

    /// While leader: expire gateways every sweep; reconcile every member (see
    /// `PresenceRegistry.sweepExpiredGateways`) on becoming leader, after a NATS reconnect (a restarted
    /// server may have brought deleted members back) and every `presenceReconcileInterval`.
    private func sweepPresence(_ presence: PresenceRegistry, lease: Lease, connection: NATSConnection) async {
        let interval = configuration.presenceSweepInterval
        let reconcileInterval = configuration.presenceReconcileInterval
        await lease.whileLeader(logger: logger) {
            var reconciled: (at: ContinuousClock.Instant, reconnects: Int)? = nil
            while !Task.isCancelled {
                let now = ContinuousClock.now
                let reconcile = reconciled.map { now - $0.at >= reconcileInterval || connection.reconnects != $0.reconnects } ?? true
                do {
                    let reconnects = connection.reconnects
                    try await presence.sweepExpiredGateways(nowMilliseconds: ChatTime.now().milliseconds, reconcile: reconcile)
                    if reconcile { reconciled = (now, reconnects) }
                } catch {
                    self.logger.warning("presence sweep failed", metadata: [LogKey.error: "\(error)"])
                }
                try? await Task.sleep(for: interval)
            }
        }
    }

    public func health() -> (healthy: Bool, body: [UInt8]) {
        let (connection, service) = state.withLock { ($0.connection, $0.service) }
        return HealthReport.make(
            service: "chat-service",
            instance: configuration.instanceID,
            connection: connection,
            extra: ["service_id": service?.id ?? ""]
        )
    }
}

/// Builds the chat-service application: the status HTTP server (`/health`, `/metrics`) plus the runner.
/// Kept apart from `@main` so tests can boot the real thing on port 0.
public func buildChatService(configuration: ChatServiceConfiguration, logger: Logger) -> (some ApplicationProtocol, ChatServiceRunner) {
    Observability.bootstrapMetrics()
    let runner = ChatServiceRunner(configuration: configuration, logger: logger)
    let router = Router()
    StatusRoutes.add(to: router) { runner.health() }
    let app = Application(
        router: router,
        configuration: .init(address: .hostname(configuration.httpHost, port: configuration.httpPort), serverName: "chat-service"),
        services: [runner],
        logger: logger
    )
    return (app, runner)
}
