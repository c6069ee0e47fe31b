extension JetStream {
    /// Binds to an existing durable pull consumer. Create it first with `createOrUpdateConsumer`.
    public func pullConsumer(stream: String, consumer: String) throws(NATSError) -> PullConsumer {
        try PullConsumer(connection: connection, stream: stream, consumer: consumer)
    }
}

/// Fetches batches from a durable pull consumer through a private inbox subscription.
public final class PullConsumer: Sendable {
    public let stream: String
    public let consumer: String
    let connection: NATSConnection
    private let inbox: String
    private let subscription: NATSSubscription

    init(connection: NATSConnection, stream: String, consumer: String) throws(NATSError) {
        self.connection = connection
        self.stream = stream
        self.consumer = consumer
        self.inbox = connection.newInbox()
        self.subscription = try connection.subscribe(inbox, bufferLimit: 1_000_000)
    }

    deinit { subscription.unsubscribe() }

    /// Up to `batch` messages; returns early with fewer (possibly none) when `expires` passes.
    /// With `noWait` the server answers at once with what it has (then a 404 status) instead of
    /// holding the request until the batch is full.
    public func fetch(batch: Int, expires: Duration = .seconds(1), noWait: Bool = false) async throws(NATSError) -> [JetStreamMessage] {
        try request(batch: batch, expires: expires, noWait: noWait)
        let deadline = ContinuousClock.now.advanced(by: expires + .milliseconds(500))
        var messages: [JetStreamMessage] = []
        while messages.count < batch {
            let received = try await receive(until: deadline)
            messages += received.messages
            if received.requestEnded || (received.messages.isEmpty && ContinuousClock.now >= deadline) { break }
        }
        return messages
    }

    /// Asks the server for up to `batch` messages, sent as they become available until `expires`
    /// (`receive` hands them over as they arrive). A request ends when `batch` messages were sent
    /// (silently: count them) or with a status (`Received.requestEnded`).
    public func request(batch: Int, expires: Duration = .seconds(1), noWait: Bool = false) throws(NATSError) {
        let body =
            noWait
            ? "{\"batch\":\(batch),\"no_wait\":true}"
            : "{\"batch\":\(batch),\"expires\":\(expires.inMilliseconds * 1_000_000)}"
        try connection.publish("$JS.API.CONSUMER.MSG.NEXT.\(stream).\(consumer)", payload: Array(body.utf8), reply: inbox)
    }

    public struct Received: Sendable {
        public var messages: [JetStreamMessage] = []
        /// The server ended the request: it expired, or had nothing (no_wait), or refused it.
        public var requestEnded: Bool { endStatus != nil }
        /// The status that ended it: 408 expired, 404 nothing (no_wait), 409 refused, 503 no such consumer.
        public var endStatus: Int?
    }

    /// Everything that arrived for this consumer's requests, waiting for something if nothing has;
    /// `until`: return empty at that instant (a deadline in the connection's registry, no timer task);
    /// without it, only a message or `wake()` ends the wait. Throws when the consumer
    /// was deleted or lost its leader, or the subscription closed.
    public func receive(until deadline: ContinuousClock.Instant? = nil) async throws(NATSError) -> Received {
        let arrived: [NATSMessage]?
        if let deadline {
            arrived = await subscription.buffer.takeAll(until: deadline)
        } else {
            arrived = await subscription.buffer.takeAll()
        }
        guard let arrived else { throw NATSError(.connectionClosed, message: "consumer \(consumer) subscription closed") }
        var received = Received()
        for message in arrived {
            if let status = message.headers.status, message.payload.isEmpty {
                switch status {
                case 100: continue  // heartbeat / flow control
                case 409:
                    let description = message.headers.statusDescription ?? ""
                    if description.contains("Deleted") || description.contains("Leadership") {
                        throw NATSError(.jetStream, message: "consumer \(consumer): \(description)")
                    }
                    received.endStatus = 409
                default: received.endStatus = status  // 404 no messages, 408 request expired, 503, …
                }
            } else if let jsMessage = JetStreamMessage(message: message, connection: connection) {
                received.messages.append(jsMessage)
            }
        }
        return received
    }

    /// Makes a waiting (or the next) `receive` return at once.
    public func wake() { subscription.buffer.wake() }
}
