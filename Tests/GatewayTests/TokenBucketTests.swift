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
