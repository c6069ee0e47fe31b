import ChatCore
import Foundation
import Logging
import Metrics
import NATS
import Synchronization

/// The `client_msg_id` of each send, for retries after JetStream's duplicate window: KV
/// `chat_idempotency`, `<room>.<username hex>.<client_msg_id>` → where the original is stored.
/// With `CHAT_IDEMPOTENCY_FILTER` a send whose key cannot have a record skips the read (see
/// `IdempotencyFilter`), fed by `follow()`.
public final class IdempotencyRecords: Sendable {
    struct Record: Codable, JSONWritable {
        var messageID: String
        var seq: UInt64
        var streamSequence: UInt64
        enum CodingKeys: String, CodingKey {
            case seq
            case messageID = "message_id"
            case streamSequence = "stream_seq"
        }

        func write(to writer: inout JSONWriter) {
            writer.beginObject()
            writer.key("message_id")
            writer.string(messageID)
            writer.key("seq")
            writer.number(seq)
            writer.key("stream_seq")
            writer.number(streamSequence)
            writer.endObject()
        }
    }

    /// How many sends with a `client_msg_id` read the idempotency bucket and how many skipped it.
    public struct Lookups: Sendable, Equatable {
        public var read = 0
        public var skipped = 0
        public init() {}
    }

    private struct State {
        var filter: IdempotencyFilter
        var lookups = Lookups()
    }

    let bucket: KeyValue
    let connection: NATSConnection
    /// `CHAT_IDEMPOTENCY_FILTER`: off, every send with a `client_msg_id` reads the bucket.
    let filterEnabled: Bool
    let logger: Logger
    private let state: Mutex<State>

    /// `bucketTTL` is the bucket's actual TTL (0: records are kept for good), `duplicateWindow` the
    /// stream's actual window: the filter trusts itself only within what both really are.
    init(
        bucket: KeyValue,
        connection: NATSConnection,
        enabled: Bool,
        bucketTTL: Duration,
        configuredTTL: Duration,
        duplicateWindow: Duration,
        logger: Logger
    ) {
        self.bucket = bucket
        self.connection = connection
        self.filterEnabled = enabled
        self.logger = logger
        let ttl: Duration = bucketTTL == .zero ? .nanoseconds(Int64.max / 4) : max(bucketTTL, configuredTTL)
        self.state = Mutex(State(filter: IdempotencyFilter(ttl: ttl, duplicateWindow: duplicateWindow)))
    }

    public var lookups: Lookups { state.withLock { $0.lookups } }

    /// The record of the key's original send, if the bucket holds one.
    func record(_ key: String) async throws(NATSError) -> Record? {
        guard let entry = try await bucket.value(key) else { return nil }
        return try? JSONDecoder().decode(Record.self, from: Data(entry.value))
    }

    /// Stores the record without waiting for the bucket's acknowledgement (the send's reply does not
    /// wait a round trip for it; a retry within the duplicate window is caught by JetStream itself, so
    /// the record only has to land within the window). Renews the filter's proof when due.
    func store(_ key: String, _ record: Record) {
        do {
            try bucket.putWithoutAck(key, ChatJSON.encode(record))
            if filterEnabled {
                let epoch = connection.reconnects
                if let probe = state.withLock({ $0.filter.probeToWrite(now: .now, epoch: epoch) }) {
                    try bucket.putWithoutAck(probe, [])
                }
            }
        } catch {
            logger.warning("idempotency record not written", metadata: ["key": "\(key)", "error": "\(error)"])
        }
    }

    private static let reads = Counter(label: "chat_service_idempotency_lookups_total", dimensions: [("outcome", "read")])
    private static let skips = Counter(label: "chat_service_idempotency_lookups_total", dimensions: [("outcome", "skipped")])

    /// False when the idempotency filter proves no record exists for the key (the read is skipped).
    func mayHaveRecord(_ key: String) -> Bool {
        let epoch = connection.reconnects
        let enabled = filterEnabled
        let may = state.withLock { state in
            let may = !enabled || state.filter.mayHold(key, now: .now, epoch: epoch)
            if may { state.lookups.read += 1 } else { state.lookups.skipped += 1 }
            return may
        }
        (may ? Self.reads : Self.skips).increment()
        return may
    }

    /// The follower takes the records of this long in one pull rather than one wake-up per send. A
    /// record that reaches the filter later only delays the next proof: what a lagging filter misses
    /// is newer than the proof's probe, which is JetStream's duplicate-window case anyway.
    static let followerLinger: Duration = .milliseconds(25)

    /// Feeds the filter with every record's key as it is stored (`KeyValue.followPuts`), until
    /// cancelled; after an error it starts again after what was delivered.
    public func follow() async {
        while !Task.isCancelled {
            do {
                let after = state.withLock { $0.filter.newestRevision }
                try await bucket.followPuts(after: after, linger: Self.followerLinger) { entries in
                    // In slices: sends take the same lock.
                    var start = entries.startIndex
                    while start < entries.endIndex {
                        let end = min(start + 128, entries.endIndex)
                        state.withLock { state in
                            for entry in entries[start..<end] {
                                state.filter.delivered(entry.key, revision: entry.revision, storedNanoseconds: entry.createdNanoseconds)
                            }
                        }
                        start = end
                    }
                }
            } catch {
                logger.warning("idempotency follower failed; sends read the bucket until it is back", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: .seconds(1))
            }
        }
    }
}
