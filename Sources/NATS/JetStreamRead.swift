import Foundation

extension JetStream {
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

    func messagesThroughConsumer(stream: String, subject: String, from: UInt64, limit: Int) async throws(NATSError) -> [StoredMessage] {
        let config = ConsumerConfiguration.oneRead("page read", subject: subject, from: .byStartSequence(max(1, from)))
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
}
