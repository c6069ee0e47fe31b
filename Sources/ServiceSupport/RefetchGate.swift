/// When a token names a `kid` the key set does not have, whether to fetch the set again now: at most
/// once per `interval` (counted from the last fetch, the one at start included), so a flood of tokens
/// with made-up `kid`s costs the key server one request per interval. I/O-free; the caller fetches.
struct RefetchGate: Sendable {
    let interval: Duration
    private(set) var lastFetch: ContinuousClock.Instant?

    init(interval: Duration, lastFetch: ContinuousClock.Instant? = nil) {
        self.interval = interval
        self.lastFetch = lastFetch
    }

    /// True (and the fetch counted) when one may start now.
    mutating func admit(now: ContinuousClock.Instant) -> Bool {
        if let lastFetch, now - lastFetch < interval { return false }
        lastFetch = now
        return true
    }
}
