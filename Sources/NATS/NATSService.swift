import Foundation
import Logging
import Synchronization

/// A reply from a service endpoint: a result or an error. Errors carry `Nats-Service-Error` and
/// `Nats-Service-Error-Code` headers as the NATS service API specifies, plus whatever body the caller chose.
public struct ServiceReply: Sendable {
    public var payload: [UInt8]
    public var headers: NATSHeaders
    public var error: (code: Int, description: String)?

    public init(payload: [UInt8], headers: NATSHeaders = NATSHeaders()) {
        self.payload = payload
        self.headers = headers
    }

    public static func error(code: Int, description: String, payload: [UInt8] = [], headers: NATSHeaders = NATSHeaders()) -> ServiceReply {
        var reply = ServiceReply(payload: payload, headers: headers)
        reply.error = (code, description)
        reply.headers["Nats-Service-Error"] = description
        reply.headers["Nats-Service-Error-Code"] = String(code)
        return reply
    }
}

/// The NATS service API (`$SRV.PING|INFO|STATS`), which libnats 3.4 lacks: a named, versioned service
/// whose endpoints are queue-group subscriptions, with per-endpoint request/error/latency statistics,
/// so `nats micro ls|info|stats` works against it.
public final class NATSService: Sendable {
    public typealias Handler = @Sendable (NATSMessage) async -> ServiceReply

    public struct EndpointStats: Sendable {
        public var requests: Int64 = 0
        public var errors: Int64 = 0
        public var lastError = ""
        public var processingNanoseconds: Int64 = 0
    }

    struct Endpoint: Sendable {
        var name: String
        var subject: String
        var queueGroup: String
        var handler: Handler
    }

    private struct State {
        var endpoints: [Endpoint] = []
        var stats: [String: EndpointStats] = [:]
        var subscriptions: [NATSSubscription] = []
        var discovery: [NATSCallbackSubscription] = []
    }

    public let name: String
    public let version: String
    public let id: String
    public let serviceDescription: String
    public let metadata: [String: String]
    public let maxConcurrentRequests: Int
    let connection: NATSConnection
    let logger: Logger
    private let started = Date()
    private let state = Mutex(State())
    private let extraStats: (@Sendable (String) -> [String: Int64]?)?

    public init(
        connection: NATSConnection,
        name: String,
        version: String,
        description: String = "",
        metadata: [String: String] = [:],
        maxConcurrentRequests: Int = 256,
        logger: Logger,
        extraStats: (@Sendable (String) -> [String: Int64]?)? = nil
    ) {
        self.connection = connection
        self.name = name
        self.version = version
        self.serviceDescription = description
        self.metadata = metadata
        self.maxConcurrentRequests = maxConcurrentRequests
        self.logger = logger
        self.extraStats = extraStats
        let alphabet = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
        self.id = String((0..<22).map { _ in alphabet.randomElement()! })
    }

    public func addEndpoint(name: String, subject: String, queueGroup: String = "q", handler: @escaping Handler) {
        state.withLock { state in
            state.endpoints.append(Endpoint(name: name, subject: subject, queueGroup: queueGroup, handler: handler))
            state.stats[name] = EndpointStats()
        }
    }

    public func stats(_ endpoint: String) -> EndpointStats? { state.withLock { $0.stats[endpoint] } }

    /// Subscribes the discovery subjects and every endpoint, then serves requests until cancelled.
    public func run() async throws(NATSError) {
        let endpoints = state.withLock { $0.endpoints }
        var subscribed: [(Endpoint, NATSSubscription)] = []
        for endpoint in endpoints {
            subscribed.append((endpoint, try connection.subscribe(endpoint.subject, queue: endpoint.queueGroup)))
        }
        let subscriptions = subscribed
        var discovery: [NATSCallbackSubscription] = []
        for verb in ["PING", "INFO", "STATS"] {
            for subject in ["$SRV.\(verb)", "$SRV.\(verb).\(name)", "$SRV.\(verb).\(name).\(id)"] {
                discovery.append(try connection.subscribe(subject) { [weak self] message in self?.answerDiscovery(verb, message) })
            }
        }
        state.withLock { state in
            state.subscriptions = subscriptions.map(\.1)
            state.discovery = discovery
        }
        try await connection.flush()
        logger.info("service started", metadata: ["service": "\(name)", "service.id": "\(id)", "endpoints": "\(endpoints.map(\.subject))"])
        await withTaskGroup(of: Void.self) { group in
            for (endpoint, subscription) in subscriptions {
                group.addTask { await self.serve(endpoint, subscription) }
            }
            await withTaskCancellationHandler {
                await group.waitForAll()
            } onCancel: {
                for (_, subscription) in subscriptions { subscription.drain() }
            }
        }
        for subscription in discovery { subscription.unsubscribe() }
    }

    /// Stops accepting requests; those in flight finish (their subscriptions are drained).
    public func stop() {
        let (subscriptions, discovery) = state.withLock { ($0.subscriptions, $0.discovery) }
        subscriptions.forEach { $0.drain() }
        discovery.forEach { $0.unsubscribe() }
    }

    private func serve(_ endpoint: Endpoint, _ subscription: NATSSubscription) async {
        await withTaskGroup(of: Void.self) { group in
            var inFlight = 0
            for await message in subscription {
                if inFlight >= maxConcurrentRequests {
                    await group.next()
                    inFlight -= 1
                }
                inFlight += 1
                group.addTask { await self.handle(endpoint, message) }
            }
        }
    }

    private func handle(_ endpoint: Endpoint, _ message: NATSMessage) async {
        let start = ContinuousClock.now
        let reply = await endpoint.handler(message)
        let elapsed = ContinuousClock.now - start
        let nanoseconds = elapsed.components.seconds * 1_000_000_000 + elapsed.components.attoseconds / 1_000_000_000
        state.withLock { state in
            state.stats[endpoint.name, default: EndpointStats()].requests += 1
            state.stats[endpoint.name, default: EndpointStats()].processingNanoseconds += nanoseconds
            if let error = reply.error {
                state.stats[endpoint.name, default: EndpointStats()].errors += 1
                state.stats[endpoint.name, default: EndpointStats()].lastError = "\(error.code): \(error.description)"
            }
        }
        guard let replySubject = message.reply else { return }
        do {
            try connection.publish(replySubject, payload: reply.payload, headers: reply.headers.isEmpty ? nil : reply.headers)
        } catch {
            logger.warning("could not send reply", metadata: ["endpoint": "\(endpoint.name)", "error": "\(error)"])
        }
    }

    // MARK: Discovery

    private func answerDiscovery(_ verb: String, _ message: NATSMessage) {
        guard let reply = message.reply else { return }
        let body: [String: Any]
        switch verb {
        case "PING": body = base(type: "io.nats.micro.v1.ping_response")
        case "INFO": body = info()
        default: body = statsBody()
        }
        guard let data = try? JSONSerialization.data(withJSONObject: body, options: [.sortedKeys]) else { return }
        try? connection.publish(reply, payload: Array(data))
    }

    private func base(type: String) -> [String: Any] {
        ["type": type, "name": name, "id": id, "version": version, "metadata": metadata]
    }

    func info() -> [String: Any] {
        var body = base(type: "io.nats.micro.v1.info_response")
        body["description"] = serviceDescription
        body["endpoints"] = state.withLock { $0.endpoints }.map { endpoint -> [String: Any] in
            ["name": endpoint.name, "subject": endpoint.subject, "queue_group": endpoint.queueGroup, "metadata": NSNull()]
        }
        return body
    }

    func statsBody() -> [String: Any] {
        var body = base(type: "io.nats.micro.v1.stats_response")
        body["started"] = ISO8601DateFormatter().string(from: started)
        let (endpoints, stats) = state.withLock { ($0.endpoints, $0.stats) }
        body["endpoints"] = endpoints.map { endpoint -> [String: Any] in
            let stat = stats[endpoint.name] ?? EndpointStats()
            var entry: [String: Any] = [
                "name": endpoint.name, "subject": endpoint.subject, "queue_group": endpoint.queueGroup,
                "num_requests": stat.requests, "num_errors": stat.errors, "last_error": stat.lastError,
                "processing_time": stat.processingNanoseconds,
                "average_processing_time": stat.requests > 0 ? stat.processingNanoseconds / stat.requests : 0,
            ]
            if let data = extraStats?(endpoint.name) { entry["data"] = data }
            return entry
        }
        return body
    }
}
