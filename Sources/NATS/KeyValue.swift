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
        let config = ConsumerConfiguration.oneRead("key read", subject: subjectPrefix + pattern, from: .lastPerSubject)
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
