@testable import ChatService
import Testing

@Suite("IdempotencyFilter: when a send may skip the idempotency read")
struct IdempotencyFilterTests {
    static let window: Duration = .seconds(120)
    static let ttl: Duration = .seconds(24 * 3600)
    let t0 = ContinuousClock.now
    /// Server store time of the first record (ns); records in these tests are stored a second apart.
    let s0: Int64 = 1_800_000_000_000_000_000

    /// A filter whose watch has delivered this replica's probe `probe`, written at `t0` on epoch 0.
    func provenFilter(tuning: IdempotencyFilter.Tuning = .init(), probe: String = "probe") -> IdempotencyFilter {
        var filter = IdempotencyFilter(ttl: Self.ttl, duplicateWindow: Self.window, tuning: tuning)
        filter.willWrite(probe, at: t0, epoch: 0)
        filter.delivered(probe, storedNanoseconds: s0)
        return filter
    }

    @Test func untrustedUntilAnOwnWriteComesBackThroughTheWatch() {
        var filter = IdempotencyFilter(ttl: Self.ttl, duplicateWindow: Self.window)
        #expect(filter.mayHold("room.ann.1", now: t0, epoch: 0), "nothing proven yet")
        filter.delivered("room.bob.7", storedNanoseconds: s0)  // another replica's record
        #expect(filter.mayHold("room.ann.1", now: t0, epoch: 0), "another replica's record proves nothing about lag")
        filter.willWrite("room.me.1", at: t0, epoch: 0)
        #expect(filter.mayHold("room.ann.1", now: t0, epoch: 0), "the probe is still in flight")
        filter.delivered("room.me.1", storedNanoseconds: s0 + 1)
        #expect(!filter.mayHold("room.ann.1", now: t0, epoch: 0), "caught up: an unknown key has no record")
        #expect(filter.mayHold("room.bob.7", now: t0, epoch: 0))
        #expect(filter.mayHold("room.me.1", now: t0, epoch: 0))
    }

    @Test func theProofExpiresAfterHalfTheDuplicateWindow() {
        let filter = provenFilter()
        #expect(!filter.mayHold("unknown", now: t0 + .seconds(59), epoch: 0))
        #expect(filter.mayHold("unknown", now: t0 + .seconds(60), epoch: 0))
    }

    @Test func aReconnectNeedsANewProofAndReplacesAProbeInFlight() {
        var filter = provenFilter()
        #expect(filter.mayHold("unknown", now: t0, epoch: 1), "records buffered across the reconnect may land late")
        filter.willWrite("old-epoch", at: t0 + .seconds(1), epoch: 0)
        filter.willWrite("new-epoch", at: t0 + .seconds(2), epoch: 1)
        #expect(filter.probe?.key == "new-epoch", "a probe from before the reconnect proves nothing after it")
        filter.delivered("old-epoch", storedNanoseconds: s0 + 1)
        #expect(filter.mayHold("unknown", now: t0 + .seconds(2), epoch: 1))
        filter.delivered("new-epoch", storedNanoseconds: s0 + 2)
        #expect(!filter.mayHold("unknown", now: t0 + .seconds(2), epoch: 1))
        #expect(filter.mayHold("old-epoch", now: t0 + .seconds(2), epoch: 1))
    }

    @Test func aLostProbeIsReplacedOnceItCouldNoLongerProveAnything() {
        var filter = IdempotencyFilter(ttl: Self.ttl, duplicateWindow: Self.window)
        filter.willWrite("lost", at: t0, epoch: 0)
        filter.willWrite("second", at: t0 + .seconds(10), epoch: 0)
        #expect(filter.probe?.key == "lost", "one probe in flight at a time")
        filter.willWrite("third", at: t0 + .seconds(61), epoch: 0)
        #expect(filter.probe?.key == "third")
        filter.delivered("third", storedNanoseconds: s0)
        #expect(!filter.mayHold("unknown", now: t0 + .seconds(62), epoch: 0))
    }

    @Test func everyDeliveredKeyIsHeldAndFewOthersAreAcrossGenerations() {
        // Small generations (4,096 keys in 2^15 bits) so 50,000 keys span 13 of them.
        var filter = provenFilter(tuning: .init(bitsLog2: 15, capacity: 4096, hashes: 6, maxGenerations: 32))
        let keys = (0..<50_000).map { "room-\($0 % 97).user-\($0 % 1013).msg-\($0)" }
        for (index, key) in keys.enumerated() { filter.delivered(key, storedNanoseconds: s0 + Int64(index)) }
        #expect(filter.generations.count == 13)
        #expect(keys.allSatisfy { filter.mayHold($0, now: t0, epoch: 0) }, "no false 'no': that would store a duplicate")
        let others = (0..<20_000).map { "room-\($0 % 97).user-\($0 % 1013).other-\($0)" }
        let falseMaybes = others.filter { filter.mayHold($0, now: t0, epoch: 0) }.count
        // 13 generations at ≤ 2.2 % each: well under 30 % of unknown keys still read the bucket.
        #expect(falseMaybes < others.count * 3 / 10, "\(falseMaybes) of \(others.count)")
        #expect(falseMaybes > 0, "a Bloom filter this full has some false positives; none means it is not consulted")
    }

    @Test func generationsStartEachQuarterTTLAndExpireWithTheirRecords() {
        let hour: Int64 = 3_600_000_000_000
        var filter = provenFilter()
        filter.delivered("early", storedNanoseconds: s0 + 1)
        filter.delivered("six-hours-later", storedNanoseconds: s0 + 6 * hour + 1)
        #expect(filter.generations.count == 2, "a new generation per quarter of the TTL")
        #expect(filter.mayHold("early", now: t0, epoch: 0))
        // A day and a bit after the first generation's newest record, it is gone (its records expired).
        filter.delivered("next-day", storedNanoseconds: s0 + 25 * hour)
        #expect(filter.generations.count == 2)
        #expect(!filter.mayHold("early", now: t0, epoch: 0), "expired records need no read")
        #expect(filter.mayHold("six-hours-later", now: t0, epoch: 0))
    }

    @Test func overflowingGenerationsMakeEveryKeyMaybeUntilTheDroppedOnesExpire() {
        let hour: Int64 = 3_600_000_000_000
        var filter = provenFilter(tuning: .init(bitsLog2: 12, capacity: 10, hashes: 4, maxGenerations: 2))
        for index in 0..<30 { filter.delivered("k\(index)", storedNanoseconds: s0 + Int64(index)) }
        #expect(filter.generations.count == 2)
        #expect(filter.mayHold("never-seen", now: t0, epoch: 0), "a dropped generation's keys are unknown: read")
        filter.delivered("much-later", storedNanoseconds: s0 + 25 * hour)
        #expect(!filter.mayHold("never-seen", now: t0, epoch: 0), "their records have expired too")
    }

    @Test func hashSpreadsSimilarKeys() {
        let hashes = Set((0..<10_000).map { IdempotencyFilter.hash("room.user.msg-\($0)") })
        #expect(hashes.count == 10_000)
        #expect(IdempotencyFilter.hash("a") == IdempotencyFilter.hash("a"))
    }
}
