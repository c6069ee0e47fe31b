extension JetStream {
    public struct PublishOptions: Sendable {
        /// Sets `Nats-Msg-Id`: a second publish with the same id inside the stream's duplicate window is
        /// acknowledged with `duplicate: true` and not stored.
        public var messageID: String?
        /// Sets `Nats-Expected-Last-Subject-Sequence`: stored only if the subject's last message has this
        /// stream sequence (0: the subject has no message). Otherwise `.wrongLastSequence`.
        public var expectedLastSubjectSequence: UInt64?
        public var expectedStream: String?

        public init(messageID: String? = nil, expectedLastSubjectSequence: UInt64? = nil, expectedStream: String? = nil) {
            self.messageID = messageID
            self.expectedLastSubjectSequence = expectedLastSubjectSequence
            self.expectedStream = expectedStream
        }

        func apply(to headers: NATSHeaders?) -> NATSHeaders? {
            guard messageID != nil || expectedLastSubjectSequence != nil || expectedStream != nil else { return headers }
            var headers = headers ?? NATSHeaders()
            if let messageID { headers["Nats-Msg-Id"] = messageID }
            if let expectedLastSubjectSequence { headers["Nats-Expected-Last-Subject-Sequence"] = String(expectedLastSubjectSequence) }
            if let expectedStream { headers["Nats-Expected-Stream"] = expectedStream }
            return headers
        }
    }

    public func publish(
        _ subject: String,
        payload: [UInt8],
        headers: NATSHeaders? = nil,
        options: PublishOptions = PublishOptions(),
        timeout: Duration? = nil
    ) async throws(NATSError) -> PublishAck {
        let reply: NATSMessage
        do {
            reply = try await connection.request(subject, payload: payload, headers: options.apply(to: headers), timeout: timeout)
        } catch  where error.kind == .noResponders {
            throw NATSError(
                .jetStream,
                status: error.status,
                jetStreamCode: JetStreamErrorCode.streamNotFound,
                message: "no stream captures \(subject)"
            )
        }
        return try Self.decodeAck(reply.payload, subject: subject)
    }

    public struct OutgoingMessage: Sendable {
        public var subject: String
        public var payload: [UInt8]
        public var headers: NATSHeaders?
        public var options: PublishOptions
        public init(subject: String, payload: [UInt8], headers: NATSHeaders? = nil, options: PublishOptions = PublishOptions()) {
            self.subject = subject
            self.payload = payload
            self.headers = headers
            self.options = options
        }
    }

    /// Pipelined publish: sends up to `window` messages before awaiting their acks. One result per message, in order.
    public func publishPipelined(
        _ messages: [OutgoingMessage],
        window: Int = 1024,
        timeout: Duration? = nil
    ) async -> [Result<PublishAck, NATSError>] {
        var results: [Result<PublishAck, NATSError>] = []
        results.reserveCapacity(messages.count)
        var start = 0
        while start < messages.count {
            let end = min(start + max(1, window), messages.count)
            let replies = await connection.requestMany(
                messages[start..<end].map { ($0.subject, $0.payload, $0.options.apply(to: $0.headers)) },
                timeout: timeout
            )
            for (offset, reply) in replies.enumerated() {
                let subject = messages[start + offset].subject
                results.append(
                    reply.flatMap { message in
                        Result { () throws(NATSError) in try Self.decodeAck(message.payload, subject: subject) }
                    }
                )
            }
            start = end
        }
        return results
    }

    static func decodeAck(_ payload: [UInt8], subject: String) throws(NATSError) -> PublishAck {
        if let ack = PublishAck.parseFast(payload) { return ack }
        return try decode(payload, as: PublishAck.self, context: "publish \(subject)")
    }
}
