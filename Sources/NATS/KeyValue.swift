/// KV bucket settings. `ttl` applies to every key of the bucket (JetStream 2.9 has no per-key TTL).
public struct KeyValueConfiguration: Sendable {
    public var bucket: String
    public var description: String?
    public var history = 1
    public var ttl: Duration?
    public var maxValueSize: Int?
    public var memoryStorage = false
    public var replicas = 1

    public init(bucket: String, history: Int = 1, ttl: Duration? = nil) {
        self.bucket = bucket
        self.history = history
        self.ttl = ttl
    }
}

public struct KeyValueEntry: Sendable, Equatable {
    public enum Operation: String, Sendable { case put, delete, purge }
    public var key: String
    public var value: [UInt8]
    public var revision: UInt64
    public var createdNanoseconds: Int64
    public var operation: Operation

    public init(key: String, value: [UInt8], revision: UInt64, createdNanoseconds: Int64, operation: Operation) {
        self.key = key
        self.value = value
        self.revision = revision
        self.createdNanoseconds = createdNanoseconds
        self.operation = operation
    }
}

/// A KV bucket.
///
/// Reads and writes are JetStream requests on the connection's async request path: a get is a direct
/// get of the key's last message, a put a publish to `$KV.<bucket>.<key>` (a create or a
/// compare-and-set adds `Nats-Expected-Last-Subject-Sequence`). That is what libnats' KV API sends
/// too, but its calls block a thread each: on the hot paths (a send checks membership and
/// idempotency) the thread hops and libnats' lock contention cost more than the round trips.
/// Buckets are created through the JetStream API (`KeyValueBucket.swift`); key listing is one request to
/// the stream's subject index (`storedKeys`), and reads of many keys and followers use ephemeral pull
/// consumers (`values(matching:)`, `followPuts`), so no thread waits on them.
public final class KeyValue: Sendable {
    let jetStream: JetStream
    public let bucket: String
    let stream: String
    let subjectPrefix: String

    init(jetStream: JetStream, bucket: String) {
        self.jetStream = jetStream
        self.bucket = bucket
        self.stream = "KV_" + bucket
        self.subjectPrefix = "$KV." + bucket + "."
    }

    /// Key rules of the NATS KV API: `[-/_=.a-zA-Z0-9]+`, no leading/trailing or double dot. Keys become
    /// subject tokens, so anything else (`*`, `>`, spaces) is refused before it reaches the server.
    public static func isValidKey(_ key: String) -> Bool {
        guard !key.isEmpty, key.utf8.first != UInt8(ascii: "."), key.utf8.last != UInt8(ascii: ".") else { return false }
        var previousDot = false
        for byte in key.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "/"), UInt8(ascii: "_"), UInt8(ascii: "="):
                previousDot = false
            case UInt8(ascii: "."):
                if previousDot { return false }
                previousDot = true
            default:
                return false
            }
        }
        return true
    }

    private func subject(_ key: String) throws(NATSError) -> String {
        guard Self.isValidKey(key) else { throw NATSError(.invalidArgument, message: "invalid KV key \(key.prefix(80))") }
        return subjectPrefix + key
    }

    /// The key's latest entry. A direct get, which any replica of the bucket may answer; `leader`
    /// asks the stream leader instead, whose answer includes every acknowledged write (a follower that
    /// is behind answers "no such key" for a key written a moment ago).
    public func get(_ key: String, leader: Bool = false) async throws(NATSError) -> KeyValueEntry? {
        let subject = try subject(key)
        let found =
            leader
            ? try await jetStream.leaderLastMessage(stream: stream, subject: subject)
            : try await jetStream.directGet(stream: stream, lastBySubject: subject)
        guard let stored = found else { return nil }
        let operation: KeyValueEntry.Operation
        switch stored.headers["KV-Operation"] {
        case "DEL": operation = .delete
        case "PURGE": operation = .purge
        default: operation = .put
        }
        return KeyValueEntry(
            key: key,
            value: stored.payload,
            revision: stored.sequence,
            createdNanoseconds: stored.timestamp.flatMap(parseRFC3339Nanoseconds) ?? 0,
            operation: operation
        )
    }

    /// The value when the key holds one (deleted or purged keys read as nil).
    public func value(_ key: String, leader: Bool = false) async throws(NATSError) -> KeyValueEntry? {
        guard let entry = try await get(key, leader: leader), entry.operation == .put else { return nil }
        return entry
    }

    /// Like `value`, but a "no such key" from a replica is confirmed by the leader before it is
    /// believed: for reads where a false negative turns into an error for the client (a member who
    /// just joined told to join first). Costs a second round trip only when the key is missing.
    public func confirmedValue(_ key: String) async throws(NATSError) -> KeyValueEntry? {
        if let entry = try await value(key) { return entry }
        return try await value(key, leader: true)
    }

    @discardableResult
    public func put(_ key: String, _ value: [UInt8]) async throws(NATSError) -> UInt64 {
        try await jetStream.publish(try subject(key), payload: value).sequence
    }

    /// Stores the value without waiting for JetStream's acknowledgement (none is asked for: a core
    /// publish to the key's subject). Saves the caller a round trip and the server an ack; at most once —
    /// lost if the connection fails before the server stored it. For records that only back up another
    /// mechanism (the chat-service's idempotency records behind JetStream's duplicate window).
    public func putWithoutAck(_ key: String, _ value: [UInt8]) throws(NATSError) {
        try jetStream.connection.publish(try subject(key), payload: value)
    }

    /// Stores only if the key holds no value; throws `.wrongLastSequence` when it does.
    @discardableResult
    public func create(_ key: String, _ value: [UInt8]) async throws(NATSError) -> UInt64 {
        do {
            return try await update(key, value, revision: 0)
        } catch {
            // A deleted or purged key has a marker as its last message: creating replaces the marker.
            guard error.kind == .wrongLastSequence, let entry = try await get(key), entry.operation != .put else { throw error }
            return try await update(key, value, revision: entry.revision)
        }
    }

    /// Compare-and-set on the revision; throws `.wrongLastSequence` when another writer got there first.
    @discardableResult
    public func update(_ key: String, _ value: [UInt8], revision: UInt64) async throws(NATSError) -> UInt64 {
        try await jetStream.publish(try subject(key), payload: value, options: .init(expectedLastSubjectSequence: revision)).sequence
    }

    /// `create` that reports an existing value as nil instead of an error.
    public func createIfAbsent(_ key: String, _ value: [UInt8]) async throws(NATSError) -> UInt64? {
        do {
            return try await create(key, value)
        } catch {
            if error.kind == .wrongLastSequence { return nil }
            throw error
        }
    }

    /// `update` that reports a stale revision as nil instead of an error.
    public func updateIfRevision(_ key: String, _ value: [UInt8], revision: UInt64) async throws(NATSError) -> UInt64? {
        do {
            return try await update(key, value, revision: revision)
        } catch {
            if error.kind == .wrongLastSequence { return nil }
            throw error
        }
    }

    /// Leaves a delete marker (the key's history stays, as with libnats' `kvStore_Delete`).
    public func delete(_ key: String) async throws(NATSError) {
        var headers = NATSHeaders()
        headers["KV-Operation"] = "DEL"
        _ = try await jetStream.publish(try subject(key), payload: [], headers: headers)
    }

    /// Leaves only a purge marker: the key's earlier revisions are removed (`Nats-Rollup: sub`).
    public func purge(_ key: String) async throws(NATSError) {
        var headers = NATSHeaders()
        headers["KV-Operation"] = "PURGE"
        headers["Nats-Rollup"] = "sub"
        _ = try await jetStream.publish(try subject(key), payload: [], headers: headers)
    }

    /// Removes the key and its history without leaving a delete marker (a purge of its subject in the
    /// bucket's stream). Unlike `delete`, followers do not see it; `storedKeys` no longer lists it.
    public func erase(_ key: String) async throws(NATSError) {
        try await jetStream.purge(stream: stream, subject: try subject(key))
    }

    /// Keys matching `pattern` (e.g. `room.*`) that have any message, delete markers included — so
    /// these are the live keys exactly when keys are removed with `erase`. One request to the stream's
    /// subject index instead of a consumer that reads every value.
    public func storedKeys(matching pattern: String) async throws(NATSError) -> [String] {
        let prefixLength = subjectPrefix.utf8.count
        return try await jetStream.subjectCounts(stream: stream, filter: subjectPrefix + pattern).keys.map {
            String($0.utf8.dropFirst(prefixLength))!
        }
    }

    /// Current values of the keys matching `pattern` (e.g. `room.<id>.*`; deleted and purged keys left
    /// out), in stream order: an ephemeral consumer delivering the last message of each matching key,
    /// read with no-wait fetches until the server reports nothing pending, then deleted. Its cost follows
    /// the matching keys, not the bucket size, and no thread waits on it (libnats' watcher held a
    /// blocking-executor thread per poll, which starved the pool under load).
    public func values(matching pattern: String) async throws(NATSError) -> [KeyValueEntry] {
        var config = ConsumerConfiguration(durableName: nil)
        config.description = "key read"
        config.deliverPolicy = .lastPerSubject
        config.filterSubject = subjectPrefix + pattern
        config.ackPolicy = .none
        config.maxWaiting = 1
        config.memoryStorage = true
        config.inactiveThreshold = .seconds(10)  // cleanup if the delete is lost
        let info = try await jetStream.createEphemeralConsumer(stream: stream, config)
        defer { jetStream.deleteConsumerWithoutWaiting(stream: stream, consumer: info.name) }
        guard info.numPending > 0 else { return [] }
        let consumer = try jetStream.pullConsumer(stream: stream, consumer: info.name)
        var entries: [KeyValueEntry?] = []
        var positions: [String: Int] = [:]
        var consumerSequence: UInt64 = 0
        while true {
            let batch = try await consumer.fetch(batch: 4096, expires: .seconds(5), noWait: true)
            for message in batch {
                guard message.consumerSequence == consumerSequence + 1 else {
                    throw NATSError(.jetStream, message: "KV read of \(bucket) \(pattern): messages lost in transit")
                }
                consumerSequence = message.consumerSequence
                // A key written during the read comes again: its newest value (or deletion) wins, in
                // its first place.
                if let position = positions[message.subject] {
                    entries[position] = entry(from: message)
                } else if let entry = entry(from: message) {
                    positions[message.subject] = entries.count
                    entries.append(entry)
                }
            }
            // Each message says how many more the consumer holds for us.
            guard let last = batch.last, last.pending > 0 else { return entries.compactMap { $0 } }
        }
    }

    /// Current values of the keys matching `pattern`, one direct get per stored key, all at once. No
    /// consumer is created (creating one is a JetStream API call, which a loaded server may answer
    /// late, and a clustered one replicates): for small key sets read often, such as the
    /// presence sweep's gateway records every second. `values(matching:)` suits large key sets.
    public func valuesOfStoredKeys(matching pattern: String) async throws(NATSError) -> [KeyValueEntry] {
        let keys = try await storedKeys(matching: pattern)
        let results = await withTaskGroup(of: Result<KeyValueEntry?, NATSError>.self) { group in
            for key in keys {
                group.addTask {
                    do throws(NATSError) { return .success(try await self.value(key)) } catch { return .failure(error) }
                }
            }
            var results: [Result<KeyValueEntry?, NATSError>] = []
            for await result in group { results.append(result) }
            return results
        }
        var entries: [KeyValueEntry] = []
        for result in results {
            if let entry = try result.get() { entries.append(entry) }
        }
        return entries.sorted { $0.key < $1.key }
    }

    /// The entry a consumer delivered, nil for a delete or purge marker.
    func entry(from message: JetStreamMessage) -> KeyValueEntry? {
        guard message.headers["KV-Operation"] == nil else { return nil }
        return KeyValueEntry(
            key: String(message.subject.utf8.dropFirst(subjectPrefix.utf8.count)) ?? "",
            value: message.payload,
            revision: message.streamSequence,
            createdNanoseconds: message.timestampNanoseconds,
            operation: .put
        )
    }
}

extension KeyValue {
    /// Hands every put to the bucket to `deliver`, in stream order — the stored puts first, then new
    /// ones as they are stored — as keys, revisions and store times (no values: the server sends
    /// headers only). Returns when the task is cancelled; throws when a consumer cannot be created.
    ///
    /// An ephemeral pull consumer (no acks, memory storage) read through the async request path, so no
    /// thread waits on it.
    /// Like an ordered consumer it never skips a put: a gap in the consumer sequence (a message lost
    /// with a connection), a reconnect, or a consumer that stopped answering (a restarted server, an
    /// inactivity cleanup) starts a new consumer right after the last revision delivered.
    /// (`values(matching:)` reads the same way once; a follower lives as long as the process.)
    /// `after`: start after this revision (what an earlier follower delivered; 0 for everything).
    ///
    /// `linger`: zero keeps a pull request open and gets each put the moment it is stored — a wake-up
    /// of this process (libnats' reader, the subscription's thread, a task) per put. Above zero, a
    /// put that ends a quiet spell still comes at once (a pull for one message), then the follower
    /// waits `linger` and takes everything stored meanwhile with one no-wait pull, and again, until
    /// a pull finds nothing: under a steady stream of puts it wakes once per `linger`, not per put.
    public func followPuts(after: UInt64 = 0, linger: Duration = .zero, _ deliver: ([KeyValueEntry]) -> Void) async throws(NATSError) {
        let connection = jetStream.connection
        var lastRevision = after
        let batch = 1024
        let expires: Duration = .seconds(5)
        var backoff: Duration = .zero
        while !Task.isCancelled {
            // A consumer that keeps failing at once (a refusal, no interest yet on a cluster) is not
            // re-created in a tight loop: 100 ms, doubling to 5 s, reset by any delivered message.
            if backoff > .zero { try? await Task.sleep(for: backoff) }
            backoff = min(max(backoff * 2, .milliseconds(100)), .seconds(5))
            var config = ConsumerConfiguration(durableName: nil)
            config.description = "key follower"
            config.deliverPolicy = lastRevision == 0 ? .all : .byStartSequence(lastRevision + 1)
            config.filterSubject = subjectPrefix + ">"
            config.ackPolicy = .none
            config.headersOnly = true
            config.memoryStorage = true
            config.inactiveThreshold = .seconds(60)  // cleanup when this follower is gone
            let reconnects = connection.reconnects
            let info = try await jetStream.createEphemeralConsumer(stream: stream, config)
            defer { jetStream.deleteConsumerWithoutWaiting(stream: stream, consumer: info.name) }
            let consumer = try jetStream.pullConsumer(stream: stream, consumer: info.name)
            // One wake-up a second to check the deadline, instead of a timer task per wait.
            let watchdog = Task {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(1))
                    consumer.wake()
                }
            }
            defer { watchdog.cancel() }
            var consumerSequence: UInt64 = 0
            var requested = 0
            var deadline = ContinuousClock.now
            // Lingering: puts came lately, so the next pull waits `linger` and takes what is there.
            var busy = false
            var deliveredInRequest = 0
            following: while !Task.isCancelled {
                if connection.reconnects != reconnects { break following }
                if requested == 0 {
                    if busy {
                        // A full batch means more is waiting (a replay, a burst): no pause before it.
                        if deliveredInRequest < batch { try? await Task.sleep(for: linger) }
                        if Task.isCancelled { return }
                        if connection.reconnects != reconnects { break following }
                        try consumer.request(batch: batch, noWait: true)
                        requested = batch
                        deadline = .now + .seconds(5)
                    } else {
                        // Lingering or not, a quiet follower hears of the next put at once.
                        requested = linger > .zero ? 1 : batch
                        try consumer.request(batch: requested, expires: expires)
                        deadline = .now + expires + .seconds(1)
                    }
                    deliveredInRequest = 0
                }
                let received: PullConsumer.Received
                do {
                    received = try await consumer.receive()
                } catch {
                    if Task.isCancelled { return }
                    if error.kind == .jetStream { break following }  // the consumer was deleted or lost its leader
                    throw error
                }
                var entries: [KeyValueEntry] = []
                var gap = false
                for message in received.messages {
                    guard message.consumerSequence == consumerSequence + 1 else {
                        gap = true
                        break
                    }
                    consumerSequence = message.consumerSequence
                    lastRevision = message.streamSequence
                    requested -= 1
                    deliveredInRequest += 1
                    if let entry = entry(from: message) { entries.append(entry) }
                }
                if linger > .zero, !received.messages.isEmpty { busy = true }
                // What came before a gap is delivered: the next consumer starts after it.
                if !entries.isEmpty { deliver(entries) }
                if !received.messages.isEmpty { backoff = .zero }
                if gap { break following }
                switch received.endStatus {
                case nil:
                    // Nothing at all by the deadline, not even the expiry status: the consumer is gone.
                    if received.messages.isEmpty, ContinuousClock.now >= deadline { break following }
                case 404?, 408?:
                    requested = 0  // expired or nothing (more) pending: ask again
                    if deliveredInRequest == 0 { busy = false }  // quiet: back to an open pull
                default:
                    break following  // no responders (no such consumer) or a refusal
                }
            }
        }
    }
}

/// Nanoseconds since 1970 of an RFC 3339 UTC time as JetStream writes it (`2026-11-26T19:38:36.123456789Z`).
func parseRFC3339Nanoseconds(_ text: String) -> Int64? {
    let bytes = Array(text.utf8)
    guard bytes.count >= 20, bytes[4] == UInt8(ascii: "-"), bytes[7] == UInt8(ascii: "-"), bytes[10] == UInt8(ascii: "T"),
        bytes[13] == UInt8(ascii: ":"), bytes[16] == UInt8(ascii: ":"), bytes.last == UInt8(ascii: "Z")
    else { return nil }
    func number(_ range: Range<Int>) -> Int64? {
        var value: Int64 = 0
        for index in range {
            let digit = Int64(bytes[index]) - 48
            guard (0...9).contains(digit) else { return nil }
            value = value * 10 + digit
        }
        return value
    }
    guard let year = number(0..<4), let month = number(5..<7), let day = number(8..<10),
        let hour = number(11..<13), let minute = number(14..<16), let second = number(17..<19),
        (1...12).contains(month), (1...31).contains(day)
    else { return nil }
    var nanoseconds: Int64 = 0
    if bytes[19] == UInt8(ascii: ".") {
        let digits = bytes.count - 1 - 20
        guard digits >= 1, digits <= 9, let fraction = number(20..<(bytes.count - 1)) else { return nil }
        nanoseconds = fraction
        for _ in digits..<9 { nanoseconds *= 10 }
    } else if bytes.count != 20 {
        return nil
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = month <= 2 ? year - 1 : year
    let era = (y >= 0 ? y : y - 399) / 400
    let yearOfEra = y - era * 400
    let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
    let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
    let days = era * 146_097 + dayOfEra - 719_468
    return ((days * 24 + hour) * 60 + minute) * 60 * 1_000_000_000 + second * 1_000_000_000 + nanoseconds
}
