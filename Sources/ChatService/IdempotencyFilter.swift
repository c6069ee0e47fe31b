import NATS

/// Which idempotency keys may have a record in the `chat_idempotency` bucket, so that a send with a
/// `client_msg_id` skips the KV read in the common case — a send that is not a retry. Answers "maybe"
/// (read the bucket) or "no" (skip the read); never a wrong "no" while it is trusted. No I/O:
/// `IdempotencyRecords` feeds it what the bucket's follower delivers and writes the probes it asks for.
///
/// Why skipping is safe. A retry of a send published less than the event stream's duplicate window ago
/// is refused by JetStream itself (same `Nats-Msg-Id`), with or without the record. An older send's
/// record is in the filter if the follower has delivered it, and the follower delivers the bucket in
/// stream order. So the filter trusts itself only with a fresh proof that the follower is caught up: a
/// probe — a key of its own, unique, written on this replica's connection — came back through the
/// follower at most `freshness` (half the duplicate window) after it was written, on the current
/// connection. Every record stored before the probe has then been delivered, and a record stored after
/// it belongs to a send newer than the window — JetStream's case. (A record buffered by libnats across a
/// reconnect is stored late; the proof is tied to the connection epoch, and a probe written after the
/// reconnect is stored behind the buffer.) Probes are unique keys, not the send's own records: a key can
/// be written twice (a retry whose original was trimmed by retention is stored again), and an old record
/// of it coming back must not pass for a new probe.
///
/// Keys live in Bloom filters, one generation per quarter of the record TTL or per `capacity` keys:
/// fixed memory per generation, a false "maybe" now and then (a read, as before), and a generation is
/// dropped once every record in it has expired. Past `maxGenerations` (a high send rate for a whole TTL)
/// the two oldest are merged (their bits OR-ed): memory stays bounded and no key is lost, only the false
/// "maybe" rate rises.
struct IdempotencyFilter {
    struct Tuning {
        /// log2 of the bits per generation: 2^23 bits = 1 MiB.
        var bitsLog2 = 23
        /// Keys per generation before the next one starts (8 bits per key: ~2 % false "maybe" when full).
        var capacity = 1 << 20
        var hashes = 6
        /// At most this many generations (32 MiB), see above.
        var maxGenerations = 32
    }

    struct Generation {
        var words: [UInt64]
        var count = 0
        var firstNanoseconds: Int64
        var lastNanoseconds: Int64
    }

    struct Probe {
        var key: String
        var writtenAt: ContinuousClock.Instant
        var epoch: Int
    }

    let ttlNanoseconds: Int64
    let freshness: Duration
    let tuning: Tuning
    private(set) var generations: [Generation] = []
    /// One probe in flight through the follower at a time.
    private(set) var probe: Probe?
    private var probes = 0
    private let probePrefix = "probe." + String(UInt64.random(in: 0...UInt64.max), radix: 16)
    /// The newest probe the follower delivered: when it was written and on which connection epoch.
    private(set) var proof: (writtenAt: ContinuousClock.Instant, epoch: Int)?
    /// Store time of the newest record delivered (the clock that ages generations).
    private(set) var newestNanoseconds: Int64 = 0
    /// The highest revision delivered: a follower that starts over replays nothing twice.
    private(set) var newestRevision: UInt64 = 0

    /// `ttl`: how long the bucket keeps a record; `duplicateWindow`: the event stream's. Give the
    /// stream's actual settings, not what this replica would configure (another may have set them).
    init(ttl: Duration, duplicateWindow: Duration, tuning: Tuning = Tuning()) {
        self.ttlNanoseconds = ttl.inNanoseconds
        self.freshness = duplicateWindow / 2
        self.tuning = tuning
    }

    /// False when a send with this key must read the bucket (it may hold a record, or the filter
    /// cannot prove it is caught up).
    func mayHold(_ key: String, now: ContinuousClock.Instant, epoch: Int) -> Bool {
        guard let proof, proof.epoch == epoch, now - proof.writtenAt < freshness else { return true }
        let hash = Self.hash(key)
        return generations.contains { contains(hash, in: $0) }
    }

    /// A key to write (empty value, on the connection of `epoch`) to renew the proof, or nil when none
    /// is needed: one is in flight, or the current proof is younger than a quarter of `freshness`
    /// (so a busy replica writes about one probe per 15 s, an idle one none until it sends again).
    mutating func probeToWrite(now: ContinuousClock.Instant, epoch: Int) -> String? {
        // A probe in flight is replaced when it was lost (its put failed) or written before a reconnect.
        if let probe, probe.epoch == epoch, now - probe.writtenAt < freshness { return nil }
        if let proof, proof.epoch == epoch, now - proof.writtenAt < freshness / 4 { return nil }
        probes += 1
        let key = probePrefix + "." + String(probes)
        probe = Probe(key: key, writtenAt: now, epoch: epoch)
        return key
    }

    /// The follower delivered the record for `key`, stored at `storedNanoseconds` (server time).
    mutating func delivered(_ key: String, revision: UInt64, storedNanoseconds: Int64) {
        guard revision > newestRevision else { return }  // replayed by a follower that started over
        newestRevision = revision
        newestNanoseconds = max(newestNanoseconds, storedNanoseconds)
        if let probe, probe.key == key {
            proof = (probe.writtenAt, probe.epoch)
            self.probe = nil
        }
        expire()
        if let current = generations.last, current.count < tuning.capacity,
            storedNanoseconds - current.firstNanoseconds < ttlNanoseconds / 4
        {
        } else {
            generations.append(
                Generation(
                    words: Array(repeating: 0, count: 1 << (tuning.bitsLog2 - 6)),
                    firstNanoseconds: storedNanoseconds,
                    lastNanoseconds: storedNanoseconds
                )
            )
            if generations.count > tuning.maxGenerations { mergeOldest() }
        }
        let hash = Self.hash(key)
        let last = generations.count - 1
        generations[last].count += 1
        generations[last].lastNanoseconds = max(generations[last].lastNanoseconds, storedNanoseconds)
        // In place: a closure over `self` here would make Swift copy the 1 MiB of bits per insert.
        for (word, bit) in bits(of: hash) { generations[last].words[word] |= bit }
    }

    /// Folds the oldest generation into the next: no key is forgotten before its record expires.
    private mutating func mergeOldest() {
        let oldest = generations.removeFirst()
        for index in oldest.words.indices { generations[0].words[index] |= oldest.words[index] }
        generations[0].count += oldest.count
        generations[0].firstNanoseconds = min(generations[0].firstNanoseconds, oldest.firstNanoseconds)
        generations[0].lastNanoseconds = max(generations[0].lastNanoseconds, oldest.lastNanoseconds)
    }

    /// Drops generations whose every record is past the TTL (with a minute's slack for clock steps).
    private mutating func expire() {
        let slack: Int64 = 60_000_000_000
        while let oldest = generations.first, generations.count > 1, oldest.lastNanoseconds + ttlNanoseconds + slack < newestNanoseconds {
            generations.removeFirst()
        }
    }

    private func contains(_ hash: UInt64, in generation: Generation) -> Bool {
        bits(of: hash).allSatisfy { word, bit in generation.words[word] & bit != 0 }
    }

    /// Double hashing (Kirsch–Mitzenmacher): probe i is `low + i * high` over the generation's bits;
    /// each as (word index, bit mask).
    private func bits(of hash: UInt64) -> LazyMapSequence<Range<UInt64>, (Int, UInt64)> {
        let mask = (UInt64(1) << UInt64(tuning.bitsLog2)) - 1
        let low = hash & 0xFFFF_FFFF
        let high = (hash >> 32) | 1
        return (0..<UInt64(tuning.hashes)).lazy.map { index in
            let position = (low &+ index &* high) & mask
            return (Int(position >> 6), UInt64(1) << (position & 63))
        }
    }

    /// FNV-1a over the key's bytes, then a 64-bit finaliser (splitmix64) so both halves are well mixed.
    static func hash(_ key: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in key.utf8 { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
        hash = (hash ^ (hash >> 30)) &* 0xbf58_476d_1ce4_e5b9
        hash = (hash ^ (hash >> 27)) &* 0x94d0_49bb_1331_11eb
        return hash ^ (hash >> 31)
    }
}

extension IdempotencyFilter: CustomStringConvertible {
    var description: String {
        let proven = proof.map { "proof at \($0.writtenAt) epoch \($0.epoch)" } ?? "no proof"
        return
            "IdempotencyFilter(\(generations.count) generations, \(generations.map(\.count)) keys, \(proven), "
            + "probe \(probe?.key ?? "none"))"
    }
}
