import Gateway
import Testing

@Suite("Token bucket (per-connection send rate limit)")
struct TokenBucketTests {
    @Test func burstThenRefillAtTheRate() {
        var bucket = TokenBucket(rate: 10, burst: 3)
        let start = ContinuousClock.now
        #expect(bucket.take(now: start) == .allowed)
        #expect(bucket.take(now: start) == .allowed)
        #expect(bucket.take(now: start) == .allowed)
        guard case .limited(let retry) = bucket.take(now: start) else {
            Issue.record("the fourth message in the same instant must be limited")
            return
        }
        #expect(retry == 100, "one token takes 100 ms at 10/s")
        #expect(bucket.take(now: start.advanced(by: .milliseconds(50))) == .limited(retryAfterMilliseconds: 50))
        #expect(bucket.take(now: start.advanced(by: .milliseconds(100))) == .allowed)
        // A long pause refills only up to the burst.
        let later = start.advanced(by: .seconds(60))
        for _ in 0..<3 { #expect(bucket.take(now: later) == .allowed) }
        #expect(bucket.take(now: later) != .allowed)
    }
}

@Suite("Shared rate limits (per user, per address)")
struct SharedRateLimitTests {
    @Test func oneKeyOneBudgetOtherKeysTheirOwn() {
        let limit = SharedRateLimit(rate: 1, burst: 2)
        let now = ContinuousClock.now
        #expect(limit.take("a", now: now) == .allowed)
        #expect(limit.take("a", now: now) == .allowed)
        #expect(limit.take("a", now: now) == .limited(retryAfterMilliseconds: 1000))
        #expect(limit.take("b", now: now) == .allowed)
    }

    @Test func theTableStaysBoundedAndForgetsOnlyRefilledBuckets() {
        let limit = SharedRateLimit(rate: 1, burst: 1, maxKeys: 3)
        let start = ContinuousClock.now
        #expect(limit.take("spent", now: start) == .allowed)
        let later = start.advanced(by: .milliseconds(500))
        #expect(limit.take("x", now: later) == .allowed)
        #expect(limit.take("y", now: later) == .allowed)
        // Full: nothing has refilled yet at `later`, so the table starts over rather than grow.
        #expect(limit.take("z", now: later) == .allowed)
        #expect(limit.keyCount == 1)
        // Refilled buckets are the ones dropped; a spent one keeps its debt.
        let limit2 = SharedRateLimit(rate: 1, burst: 1, maxKeys: 2)
        #expect(limit2.take("old", now: start) == .allowed)
        #expect(limit2.take("fresh", now: start.advanced(by: .seconds(5))) == .allowed)
        #expect(limit2.take("new", now: start.advanced(by: .milliseconds(5500))) == .allowed)
        #expect(limit2.keyCount == 2)
        #expect(limit2.take("fresh", now: start.advanced(by: .milliseconds(5500))) == .limited(retryAfterMilliseconds: 500))
    }
}
