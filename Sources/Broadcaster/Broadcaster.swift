import ChatCore
import Foundation
import Hummingbird
import Logging
import Metrics
import NATS
import ServiceLifecycle
import ServiceSupport
import Synchronization

public struct BroadcasterConfiguration: Sendable {
    public var nats: NATSConfiguration
    public var httpHost = "0.0.0.0"
    /// `/health` and `/metrics` port (`HTTP_PORT`, default 3002; 0 picks a free port).
    public var httpPort = 3002
    /// Events fetched per pull (`BROADCASTER_BATCH`).
    public var batchSize = 256
    /// Consumer `max_ack_pending` (`BROADCASTER_MAX_ACK_PENDING`).
    public var maxAckPending = 4096
    /// Consumer `ack_wait` (`BROADCASTER_ACK_WAIT_MS`).
    public var ackWait: Duration = .seconds(30)
    /// Leadership lease: a standby takes over at most this long (plus one renewal period) after the
    /// active broadcaster dies (`BROADCASTER_LEASE_MS`, default 3 s → takeover < 5 s).
    public var leaseDuration: Duration = .seconds(3)
    public var instanceID = "broadcaster-" + String(makeUUID().prefix(8))
    /// Replicas of the lease bucket if the broadcaster creates it first (`CHAT_REPLICAS`, as the chat-service).
    public var replicas = 1

    public init(nats: NATSConfiguration) { self.nats = nats }

    public static func fromEnvironment(_ settings: Settings = Settings()) throws -> BroadcasterConfiguration {
        var configuration = BroadcasterConfiguration(nats: try settings.nats(name: "broadcaster", inboxPrefix: "_INBOX_broadcaster"))
        configuration.httpHost = settings.string("HTTP_HOST", default: configuration.httpHost)
        configuration.httpPort = try settings.int("HTTP_PORT", default: configuration.httpPort, range: 0...65535)
        configuration.batchSize = try settings.int("BROADCASTER_BATCH", default: configuration.batchSize, range: 1...10_000)
        configuration.maxAckPending = try settings.int(
            "BROADCASTER_MAX_ACK_PENDING",
            default: configuration.maxAckPending,
            range: 1...1_000_000
        )
        configuration.ackWait = try settings.milliseconds("BROADCASTER_ACK_WAIT_MS", default: configuration.ackWait)
        configuration.leaseDuration = try settings.milliseconds("BROADCASTER_LEASE_MS", default: configuration.leaseDuration)
        configuration.instanceID = settings.string("INSTANCE_ID", default: configuration.instanceID)
        configuration.replicas = try settings.int("CHAT_REPLICAS", default: configuration.replicas, range: 1...5)
        return configuration
    }
}

/// Fans every event of `CHAT_EVENTS` out to the gateways: each event becomes the exact WebSocket frame
/// (encoded once) on `chat.deliver.room.<room>` (or `chat.deliver.rooms` for room creation), with
/// `Chat-Seq` / `Chat-Stream-Seq` headers that gateways use to drop duplicates and detect gaps.
///
/// Active/standby: only the holder of the `broadcaster` lease consumes, so one process publishes the
/// whole stream in order (sharing one ordered stream between consumers would interleave rooms'
/// deliveries across processes and break per-room order). On taking the lease it re-creates the
/// durable consumer at its ack floor, so delivery resumes exactly after the last acknowledged event,
/// in order, with nothing skipped. Events are acknowledged (ack-all) only after their deliveries were
/// published and flushed to the server.
public final class BroadcasterRunner: Service, Sendable {
    struct State {
        var connection: NATSConnection?
        var service: NATSService?
        var leader = false
        var delivered: Int64 = 0
        var redelivered: Int64 = 0
        var lag: Int64 = 0
        var lastStreamSequence: UInt64 = 0
    }

    public let configuration: BroadcasterConfiguration
    let logger: Logger
    private let state = Mutex(State())
    private let deliveredCounter = Counter(label: "broadcaster_events_delivered_total")
    private let redeliveredCounter = Counter(label: "broadcaster_events_redelivered_total")
    private let lagGauge = Gauge(label: "broadcaster_lag_events")
    private let leaderGauge = Gauge(label: "broadcaster_leader")
    private let batchTimer = Metrics.Timer(label: "broadcaster_batch_duration_seconds")

    public init(configuration: BroadcasterConfiguration, logger: Logger) {
        self.configuration = configuration
        var logger = logger
        logger[metadataKey: LogKey.instance] = "\(configuration.instanceID)"
        self.logger = logger
    }

    public struct Snapshot: Sendable {
        public var leader: Bool
        public var delivered: Int64
        public var redelivered: Int64
        public var lag: Int64
        public var lastStreamSequence: UInt64
    }

    public var snapshot: Snapshot {
        state.withLock {
            Snapshot(
                leader: $0.leader,
                delivered: $0.delivered,
                redelivered: $0.redelivered,
                lag: $0.lag,
                lastStreamSequence: $0.lastStreamSequence
            )
        }
    }

    public var service: NATSService? { state.withLock { $0.service } }

    public func run() async throws {
        let connection = try await NATSConnection.connect(configuration.nats, logger: logger)
        let js = connection.jetStream
        // The chat-service owns the stream; wait for it rather than racing its creation.
        while (try? await js.streamInfo(ChatNames.eventStream)) == nil {
            logger.info("waiting for stream \(ChatNames.eventStream)")
            try await Task.sleep(for: .seconds(1))
        }
        var leasesConfig = KeyValueConfiguration(bucket: ChatNames.leasesBucket)
        leasesConfig.replicas = configuration.replicas  // as the chat-service creates it: R3 on a cluster
        let leases = try await StartupRetry.run("creating the leases bucket", logger: logger) { () throws(NATSError) in
            try await connection.keyValue(leasesConfig)
        }
        let lease = Lease(bucket: leases, name: "broadcaster", holder: configuration.instanceID, duration: configuration.leaseDuration)

        let service = NATSService(
            connection: connection,
            name: ChatNames.broadcasterServiceName,
            version: ChatVersion.current,
            description: "fans CHAT_EVENTS out to gateways",
            metadata: ["instance": configuration.instanceID],
            logger: logger,
            extraStats: { [weak self] _ in
                guard let snapshot = self?.snapshot else { return nil }
                return [
                    "leader": snapshot.leader ? 1 : 0, "delivered": snapshot.delivered, "redelivered": snapshot.redelivered,
                    "lag": snapshot.lag,
                ]
            }
        )
        service.addEndpoint(
            name: "status",
            subject: "chat.broadcaster.status.\(configuration.instanceID)",
            queueGroup: "broadcaster-status"
        ) { [weak self] _ in
            ServiceReply(payload: self?.health().body ?? [])
        }
        state.withLock {
            $0.connection = connection
            $0.service = service
        }
        try await withGracefulShutdownHandler {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await service.run() }
                group.addTask {
                    await lease.whileLeader(logger: self.logger) { await self.consumeWhileLeader(connection: connection) }
                }
                try await group.next()
                group.cancelAll()
            }
        } onGracefulShutdown: {
            service.stop()
        }
        await lease.release()
        await connection.drain()
    }

    /// Runs until cancelled (lease lost or shutdown). Any failure re-creates the consumer at its ack
    /// floor and starts over, so nothing is skipped and order is kept.
    func consumeWhileLeader(connection: NATSConnection) async {
        state.withLock { $0.leader = true }
        leaderGauge.record(1)
        defer {
            state.withLock { $0.leader = false }
            leaderGauge.record(0)
        }
        while !Task.isCancelled {
            do {
                let consumer = try await resetConsumer(connection.jetStream)
                try await pump(consumer, connection: connection)
            } catch {
                if Task.isCancelled { return }
                logger.warning("broadcast loop failed; resuming from the ack floor", metadata: [LogKey.error: "\(error)"])
                try? await Task.sleep(for: .milliseconds(500))
            }
        }
    }

    /// Re-creates the durable consumer so delivery starts right after its ack floor: events that were
    /// delivered but not acknowledged (by a crashed predecessor) come again, first and in order. Only a
    /// "no such consumer" answer starts from the beginning; a failed lookup (a timeout) throws, since
    /// the consumer may well exist with an ack floor to resume from.
    func resetConsumer(_ js: JetStream) async throws(NATSError) -> PullConsumer {
        var startAfter: UInt64 = 0
        if let info = try await js.consumerInfoIfExists(stream: ChatNames.eventStream, consumer: ChatNames.broadcasterConsumer) {
            startAfter = info.ackFloor.streamSequence
            try await js.deleteConsumer(stream: ChatNames.eventStream, consumer: ChatNames.broadcasterConsumer)
        }
        var config = ConsumerConfiguration(durableName: ChatNames.broadcasterConsumer)
        config.description = "nats-chat broadcaster: every event to every gateway"
        config.ackPolicy = .all
        config.ackWait = .milliseconds(configuration.ackWait.inMilliseconds)
        config.maxAckPending = configuration.maxAckPending
        config.maxWaiting = 16
        if startAfter > 0 { config.deliverPolicy = .byStartSequence(startAfter + 1) }
        try await js.createOrUpdateConsumer(stream: ChatNames.eventStream, config)
        logger.info("consuming", metadata: ["consumer": "\(ChatNames.broadcasterConsumer)", "start_after": "\(startAfter)"])
        return try js.pullConsumer(stream: ChatNames.eventStream, consumer: ChatNames.broadcasterConsumer)
    }

    /// One pull request for `batchSize` events stays outstanding and events are published as they
    /// arrive (a quiet room's event is not held back), so a request is sent per `batchSize` events or
    /// per second, not per event; acks are batched too (see `AckBatch`). A wait ends at the request's
    /// deadline or when the pending acks are due, whichever is first (an entry in the connection's
    /// deadline heap, not a timer task).
    private func pump(_ consumer: PullConsumer, connection: NATSConnection) async throws {
        let expires = Duration.seconds(1)
        var outstanding = 0  // events the current request may still bring
        var requestDeadline = ContinuousClock.now
        var acks = AckBatch()
        while !Task.isCancelled {
            if outstanding <= 0 {
                try consumer.request(batch: configuration.batchSize, expires: expires)
                outstanding = configuration.batchSize
                // The server ends the request at `expires` (408); past this its answer was lost (e.g.
                // a reconnect in between) and a new request goes out.
                requestDeadline = ContinuousClock.now.advanced(by: expires + .milliseconds(500))
            }
            let received = try await consumer.receive(until: min(requestDeadline, acks.due ?? requestDeadline))
            let now = ContinuousClock.now
            if received.requestEnded || now >= requestDeadline { outstanding = 0 }
            if let last = received.messages.last {
                outstanding -= received.messages.count
                let start = ContinuousClock.now
                var redelivered: Int64 = 0
                for event in received.messages {
                    if event.deliveries > 1 { redelivered += 1 }
                    try publish(event, connection: connection)
                }
                acks.add(last, count: received.messages.count, now: now)
                batchTimer.recordInterval(since: start)
                deliveredCounter.increment(by: Int64(received.messages.count))
                if redelivered > 0 { redeliveredCounter.increment(by: redelivered) }
                lagGauge.record(Int64(last.pending))
                state.withLock {
                    $0.delivered += Int64(received.messages.count)
                    $0.redelivered += redelivered
                    $0.lag = Int64(last.pending)
                    $0.lastStreamSequence = last.streamSequence
                }
            }
            try acks.flushIfDue(now: now)
        }
    }

    /// Acknowledges (ack policy "all": the last one covers all before it) at most every
    /// `maxDelay` or every `maxCount` events, not per event. The ack goes out on the same connection
    /// after the deliveries, and the server reads a connection in order, so it cannot take the ack
    /// without having taken them (libnats replays both in order after a reconnect); no waiting for
    /// the ack's reply. An ack lost or delayed means redelivery from the ack floor after a failover,
    /// which gateways drop by stream sequence.
    struct AckBatch {
        static let maxCount = 128
        static let maxDelay = Duration.milliseconds(50)
        private var last: JetStreamMessage?
        private var count = 0
        private var since: ContinuousClock.Instant?

        /// When the pending acks must go out even if no more events come.
        var due: ContinuousClock.Instant? { since.map { $0 + Self.maxDelay } }

        mutating func add(_ message: JetStreamMessage, count: Int, now: ContinuousClock.Instant) {
            last = message
            self.count += count
            if since == nil { since = now }
        }

        mutating func flushIfDue(now: ContinuousClock.Instant) throws(NATSError) {
            guard let last, let since, count >= Self.maxCount || now - since >= Self.maxDelay else { return }
            try last.ack()
            self.last = nil
            self.count = 0
            self.since = nil
        }
    }

    private func publish(_ event: JetStreamMessage, connection: NATSConnection) throws(NATSError) {
        guard let delivery = ServerFrame.forEvent(type: event.headers[ChatNames.eventTypeHeader], payload: event.payload) else {
            logger.warning("skipping unknown event", metadata: ["subject": "\(event.subject)", "stream_seq": "\(event.streamSequence)"])
            return
        }
        var headers = NATSHeaders()
        headers[ChatNames.streamSeqHeader] = String(event.streamSequence)
        headers[ChatNames.eventTypeHeader] = event.headers[ChatNames.eventTypeHeader]
        if let frame = delivery.frame {
            var roomHeaders = headers
            roomHeaders[ChatNames.broadcasterFeaturesHeader] = ChatNames.accessFeature
            if let seq = delivery.seq { roomHeaders[ChatNames.roomSeqHeader] = String(seq) }
            let subject: String
            if let room = delivery.room {
                subject = ChatNames.deliverySubject(room)
                roomHeaders[ChatNames.roomHeader] = room.rawValue
            } else {
                subject = ChatNames.roomsDeliverySubject
            }
            try connection.publish(subject, payload: frame, headers: roomHeaders)
        }
        // After the room's frame: a gateway drops a removed user's sockets from the room first.
        if let (user, frame) = delivery.forUser {
            headers[ChatNames.userHeader] = user.rawValue
            try connection.publish(ChatNames.usersDeliverySubject, payload: frame, headers: headers)
        }
    }

    public func health() -> (healthy: Bool, body: [UInt8]) {
        let (connection, snapshot) = state.withLock {
            (
                $0.connection,
                Snapshot(
                    leader: $0.leader,
                    delivered: $0.delivered,
                    redelivered: $0.redelivered,
                    lag: $0.lag,
                    lastStreamSequence: $0.lastStreamSequence
                )
            )
        }
        return HealthReport.make(
            service: "broadcaster",
            instance: configuration.instanceID,
            connection: connection,
            extra: [
                "role": snapshot.leader ? "active" : "standby",
                "delivered": snapshot.delivered,
                "redelivered": snapshot.redelivered,
                "lag": snapshot.lag,
                "last_stream_seq": snapshot.lastStreamSequence,
            ]
        )
    }
}

/// The broadcaster application: status HTTP server plus the runner. Tests boot it on port 0.
public func buildBroadcaster(configuration: BroadcasterConfiguration, logger: Logger) -> (some ApplicationProtocol, BroadcasterRunner) {
    Observability.bootstrapMetrics()
    let runner = BroadcasterRunner(configuration: configuration, logger: logger)
    let router = Router()
    StatusRoutes.add(to: router) { runner.health() }
    let app = Application(
        router: router,
        configuration: .init(address: .hostname(configuration.httpHost, port: configuration.httpPort), serverName: "broadcaster"),
        services: [runner],
        logger: logger
    )
    return (app, runner)
}
