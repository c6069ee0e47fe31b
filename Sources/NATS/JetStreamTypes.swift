/// JetStream API types (the JSON the server speaks on `$JS.API.>`), limited to the fields this project uses.
/// Durations are nanoseconds on the wire.

public struct StreamConfiguration: Codable, Sendable, Equatable {
    public var name: String
    public var subjects: [String]
    public var retention: String = "limits"
    public var maxMessagesPerSubject: Int64 = -1
    public var maxMessages: Int64 = -1
    public var maxBytes: Int64 = -1
    public var maxAge: Int64 = 0
    public var maxMessageSize: Int32 = -1
    public var storage: String = "file"
    public var replicas: Int = 1
    public var duplicateWindow: Int64 = 120_000_000_000
    public var allowDirect: Bool = true
    public var allowRollup: Bool = false
    /// Refuses deleting single messages through the API (KV buckets set it).
    public var denyDelete: Bool = false
    public var discard: String = "old"
    public var description: String?

    public init(name: String, subjects: [String]) {
        self.name = name
        self.subjects = subjects
    }

    enum CodingKeys: String, CodingKey {
        case name, subjects, retention, storage, discard, description
        case maxMessagesPerSubject = "max_msgs_per_subject"
        case maxMessages = "max_msgs"
        case maxBytes = "max_bytes"
        case maxAge = "max_age"
        case maxMessageSize = "max_msg_size"
        case replicas = "num_replicas"
        case duplicateWindow = "duplicate_window"
        case allowDirect = "allow_direct"
        case allowRollup = "allow_rollup_hdrs"
        case denyDelete = "deny_delete"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        subjects = try c.decodeIfPresent([String].self, forKey: .subjects) ?? []
        retention = try c.decodeIfPresent(String.self, forKey: .retention) ?? "limits"
        maxMessagesPerSubject = try c.decodeIfPresent(Int64.self, forKey: .maxMessagesPerSubject) ?? -1
        maxMessages = try c.decodeIfPresent(Int64.self, forKey: .maxMessages) ?? -1
        maxBytes = try c.decodeIfPresent(Int64.self, forKey: .maxBytes) ?? -1
        maxAge = try c.decodeIfPresent(Int64.self, forKey: .maxAge) ?? 0
        maxMessageSize = try c.decodeIfPresent(Int32.self, forKey: .maxMessageSize) ?? -1
        storage = try c.decodeIfPresent(String.self, forKey: .storage) ?? "file"
        replicas = try c.decodeIfPresent(Int.self, forKey: .replicas) ?? 1
        duplicateWindow = try c.decodeIfPresent(Int64.self, forKey: .duplicateWindow) ?? 0
        allowDirect = try c.decodeIfPresent(Bool.self, forKey: .allowDirect) ?? false
        allowRollup = try c.decodeIfPresent(Bool.self, forKey: .allowRollup) ?? false
        denyDelete = try c.decodeIfPresent(Bool.self, forKey: .denyDelete) ?? false
        discard = try c.decodeIfPresent(String.self, forKey: .discard) ?? "old"
        description = try c.decodeIfPresent(String.self, forKey: .description)
    }
}

public struct StreamState: Codable, Sendable {
    public var messages: UInt64
    public var bytes: UInt64
    public var firstSequence: UInt64
    public var lastSequence: UInt64
    public var consumerCount: Int?

    enum CodingKeys: String, CodingKey {
        case messages, bytes
        case firstSequence = "first_seq"
        case lastSequence = "last_seq"
        case consumerCount = "consumer_count"
    }
}

public struct StreamInfo: Codable, Sendable {
    public var config: StreamConfiguration
    public var state: StreamState
}

public struct SequenceInfo: Codable, Sendable {
    public var consumerSequence: UInt64
    public var streamSequence: UInt64
    enum CodingKeys: String, CodingKey {
        case consumerSequence = "consumer_seq"
        case streamSequence = "stream_seq"
    }
}

public struct ConsumerInfo: Codable, Sendable {
    public var name: String
    public var streamName: String
    public var numPending: UInt64
    public var numAckPending: Int
    public var numRedelivered: Int
    public var numWaiting: Int
    public var delivered: SequenceInfo
    public var ackFloor: SequenceInfo

    enum CodingKeys: String, CodingKey {
        case name, delivered
        case streamName = "stream_name"
        case numPending = "num_pending"
        case numAckPending = "num_ack_pending"
        case numRedelivered = "num_redelivered"
        case numWaiting = "num_waiting"
        case ackFloor = "ack_floor"
    }
}

public struct PublishAck: Codable, Sendable, Equatable {
    public var stream: String
    public var sequence: UInt64
    public var duplicate: Bool

    public init(stream: String, sequence: UInt64, duplicate: Bool) {
        self.stream = stream
        self.sequence = sequence
        self.duplicate = duplicate
    }

    enum CodingKeys: String, CodingKey {
        case stream, duplicate
        case sequence = "seq"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        stream = try c.decode(String.self, forKey: .stream)
        sequence = try c.decode(UInt64.self, forKey: .sequence)
        duplicate = try c.decodeIfPresent(Bool.self, forKey: .duplicate) ?? false
    }
}

extension PublishAck {
    /// The common acknowledgement `{"stream":"S","seq":N}` (optionally `"duplicate":true`, `"domain"`)
    /// without JSONDecoder, which dominates the cost of a pipelined publish. Anything else (errors,
    /// unexpected shapes) returns nil and takes the full decoder.
    static func parseFast(_ payload: [UInt8]) -> PublishAck? {
        guard payload.first == UInt8(ascii: "{"), payload.count < 512 else { return nil }
        func find(_ key: String) -> Int? {
            let needle = Array("\"\(key)\":".utf8)
            guard payload.count >= needle.count else { return nil }
            for index in 0...(payload.count - needle.count) where payload[index] == needle[0] {
                if Array(payload[index..<(index + needle.count)]) == needle {
                    var value = index + needle.count
                    while value < payload.count, payload[value] == UInt8(ascii: " ") { value += 1 }
                    return value
                }
            }
            return nil
        }
        if find("error") != nil { return nil }
        guard var index = find("stream"), index < payload.count, payload[index] == UInt8(ascii: "\"") else { return nil }
        index += 1
        var stream: [UInt8] = []
        while index < payload.count, payload[index] != UInt8(ascii: "\"") {
            if payload[index] == UInt8(ascii: "\\") { return nil }
            stream.append(payload[index])
            index += 1
        }
        guard var digit = find("seq") else { return nil }
        var sequence: UInt64 = 0
        var digits = 0
        while digit < payload.count, payload[digit] >= 0x30, payload[digit] <= 0x39 {
            let (product, overflow1) = sequence.multipliedReportingOverflow(by: 10)
            let (sum, overflow2) = product.addingReportingOverflow(UInt64(payload[digit] - 0x30))
            guard !overflow1, !overflow2 else { return nil }
            sequence = sum
            digit += 1
            digits += 1
        }
        guard digits > 0 else { return nil }
        let duplicate = find("duplicate").map { Array(payload[$0..<min($0 + 4, payload.count)]) == Array("true".utf8) } ?? false
        return PublishAck(stream: String(decoding: stream, as: UTF8.self), sequence: sequence, duplicate: duplicate)
    }
}

struct APIError: Codable, Sendable {
    var code: Int
    var errCode: Int?
    var description: String?
    enum CodingKeys: String, CodingKey {
        case code, description
        case errCode = "err_code"
    }
}

struct APIErrorEnvelope: Decodable {
    var error: APIError?
}

/// Well-known JetStream `err_code` values.
public enum JetStreamErrorCode {
    public static let wrongLastSequence = 10071
    public static let streamNotFound = 10059
    public static let streamNameInUse = 10058
    public static let subjectsOverlap = 10065
    public static let consumerNotFound = 10014
    public static let messageNotFound = 10037
}
