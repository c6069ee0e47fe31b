/// A JetStream consumer's settings (`$JS.API.CONSUMER.*.CREATE`), limited to the fields this project
/// uses. Policies are enums and durations `Duration`s; on the wire they are the server's strings and
/// nanoseconds.
public struct ConsumerConfiguration: Codable, Sendable, Equatable {
    /// Where delivery starts.
    public enum DeliverPolicy: Sendable, Equatable {
        case all
        case last
        case new
        /// The last message of each subject matching the filter.
        case lastPerSubject
        /// From this stream sequence on.
        case byStartSequence(UInt64)
    }

    public enum AckPolicy: String, Codable, Sendable {
        case none, all, explicit
    }

    public enum ReplayPolicy: String, Codable, Sendable {
        case instant, original
    }

    public var durableName: String?
    public var description: String?
    public var deliverPolicy: DeliverPolicy = .all
    public var ackPolicy: AckPolicy = .explicit
    public var ackWait: Duration = .seconds(30)
    public var maxDeliver: Int = -1
    public var filterSubject: String?
    public var replayPolicy: ReplayPolicy = .instant
    public var maxAckPending: Int = 1000
    public var maxWaiting: Int = 512
    /// Ephemeral consumers only: removed by the server after this long without a pull.
    public var inactiveThreshold: Duration?
    public var headersOnly: Bool?
    public var memoryStorage: Bool?

    public init(durableName: String?) { self.durableName = durableName }

    /// An ephemeral consumer for one read of `subject`: no acks, one waiting pull, in memory, and
    /// removed by the server 10 s after its reader is gone should the reader's delete be lost.
    public static func oneRead(_ description: String, subject: String, from deliverPolicy: DeliverPolicy) -> ConsumerConfiguration {
        var config = ConsumerConfiguration(durableName: nil)
        config.description = description
        config.deliverPolicy = deliverPolicy
        config.filterSubject = subject
        config.ackPolicy = .none
        config.maxWaiting = 1
        config.memoryStorage = true
        config.inactiveThreshold = .seconds(10)
        return config
    }

    enum CodingKeys: String, CodingKey {
        case description
        case durableName = "durable_name"
        case deliverPolicy = "deliver_policy"
        case startSequence = "opt_start_seq"
        case ackPolicy = "ack_policy"
        case ackWait = "ack_wait"
        case maxDeliver = "max_deliver"
        case filterSubject = "filter_subject"
        case replayPolicy = "replay_policy"
        case maxAckPending = "max_ack_pending"
        case maxWaiting = "max_waiting"
        case inactiveThreshold = "inactive_threshold"
        case headersOnly = "headers_only"
        case memoryStorage = "mem_storage"
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeIfPresent(durableName, forKey: .durableName)
        try c.encodeIfPresent(description, forKey: .description)
        switch deliverPolicy {
        case .all: try c.encode("all", forKey: .deliverPolicy)
        case .last: try c.encode("last", forKey: .deliverPolicy)
        case .new: try c.encode("new", forKey: .deliverPolicy)
        case .lastPerSubject: try c.encode("last_per_subject", forKey: .deliverPolicy)
        case .byStartSequence(let sequence):
            try c.encode("by_start_sequence", forKey: .deliverPolicy)
            try c.encode(sequence, forKey: .startSequence)
        }
        try c.encode(ackPolicy, forKey: .ackPolicy)
        try c.encode(ackWait.inNanoseconds, forKey: .ackWait)
        try c.encode(maxDeliver, forKey: .maxDeliver)
        try c.encodeIfPresent(filterSubject, forKey: .filterSubject)
        try c.encode(replayPolicy, forKey: .replayPolicy)
        try c.encode(maxAckPending, forKey: .maxAckPending)
        try c.encode(maxWaiting, forKey: .maxWaiting)
        try c.encodeIfPresent(inactiveThreshold?.inNanoseconds, forKey: .inactiveThreshold)
        try c.encodeIfPresent(headersOnly, forKey: .headersOnly)
        try c.encodeIfPresent(memoryStorage, forKey: .memoryStorage)
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        durableName = try c.decodeIfPresent(String.self, forKey: .durableName)
        description = try c.decodeIfPresent(String.self, forKey: .description)
        switch try c.decodeIfPresent(String.self, forKey: .deliverPolicy) ?? "all" {
        case "all": deliverPolicy = .all
        case "last": deliverPolicy = .last
        case "new": deliverPolicy = .new
        case "last_per_subject": deliverPolicy = .lastPerSubject
        case "by_start_sequence": deliverPolicy = .byStartSequence(try c.decode(UInt64.self, forKey: .startSequence))
        case let other:
            throw DecodingError.dataCorruptedError(forKey: .deliverPolicy, in: c, debugDescription: "unsupported deliver policy \(other)")
        }
        ackPolicy = try c.decodeIfPresent(AckPolicy.self, forKey: .ackPolicy) ?? .explicit
        ackWait = .nanoseconds(try c.decodeIfPresent(Int64.self, forKey: .ackWait) ?? 30_000_000_000)
        maxDeliver = try c.decodeIfPresent(Int.self, forKey: .maxDeliver) ?? -1
        filterSubject = try c.decodeIfPresent(String.self, forKey: .filterSubject)
        replayPolicy = try c.decodeIfPresent(ReplayPolicy.self, forKey: .replayPolicy) ?? .instant
        maxAckPending = try c.decodeIfPresent(Int.self, forKey: .maxAckPending) ?? 1000
        maxWaiting = try c.decodeIfPresent(Int.self, forKey: .maxWaiting) ?? 512
        inactiveThreshold = try c.decodeIfPresent(Int64.self, forKey: .inactiveThreshold).map { .nanoseconds($0) }
        headersOnly = try c.decodeIfPresent(Bool.self, forKey: .headersOnly)
        memoryStorage = try c.decodeIfPresent(Bool.self, forKey: .memoryStorage)
    }
}
