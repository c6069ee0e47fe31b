import Logging
import ServiceLifecycle
import Synchronization

/// A connection to NATS: publish, subscribe, request, JetStream and KV, all async and Sendable.
///
/// Reconnects forever by default; what is published while disconnected is buffered (see
/// `NATSConfiguration.reconnectBufferBytes`) and subscriptions are re-sent after reconnecting.
///
/// Its one background job is the deadline timer of requests and waits (`DeadlineRegistry`). As a
/// `Service` in a ServiceGroup the timer runs in `run()`; used without one, the timer starts with the
/// first deadline and ends with `close()` or `drain()`.
public final class NATSConnection: Service, Sendable {
    let handle: ConnectionHandle
    let eventsBox: ConnectionEvents
    let deadlines: DeadlineRegistry
    let mux: RequestMux
    private let muxSubscription: NATSCallbackSubscription
    public let configuration: NATSConfiguration
    public let logger: Logger
    let executor: BlockingExecutor

    private init(
        handle: ConnectionHandle,
        events: ConnectionEvents,
        configuration: NATSConfiguration,
        logger: Logger,
        executor: BlockingExecutor
    ) throws(NATSError) {
        self.handle = handle
        self.eventsBox = events
        self.configuration = configuration
        self.logger = logger
        self.executor = executor
        let deadlines = DeadlineRegistry()
        self.deadlines = deadlines
        let mux = RequestMux(inbox: LibNATS.newInbox(prefix: configuration.inboxPrefix), deadlines: deadlines)
        self.mux = mux
        let handleForSub = try SubscriptionHandle.subscribe(
            connection: handle,
            subject: mux.subscriptionSubject,
            queue: nil,
            pendingLimit: configuration.subscriptionPendingLimit,
            context: SubscriptionContext(onMessage: { [weak mux] message in mux?.deliver(message) }, onComplete: {})
        )
        self.muxSubscription = NATSCallbackSubscription(handle: handleForSub, subject: mux.subscriptionSubject)
    }

    deinit {
        mux.close()
        deadlines.close()
    }

    /// Runs the deadline timer until a graceful shutdown, then drains the connection; cancelled, it
    /// closes it. List the connection before the services that use it in a ServiceGroup: the group
    /// shuts services down in reverse order, so theirs stop before the connection drains.
    public func run() async throws {
        let deadlines = self.deadlines
        await cancelWhenGracefulShutdown { await deadlines.run() }
        // Closed before the group asked (a service drained it at the end of its own shutdown): a service
        // that returned early would fail the group, so this one waits to be asked.
        if !Task.isShuttingDownGracefully, !Task.isCancelled { try? await gracefulShutdown() }
        if Task.isShuttingDownGracefully, !Task.isCancelled {
            await drain()
        } else {
            close()
        }
    }

    /// Connects, retrying with backoff until connected when `retryUntilConnected` (the default for
    /// services, which should wait for NATS rather than crash-loop), or throwing after one attempt.
    public static func connect(
        _ configuration: NATSConfiguration,
        logger: Logger = Logger(label: "nats"),
        retryUntilConnected: Bool = true,
        executor: BlockingExecutor = .shared
    ) async throws(NATSError) -> NATSConnection {
        let events = ConnectionEvents(logger: logger)
        var delay: Duration = .milliseconds(100)
        while true {
            do {
                let handle = try await executor.run { () throws(NATSError) in try ConnectionHandle.connect(configuration, events: events) }
                let connection = try NATSConnection(
                    handle: handle,
                    events: events,
                    configuration: configuration,
                    logger: logger,
                    executor: executor
                )
                logger.info("connected to NATS", metadata: ["nats.url": "\(handle.connectedURL ?? "?")"])
                return connection
            } catch {
                guard retryUntilConnected, error.kind != .invalidArgument, !Task.isCancelled else { throw error }
                logger.warning("NATS not reachable, retrying", metadata: ["error": "\(error)", "retry_in": "\(delay)"])
                do { try await Task.sleep(for: delay) } catch { throw NATSError(.cancelled, message: "connect cancelled") }
                delay = min(delay * 2, .seconds(2))
            }
        }
    }

    // MARK: State

    public var status: ConnectionStatus { handle.status }
    public var isConnected: Bool { handle.status == .connected }
    public var connectedURL: String? { handle.connectedURL }
    public var maxPayload: Int { handle.maxPayload }
    public var reconnects: Int { eventsBox.reconnects }

    /// Connection events (disconnected, reconnected, closed) for health reporting. Each call makes a new listener.
    public func events() -> AsyncStream<ConnectionEvent> { eventsBox.stream() }

    // MARK: Core NATS

    public func publish(_ subject: String, payload: [UInt8] = [], headers: NATSHeaders? = nil, reply: String? = nil) throws(NATSError) {
        try withBytes(payload) { (bytes) throws(NATSError) in
            try handle.publish(subject: subject, reply: reply, headers: headers, payload: bytes)
        }
    }

    public func publish(
        _ subject: String,
        bytes: UnsafeRawBufferPointer,
        headers: NATSHeaders? = nil,
        reply: String? = nil
    ) throws(NATSError) {
        try handle.publish(subject: subject, reply: reply, headers: headers, payload: bytes)
    }

    /// Round trip to the server: everything published before is processed by it when this returns.
    public func flush(timeout: Duration = .seconds(5)) async throws(NATSError) {
        let handle = self.handle
        try await executor.run { () throws(NATSError) in try handle.flush(timeoutMilliseconds: timeout.inMilliseconds) }
    }

    /// A bounded `AsyncSequence` of messages. See `NATSSubscription` for the overflow policy.
    public func subscribe(_ subject: String, queue: String? = nil, bufferLimit: Int = 65_536) throws(NATSError) -> NATSSubscription {
        let buffer = MessageBuffer<NATSMessage>(limit: bufferLimit, deadlines: deadlines)
        let handle = try SubscriptionHandle.subscribe(
            connection: self.handle,
            subject: subject,
            queue: queue,
            pendingLimit: configuration.subscriptionPendingLimit,
            context: SubscriptionContext(onMessage: { buffer.append($0) }, onComplete: { buffer.finish() })
        )
        return NATSSubscription(handle: handle, buffer: buffer, subject: subject)
    }

    /// The fast path: `handler` runs on the libnats delivery thread for each message and must not block.
    public func subscribe(
        _ subject: String,
        queue: String? = nil,
        onComplete: @escaping @Sendable () -> Void = {},
        handler: @escaping @Sendable (NATSMessage) -> Void
    ) throws(NATSError) -> NATSCallbackSubscription {
        let handle = try SubscriptionHandle.subscribe(
            connection: self.handle,
            subject: subject,
            queue: queue,
            pendingLimit: configuration.subscriptionPendingLimit,
            context: SubscriptionContext(onMessage: handler, onComplete: onComplete)
        )
        return NATSCallbackSubscription(handle: handle, subject: subject)
    }

    /// Request-reply. Throws `.noResponders` at once when nobody serves `subject`, `.timeout` after `timeout`.
    public func request(
        _ subject: String,
        payload: [UInt8] = [],
        headers: NATSHeaders? = nil,
        timeout: Duration? = nil
    ) async throws(NATSError) -> NATSMessage {
        let handle = self.handle
        return try await mux.request(timeout: timeout ?? configuration.requestTimeout) { (reply) throws(NATSError) in
            try withBytes(payload) { (bytes) throws(NATSError) in
                try handle.publish(subject: subject, reply: reply, headers: headers, payload: bytes)
            }
        }
    }

    /// Sends all requests before awaiting any reply (pipelining); one result per request, in order.
    public func requestMany(
        _ requests: [(subject: String, payload: [UInt8], headers: NATSHeaders?)],
        timeout: Duration? = nil
    ) async -> [Result<NATSMessage, NATSError>] {
        let handle = self.handle
        return await mux.requestMany(count: requests.count, timeout: timeout ?? configuration.requestTimeout) {
            (index, reply) throws(NATSError) in
            let request = requests[index]
            try withBytes(request.payload) { (bytes) throws(NATSError) in
                try handle.publish(subject: request.subject, reply: reply, headers: request.headers, payload: bytes)
            }
        }
    }

    public func newInbox() -> String { LibNATS.newInbox(prefix: configuration.inboxPrefix) }

    // MARK: Shutdown

    /// Drains subscriptions and pending publishes, then closes; returns when closed or after `timeout`.
    public func drain(timeout: Duration = .seconds(5)) async {
        let events = eventsBox.stream()
        do {
            try handle.drain(timeoutMilliseconds: timeout.inMilliseconds)
        } catch {
            close()
            return
        }
        let deadline = ContinuousClock.now.advanced(by: timeout + .seconds(1))
        await withTaskGroup(of: Void.self) { group in
            group.addTask { for await event in events where event == .closed { return } }
            group.addTask { try? await Task.sleep(until: deadline) }
            await group.next()
            group.cancelAll()
        }
        mux.close()
        deadlines.close()
    }

    public func close() {
        handle.close()
        mux.close()
        deadlines.close()
    }

    // MARK: JetStream and KV

    public var jetStream: JetStream { JetStream(connection: self) }

}

/// `Array.withUnsafeBytes` with a typed error.
func withBytes<R>(_ bytes: [UInt8], _ body: (UnsafeRawBufferPointer) throws(NATSError) -> R) throws(NATSError) -> R {
    let result: Result<R, NATSError> = bytes.withUnsafeBytes { buffer in
        do throws(NATSError) { return .success(try body(buffer)) } catch { return .failure(error) }
    }
    return try result.get()
}
