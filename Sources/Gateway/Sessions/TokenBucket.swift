/// A token bucket: `rate` tokens per second up to `burst`. A value type without I/O or clocks of its
/// own (the caller passes the time), so it is tested alone.
public struct TokenBucket: Sendable {
    public let rate: Double
    public let burst: Double
    private var tokens: Double
    private var last: ContinuousClock.Instant?

    public init(rate: Double, burst: Double) {
        self.rate = rate
        self.burst = burst
        self.tokens = burst
    }

    public enum Decision: Equatable, Sendable {
        case allowed
        case limited(retryAfterMilliseconds: Int)
    }

    /// Whether the bucket would be full at `now` (it has been idle long enough to refill).
    public func isFull(at now: ContinuousClock.Instant) -> Bool {
        guard let last else { return true }
        let elapsed = now - last
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        return tokens + seconds * rate >= burst
    }

    public mutating func take(now: ContinuousClock.Instant) -> Decision {
        if let last {
            let elapsed = now - last
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            tokens = min(burst, tokens + seconds * rate)
        }
        last = now
        if tokens >= 1 {
            tokens -= 1
            return .allowed
        }
        return .limited(retryAfterMilliseconds: max(1, Int(((1 - tokens) / rate * 1000).rounded(.up))))
    }
}
