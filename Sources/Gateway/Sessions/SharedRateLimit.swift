import Synchronization

/// A rate limit shared by many connections: one `TokenBucket` per key (a user, a client address), so
/// opening more sockets, or sending over REST besides `/ws`, buys no more than the key's rate. The
/// table is bounded: when it is full, buckets that have refilled (forgetting them changes nothing)
/// are dropped, and if that frees nothing — a flood of distinct keys — it starts over empty.
public final class SharedRateLimit: Sendable {
    public let rate: Double
    public let burst: Double
    public let maxKeys: Int
    private let buckets = Mutex<[String: TokenBucket]>([:])

    public init(rate: Double, burst: Double, maxKeys: Int = 100_000) {
        self.rate = rate
        self.burst = burst
        self.maxKeys = maxKeys
    }

    public func take(_ key: String, now: ContinuousClock.Instant = .now) -> TokenBucket.Decision {
        buckets.withLock { buckets in
            if buckets[key] == nil, buckets.count >= maxKeys {
                buckets = buckets.filter { !$0.value.isFull(at: now) }
                if buckets.count >= maxKeys { buckets.removeAll(keepingCapacity: true) }
            }
            return buckets[key, default: TokenBucket(rate: rate, burst: burst)].take(now: now)
        }
    }

    public var keyCount: Int { buckets.withLock { $0.count } }
}

/// The gateway's shared limits (`RATE_LIMIT_PER_USER_*`, `RATE_LIMIT_PER_IP_*`, `ROOM_CREATE_PER_MIN`,
/// `USER_DIRECTORY_PER_MIN`).
struct GatewayRateLimits: Sendable {
    let sendsPerUser: SharedRateLimit
    let sendsPerAddress: SharedRateLimit
    let roomCreatesPerAddress: SharedRateLimit
    let roomCreatesPerUser: SharedRateLimit
    let directoryLookups: SharedRateLimit

    init(configuration: GatewayConfiguration) {
        sendsPerUser = SharedRateLimit(rate: configuration.userRatePerSecond, burst: configuration.userRateBurst)
        sendsPerAddress = SharedRateLimit(rate: configuration.addressRatePerSecond, burst: configuration.addressRateBurst)
        let creates = Double(configuration.roomCreatesPerMinute)
        roomCreatesPerAddress = SharedRateLimit(rate: creates / 60, burst: creates)
        roomCreatesPerUser = SharedRateLimit(rate: creates / 60, burst: creates)
        let lookups = Double(configuration.directoryLookupsPerMinute)
        directoryLookups = SharedRateLimit(rate: lookups / 60, burst: lookups)
    }

    /// A send by `user` (its key: see `ChatSession.rateKey`) from `address`: both must allow it.
    func send(user: String, address: String, now: ContinuousClock.Instant = .now) -> TokenBucket.Decision {
        let byUser = sendsPerUser.take(user, now: now)
        guard case .allowed = byUser else { return byUser }
        return sendsPerAddress.take(address, now: now)
    }

    /// A room creation from `address`, by `user` when the caller is authenticated.
    func createRoom(address: String, user: String?, now: ContinuousClock.Instant = .now) -> TokenBucket.Decision {
        let byAddress = roomCreatesPerAddress.take(address, now: now)
        guard case .allowed = byAddress, let user else { return byAddress }
        return roomCreatesPerUser.take(user, now: now)
    }
}
