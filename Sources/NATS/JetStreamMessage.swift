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
