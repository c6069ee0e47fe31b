import Testing

@testable import ChatService

@Suite("IdempotencyFilter: when a send may skip the idempotency read")
struct IdempotencyFilterTests {
    static let window: Duration = .seconds(120)
    static let ttl: Duration = .seconds(24 * 3600)
    static let hour: Int64 = 3_600_000_000_000
    let t0 = ContinuousClock.now
    /// Server store time of the first record (ns).
    let s0: Int64 = 1_800_000_000_000_000_000

    /// Feeds records in stream order: each call takes the next revision.
    struct Feed {
        var filter: IdempotencyFilter
        var revision: UInt64 = 0
        mutating func deliver(_ key: String, at stored: Int64) {
            revision += 1
            filter.delivered(key, revision: revision, storedNanoseconds: stored)
        }
        /// One key per nanosecond of store time from `start`.
        mutating func deliver(_ keys: [String], from start: Int64) {
            for (index, key) in keys.enumerated() { deliver(key, at: start + Int64(index)) }
        }
    }

    /// A filter whose follower has delivered the probe it asked for at `t0` on epoch 0.
    func proven(tuning: IdempotencyFilter.Tuning = .init()) throws -> Feed {
        var feed = Feed(filter: IdempotencyFilter(ttl: Self.ttl, duplicateWindow: Self.window, tuning: tuning))
        let probe = try feed.filter.probe(now: t0, epoch: 0)
        feed.deliver(probe, at: s0)
        return feed
    }

    /// A proven filter fed `keys`: every one of them must read as "maybe" (a false "no" stores a duplicate).
    func filled(_ keys: [String], tuning: IdempotencyFilter.Tuning) throws -> IdempotencyFilter {
        var feed = try proven(tuning: tuning)
        feed.deliver(keys, from: s0)
        let filter = feed.filter
        #expect(keys.allSatisfy { filter.mayHold($0, now: t0, epoch: 0) }, "no false 'no': that would store a duplicate")
        return filter
    }

    @Test func untrustedUntilItsOwnProbeComesBackThroughTheFollower() throws {
        var feed = Feed(filter: IdempotencyFilter(ttl: Self.ttl, duplicateWindow: Self.window))
        #expect(feed.filter.mayHold("room.ann.1", now: t0, epoch: 0), "nothing proven yet")
        feed.deliver("room.bob.7", at: s0)  // another replica's record proves nothing about lag
        #expect(feed.filter.mayHold("room.ann.1", now: t0, epoch: 0))
        let probe = try feed.filter.probe(now: t0, epoch: 0)
        #expect(probe.hasPrefix("probe."))
        #expect(feed.filter.probeToWrite(now: t0, epoch: 0) == nil, "one probe in flight at a time")
        #expect(feed.filter.mayHold("room.ann.1", now: t0, epoch: 0), "the probe is still in flight")
        feed.deliver(probe, at: s0 + 1)
        #expect(!feed.filter.mayHold("room.ann.1", now: t0, epoch: 0), "caught up: an unknown key has no record")
        #expect(feed.filter.mayHold("room.bob.7", now: t0, epoch: 0))
    }

    @Test func probesAreUniqueSoAnOldRecordOfTheSameKeyProvesNothing() throws {
        var a = Feed(filter: IdempotencyFilter(ttl: Self.ttl, duplicateWindow: Self.window))
        var b = IdempotencyFilter(ttl: Self.ttl, duplicateWindow: Self.window)
        let first = try a.filter.probe(now: t0, epoch: 0)
        let other = try b.probe(now: t0, epoch: 0)
        #expect(first != other, "two replicas never share a probe key")
        a.deliver(first, at: s0)
        // The next probe (once the proof is a quarter of the freshness old) is a new key: a replayed
        // or repeated record of the first cannot pass for it.
        let second = try a.filter.probe(now: t0 + .seconds(16), epoch: 0)
        #expect(second != first)
        a.deliver(first, at: s0 + 1)
        #expect(a.filter.probe?.key == second, "an old key coming back is not the probe")
    }

    @Test func theProofExpiresAfterHalfTheDuplicateWindowAndIsRenewedBeforeThat() throws {
        var feed = try proven()
        #expect(!feed.filter.mayHold("unknown", now: t0 + .seconds(59), epoch: 0))
        #expect(feed.filter.mayHold("unknown", now: t0 + .seconds(60), epoch: 0))
        #expect(feed.filter.probeToWrite(now: t0 + .seconds(10), epoch: 0) == nil, "a young proof needs no probe")
        let renewal = try feed.filter.probe(now: t0 + .seconds(20), epoch: 0)
        feed.deliver(renewal, at: s0 + 20)
        #expect(!feed.filter.mayHold("unknown", now: t0 + .seconds(70), epoch: 0))
    }

    @Test func aReconnectNeedsANewProofAndReplacesAProbeInFlight() throws {
        var feed = try proven()
        #expect(feed.filter.mayHold("unknown", now: t0, epoch: 1), "records buffered across the reconnect may land late")
        let before = try feed.filter.probe(now: t0 + .seconds(16), epoch: 0)
        // A probe from before the reconnect proves nothing after it: a new one replaces it.
        let after = try feed.filter.probe(now: t0 + .seconds(17), epoch: 1)
        feed.deliver(before, at: s0 + 16)
        #expect(feed.filter.mayHold("unknown", now: t0 + .seconds(17), epoch: 1))
        feed.deliver(after, at: s0 + 17)
        #expect(!feed.filter.mayHold("unknown", now: t0 + .seconds(17), epoch: 1))
    }

    @Test func aLostProbeIsReplacedOnceItCouldNoLongerProveAnything() throws {
        var filter = IdempotencyFilter(ttl: Self.ttl, duplicateWindow: Self.window)
        let lost = try filter.probe(now: t0, epoch: 0)
        #expect(filter.probeToWrite(now: t0 + .seconds(10), epoch: 0) == nil)
        let next = try filter.probe(now: t0 + .seconds(61), epoch: 0)
        #expect(next != lost)
        filter.delivered(next, revision: 1, storedNanoseconds: s0)
        #expect(!filter.mayHold("unknown", now: t0 + .seconds(62), epoch: 0))
    }

    @Test func everyDeliveredKeyIsHeldAndFewOthersAreAcrossGenerations() throws {
        // Small generations (4,096 keys in 2^15 bits) so 50,000 keys span 13 of them.
        let keys = (0..<50_000).map { "room-\($0 % 97).user-\($0 % 1013).msg-\($0)" }
        let filter = try filled(keys, tuning: .init(bitsLog2: 15, capacity: 4096, hashes: 6, maxGenerations: 32))
        #expect(filter.generations.count == 13)
        let others = (0..<20_000).map { "room-\($0 % 97).user-\($0 % 1013).other-\($0)" }
        let falseMaybes = others.filter { filter.mayHold($0, now: t0, epoch: 0) }.count
        // 13 generations at ≤ 2.2 % each: well under 30 % of unknown keys still read the bucket.
        #expect(falseMaybes < others.count * 3 / 10, "\(falseMaybes) of \(others.count)")
        #expect(falseMaybes > 0, "a Bloom filter this full has some false positives; none means it is not consulted")
    }

    @Test func aFollowerThatStartsOverAddsNothingTwice() throws {
        var feed = try proven(tuning: .init(bitsLog2: 12, capacity: 10, hashes: 4, maxGenerations: 32))
        feed.deliver((0..<9).map { "k\($0)" }, from: s0)
        let counts = feed.filter.generations.map(\.count)
        for revision in 1...10 { feed.filter.delivered("k-replayed", revision: UInt64(revision), storedNanoseconds: s0) }
        #expect(feed.filter.generations.map(\.count) == counts)
        #expect(feed.filter.newestRevision == 10)
    }

    @Test func generationsStartEachQuarterTTLAndExpireWithTheirRecords() throws {
        var feed = try proven()
        feed.deliver("early", at: s0 + 1)
        feed.deliver("six-hours-later", at: s0 + 6 * Self.hour + 1)
        #expect(feed.filter.generations.count == 2, "a new generation per quarter of the TTL")
        #expect(feed.filter.mayHold("early", now: t0, epoch: 0))
        // A day and a bit after the first generation's newest record, it is gone (its records expired).
        feed.deliver("next-day", at: s0 + 25 * Self.hour)
        #expect(feed.filter.generations.count == 2)
        #expect(!feed.filter.mayHold("early", now: t0, epoch: 0), "expired records need no read")
        #expect(feed.filter.mayHold("six-hours-later", now: t0, epoch: 0))
    }

    @Test func pastTheGenerationLimitTheOldestAreMergedAndNothingIsForgotten() throws {
        let filter = try filled((0..<45).map { "k\($0)" }, tuning: .init(bitsLog2: 12, capacity: 10, hashes: 4, maxGenerations: 2))
        #expect(filter.generations.count == 2)
        #expect(filter.generations.map(\.count).reduce(0, +) == 46, "every key (and the probe) still counted")
        #expect(!filter.mayHold("never-seen", now: t0, epoch: 0), "4,096 bits hold 46 keys with room to spare")
    }

    @Test func hashSpreadsSimilarKeys() {
        let hashes = Set((0..<10_000).map { IdempotencyFilter.hash("room.user.msg-\($0)") })
        #expect(hashes.count == 10_000)
        #expect(IdempotencyFilter.hash("a") == IdempotencyFilter.hash("a"))
    }
}

extension IdempotencyFilter {
    /// The probe the filter asks for; fails the test when it asks for none.
    mutating func probe(now: ContinuousClock.Instant, epoch: Int) throws -> String {
        let key = probeToWrite(now: now, epoch: epoch)
        return try #require(key)
    }
}
