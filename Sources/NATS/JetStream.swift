import Foundation

/// JetStream over the JSON API (`$JS.API.>`), using the connection's non-blocking request path, so
/// publishes pipeline and no thread waits for an acknowledgement.
public struct JetStream: Sendable {
    public let connection: NATSConnection

    public init(connection: NATSConnection) { self.connection = connection }

    private static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }()

    // MARK: API plumbing

    func api<Response: Decodable>(_ subject: String, body: (some Encodable)?, as type: Response.Type) async throws(NATSError) -> Response {
        var payload: [UInt8] = []
        if let body {
            do { payload = Array(try Self.encoder.encode(body)) } catch { throw NATSError.invalid("encode \(subject): \(error)") }
        }
        let reply: NATSMessage
        do {
            reply = try await connection.request("$JS.API." + subject, payload: payload)
        } catch  where error.kind == .noResponders {
            throw NATSError(.jetStream, status: error.status, message: "JetStream not enabled or not reachable (\(subject))")
        }
        return try Self.decode(reply.payload, as: Response.self, context: subject)
    }

    static func decode<Response: Decodable>(_ payload: [UInt8], as type: Response.Type, context: String) throws(NATSError) -> Response {
        let data = Data(payload)
        let decoder = JSONDecoder()
        if let envelope = try? decoder.decode(APIErrorEnvelope.self, from: data), let error = envelope.error {
            let code = error.errCode ?? 0
            let kind: NATSError.Kind =
                code == JetStreamErrorCode.wrongLastSequence
                ? .wrongLastSequence
                : (error.code == 404 ? .notFound : .jetStream)
            throw NATSError(kind, jetStreamCode: code, message: "\(context): \(error.description ?? "error \(error.code)")")
        }
        do {
            return try decoder.decode(Response.self, from: data)
        } catch {
            throw NATSError(.protocolError, message: "\(context): unexpected reply \(String(decoding: payload.prefix(200), as: UTF8.self))")
        }
    }

    // MARK: Streams and consumers

    /// Creates the stream, or updates it when it exists with another configuration.
    ///
    /// Replicas starting together race to create it: the loser is told "name in use", or — while the
    /// winner's create is still in flight — "subjects overlap" (nats-server 2.9). Both mean: update.
    /// An overlap with a stream of another name still fails (its update answers "stream not found").
    @discardableResult
    public func createOrUpdateStream(_ configuration: StreamConfiguration) async throws(NATSError) -> StreamInfo {
        do {
            return try await api("STREAM.CREATE.\(configuration.name)", body: configuration, as: StreamInfo.self)
        } catch  where [JetStreamErrorCode.streamNameInUse, JetStreamErrorCode.subjectsOverlap].contains(error.jetStreamCode) {
            let createError = error
            do {
                return try await api("STREAM.UPDATE.\(configuration.name)", body: configuration, as: StreamInfo.self)
            } catch  where error.jetStreamCode == JetStreamErrorCode.streamNotFound {
                throw createError
            }
        }
    }

    public func streamInfo(_ name: String) async throws(NATSError) -> StreamInfo {
        try await api("STREAM.INFO.\(name)", body: Optional<String>.none, as: StreamInfo.self)
    }

    /// Messages per subject for the subjects matching `filter` (one STREAM.INFO request per page of
    /// the server's subject details): the stream's subject index answers, no consumer is created.
    public func subjectCounts(stream: String, filter: String) async throws(NATSError) -> [String: UInt64] {
        struct Request: Encodable {
            var subjects_filter: String
            var offset: Int
        }
        struct Response: Decodable {
            struct State: Decodable { var subjects: [String: UInt64]? }
            var state: State
            var total: Int?
        }
        var counts: [String: UInt64] = [:]
        while true {
            let page = try await api(
                "STREAM.INFO.\(stream)",
                body: Request(subjects_filter: filter, offset: counts.count),
                as: Response.self
            )
            let subjects = page.state.subjects ?? [:]
            counts.merge(subjects) { $1 }
            if subjects.isEmpty || counts.count >= (page.total ?? 0) { return counts }
        }
    }

    /// Removes every message of `subject` from the stream.
    public func purge(stream: String, subject: String) async throws(NATSError) {
        struct Request: Encodable { var filter: String }
        struct Success: Decodable { var success: Bool }
        _ = try await api("STREAM.PURGE.\(stream)", body: Request(filter: subject), as: Success.self)
    }

    public func deleteStream(_ name: String) async throws(NATSError) {
        struct Success: Decodable { var success: Bool }
        _ = try await api("STREAM.DELETE.\(name)", body: Optional<String>.none, as: Success.self)
    }

    /// Creates (or updates) an explicit durable consumer. It outlives every subscription bound to it.
    @discardableResult
    public func createOrUpdateConsumer(stream: String, _ configuration: ConsumerConfiguration) async throws(NATSError) -> ConsumerInfo {
        struct Request: Encodable {
            var stream_name: String
            var config: ConsumerConfiguration
        }
        guard let durable = configuration.durableName else { throw .invalid("a durable consumer needs a durable name") }
        return try await api(
            "CONSUMER.DURABLE.CREATE.\(stream).\(durable)",
            body: Request(stream_name: stream, config: configuration),
            as: ConsumerInfo.self
        )
    }

    public func consumerInfo(stream: String, consumer: String) async throws(NATSError) -> ConsumerInfo {
        try await api("CONSUMER.INFO.\(stream).\(consumer)", body: Optional<String>.none, as: ConsumerInfo.self)
    }

    /// The consumer's info, or nil when the server answers that the stream has no such consumer. Any
    /// other failure (a timeout, a missing stream, JetStream unreachable) says nothing about the
    /// consumer and throws.
    public func consumerInfoIfExists(stream: String, consumer: String) async throws(NATSError) -> ConsumerInfo? {
        do {
            return try await consumerInfo(stream: stream, consumer: consumer)
        } catch  where error.jetStreamCode == JetStreamErrorCode.consumerNotFound {
            return nil
        }
    }

    public func deleteConsumer(stream: String, consumer: String) async throws(NATSError) {
        struct Success: Decodable { var success: Bool }
        _ = try await api("CONSUMER.DELETE.\(stream).\(consumer)", body: Optional<String>.none, as: Success.self)
    }

    // MARK: Publish

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

    // MARK: Reading

    /// A stored message read by sequence or subject.
    public struct StoredMessage: Sendable {
        public var subject: String
        public var sequence: UInt64
        public var headers: NATSHeaders
        public var payload: [UInt8]
        /// Nanoseconds since 1970 when the server stored it.
        public var timestamp: String?
    }

    /// Direct get (`$JS.API.DIRECT.GET`, needs `allow_direct`): by sequence, last of a subject, or the
    /// first message of `nextBySubject` at or after `sequence`. Returns nil when there is no such message.
    public func directGet(
        stream: String,
        sequence: UInt64? = nil,
        lastBySubject: String? = nil,
        nextBySubject: String? = nil
    ) async throws(NATSError) -> StoredMessage? {
        // Built by hand: this is on every KV read and history page (JSONEncoder showed in profiles).
        // Subjects never contain '"' or '\\' (they are validated tokens), so no escaping is needed.
        var fields: [String] = []
        if let sequence { fields.append("\"seq\":\(sequence)") }
        for (key, subject) in [("last_by_subj", lastBySubject), ("next_by_subj", nextBySubject)] {
            guard let subject else { continue }
            guard !subject.utf8.contains(where: { $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") || $0 < 0x20 }) else {
                throw .invalid("invalid subject for a direct get")
            }
            fields.append("\"\(key)\":\"\(subject)\"")
        }
        let body = Array(("{" + fields.joined(separator: ",") + "}").utf8)
        return try Self.storedMessage(
            fromDirectGet: try await connection.request("$JS.API.DIRECT.GET.\(stream)", payload: body),
            stream: stream
        )
    }

    static func storedMessage(fromDirectGet reply: NATSMessage, stream: String) throws(NATSError) -> StoredMessage? {
        if let status = reply.headers.status {
            if status == 404 { return nil }
            throw NATSError(.jetStream, message: "direct get on \(stream): \(status) \(reply.headers.statusDescription ?? "")")
        }
        guard let subject = reply.headers["Nats-Subject"], let sequence = reply.headers["Nats-Sequence"].flatMap(UInt64.init) else {
            throw NATSError(.protocolError, message: "direct get on \(stream): reply without Nats-Subject/Nats-Sequence")
        }
        return StoredMessage(
            subject: subject,
            sequence: sequence,
            headers: reply.headers,
            payload: reply.payload,
            timestamp: reply.headers["Nats-Time-Stamp"]
        )
    }

    /// The last message of `subject`, read by the stream's leader (`$JS.API.STREAM.MSG.GET`). A direct
    /// get may be answered by a follower that has not applied the newest writes yet (during a failover
    /// one answered "no message" for a key written moments before); the leader's answer is current.
    public func leaderLastMessage(stream: String, subject: String) async throws(NATSError) -> StoredMessage? {
        struct Request: Encodable { var last_by_subj: String }
        struct Response: Decodable {
            struct Message: Decodable {
                var subject: String
                var seq: UInt64
                var hdrs: String?
                var data: String?
                var time: String?
            }
            var message: Message
        }
        let response: Response
        do {
            response = try await api("STREAM.MSG.GET.\(stream)", body: Request(last_by_subj: subject), as: Response.self)
        } catch  where error.kind == .notFound || error.jetStreamCode == JetStreamErrorCode.messageNotFound {
            return nil
        }
        let message = response.message
        let payload = message.data.flatMap { Data(base64Encoded: $0) }.map { Array($0) } ?? []
        let headers =
            message.hdrs.flatMap { Data(base64Encoded: $0) }.map { Self.headerBlock(String(decoding: $0, as: UTF8.self)) } ?? NATSHeaders()
        return StoredMessage(subject: message.subject, sequence: message.seq, headers: headers, payload: payload, timestamp: message.time)
    }

    /// The fields of a NATS header block (`NATS/1.0\r\nKey: Value\r\n…\r\n\r\n`) as the server stores it.
    static func headerBlock(_ text: String) -> NATSHeaders {
        var headers = NATSHeaders()
        for line in text.split(separator: "\r\n").dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let value = line[line.index(after: colon)...].drop { $0 == " " }
            headers.add(String(line[..<colon]), String(value))
        }
        return headers
    }

    public func message(stream: String, sequence: UInt64) async throws(NATSError) -> StoredMessage? {
        try await directGet(stream: stream, sequence: sequence)
    }

    public func lastMessage(stream: String, subject: String) async throws(NATSError) -> StoredMessage? {
        try await directGet(stream: stream, lastBySubject: subject)
    }

    /// Up to `limit` messages of `subject`, in stream order, starting at stream sequence `from`.
    ///
    /// JetStream 2.9 has no batched direct get, and each `next_by_subj` get needs the previous one's
    /// sequence. So the gets are sent speculatively, pipelined in one batch: get i asks for the first
    /// message of the subject at or after `from + i`. Where the subject's messages are dense in the
    /// stream (a busy room) one batch returns the whole page in about one round trip; gaps return the
    /// same message more than once (dropped here) and the next batch continues after the last one
    /// found. When a batch finds less than half of what it asked for (a sparse subject) the rest is
    /// read through a short-lived ephemeral consumer: create, one fetch, delete.
    public func messages(stream: String, subject: String, from: UInt64, limit: Int) async throws(NATSError) -> [StoredMessage] {
        var result: [StoredMessage] = []
        result.reserveCapacity(limit)
        var next = max(1, from)
        while result.count < limit {
            let wanted = limit - result.count
            let requests = (0..<wanted).map { offset -> (subject: String, payload: [UInt8], headers: NATSHeaders?) in
                ("$JS.API.DIRECT.GET.\(stream)", Array("{\"seq\":\(next + UInt64(offset)),\"next_by_subj\":\"\(subject)\"}".utf8), nil)
            }
            var found = 0
            var ended = false
            for reply in await connection.requestMany(requests) {
                guard let message = try Self.storedMessage(fromDirectGet: try reply.get(), stream: stream) else {
                    ended = true  // nothing at or after this sequence: the end of the subject
                    break
                }
                guard message.sequence >= next, result.count < limit else { continue }
                result.append(message)
                next = message.sequence + 1
                found += 1
            }
            if ended || found == 0 { break }
            if found * 2 < wanted, result.count < limit {
                result += try await messagesThroughConsumer(stream: stream, subject: subject, from: next, limit: limit - result.count)
                break
            }
        }
        return result
    }

    /// Creates a consumer without a durable name; the server names it (`ConsumerInfo.name`).
    func createEphemeralConsumer(stream: String, _ config: ConsumerConfiguration) async throws(NATSError) -> ConsumerInfo {
        struct Request: Encodable {
            var stream_name: String
            var config: ConsumerConfiguration
        }
        return try await api("CONSUMER.CREATE.\(stream)", body: Request(stream_name: stream, config: config), as: ConsumerInfo.self)
    }

    /// Sends the delete of a consumer without waiting for the answer, which arrives on a reply subject
    /// of the connection's inbox that no request waits on and is dropped. Nothing outlives the call;
    /// if the request is lost, the consumer's inactive threshold removes it.
    func deleteConsumerWithoutWaiting(stream: String, consumer: String) {
        try? connection.publish("$JS.API.CONSUMER.DELETE.\(stream).\(consumer)", reply: connection.mux.discardedReplySubject)
    }

    func messagesThroughConsumer(stream: String, subject: String, from: UInt64, limit: Int) async throws(NATSError) -> [StoredMessage] {
        var config = ConsumerConfiguration(durableName: nil)
        config.description = "page read"
        config.deliverPolicy = .byStartSequence(max(1, from))
        config.filterSubject = subject
        config.ackPolicy = .none
        config.maxWaiting = 1
        config.memoryStorage = true
        config.inactiveThreshold = .seconds(10)  // cleanup if the delete below is lost
        let info = try await createEphemeralConsumer(stream: stream, config)
        defer { deleteConsumerWithoutWaiting(stream: stream, consumer: info.name) }
        let consumer = try pullConsumer(stream: stream, consumer: info.name)
        var result: [StoredMessage] = []
        result.reserveCapacity(limit)
        while result.count < limit {
            let batch = try await consumer.fetch(batch: limit - result.count, expires: .seconds(2), noWait: true)
            if batch.isEmpty { break }
            for message in batch {
                result.append(
                    StoredMessage(
                        subject: message.subject,
                        sequence: message.streamSequence,
                        headers: message.message.headers,
                        payload: message.payload,
                        timestamp: nil
                    )
                )
            }
        }
        return result
    }

    // MARK: Consuming

    /// Binds to an existing durable pull consumer. Create it first with `createOrUpdateConsumer`.
    public func pullConsumer(stream: String, consumer: String) throws(NATSError) -> PullConsumer {
        try PullConsumer(connection: connection, stream: stream, consumer: consumer)
    }
}

/// A message delivered by a consumer, with its acknowledgement methods.
public struct JetStreamMessage: Sendable {
    public var message: NATSMessage
    public var stream: String
    public var consumer: String
    public var streamSequence: UInt64
    public var consumerSequence: UInt64
    public var deliveries: Int
    public var pending: UInt64
    /// When the stream stored the message (ns since 1970, from the reply subject).
    public var timestampNanoseconds: Int64
    let connection: NATSConnection

    public var subject: String { message.subject }
    public var payload: [UInt8] { message.payload }
    public var headers: NATSHeaders { message.headers }

    /// Parses `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<tm>.<pending>` (and the v2 form
    /// with domain and account hash in front).
    init?(message: NATSMessage, connection: NATSConnection) {
        guard let reply = message.reply, reply.hasPrefix("$JS.ACK.") else { return nil }
        // On the UTF-8 bytes: String.split works on Characters (grapheme breaking), which cost ~4 % of a
        // service's CPU for one parse per consumed message.
        let tokens = reply.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        let base: Int
        switch tokens.count {
        case 9: base = 2
        case 11, 12: base = 4
        default: return nil
        }
        guard let deliveries = Self.number(tokens[base + 2]), let streamSequence = Self.number(tokens[base + 3]),
            let consumerSequence = Self.number(tokens[base + 4]), let timestamp = Self.number(tokens[base + 5]),
            let pending = Self.number(tokens[base + 6]),
            let stream = String(tokens[base]), let consumer = String(tokens[base + 1])
        else { return nil }
        self.message = message
        self.stream = stream
        self.consumer = consumer
        self.deliveries = Int(clamping: deliveries)
        self.streamSequence = streamSequence
        self.consumerSequence = consumerSequence
        self.pending = pending
        self.timestampNanoseconds = Int64(clamping: timestamp)
        self.connection = connection
    }

    /// A decimal token (nil if empty, not digits, or past UInt64).
    static func number(_ token: Substring.UTF8View) -> UInt64? {
        guard !token.isEmpty else { return nil }
        var value: UInt64 = 0
        for byte in token {
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            let (times10, overflow1) = value.multipliedReportingOverflow(by: 10)
            let (sum, overflow2) = times10.addingReportingOverflow(UInt64(byte - UInt8(ascii: "0")))
            guard !overflow1, !overflow2 else { return nil }
            value = sum
        }
        return value
    }

    private func respond(_ body: String) throws(NATSError) {
        guard let reply = message.reply else { throw .invalid("message has no reply subject") }
        try connection.publish(reply, payload: Array(body.utf8))
    }

    public func ack() throws(NATSError) { try respond("+ACK") }
    /// Acknowledges and waits for the server to confirm it recorded the ack.
    public func ackSync(timeout: Duration = .seconds(5)) async throws(NATSError) {
        guard let reply = message.reply else { throw .invalid("message has no reply subject") }
        _ = try await connection.request(reply, payload: Array("+ACK".utf8), timeout: timeout)
    }
    public func nak(delay: Duration? = nil) throws(NATSError) {
        if let delay { try respond("-NAK {\"delay\":\(delay.inMilliseconds * 1_000_000)}") } else { try respond("-NAK") }
    }
    public func inProgress() throws(NATSError) { try respond("+WPI") }
    public func term() throws(NATSError) { try respond("+TERM") }
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
    /// `until`: return empty at that instant; without it, only a message or `wake()` ends the wait
    /// (one watchdog calling `wake()` costs less than a timer per wait). Throws when the consumer
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
