import Foundation
import Logging
import NATS
import Synchronization

/// A leadership lease in a KV bucket: at most one holder at a time per name, taken over by another
/// instance once the holder stops renewing for `duration`. Ownership changes by compare-and-set on
/// the key's revision, so two candidates can never both win the same round.
///
/// No wall clocks of different hosts are compared: a candidate takes the lease over only when the
/// record's revision has not changed for `duration` on its own monotonic clock (the holder renews every
/// `duration / 3`), so a host whose clock is minutes off neither steals a live lease nor waits minutes
/// for a dead one. `expires_at_ms` is still written, for people reading the record; 0 means released.
public struct LeaseRecord: Codable, Sendable, Equatable {
    public var holder: String
    public var expiresAtMilliseconds: Int64

    enum CodingKeys: String, CodingKey {
        case holder
        case expiresAtMilliseconds = "expires_at_ms"
    }
}

public final class Lease: Sendable {
    public let name: String
    public let holder: String
    public let duration: Duration
    let bucket: KeyValue
    /// This host's wall clock in milliseconds (a parameter so tests can skew it).
    let wallClock: @Sendable () -> Int64
    /// Another holder's record as this instance saw it: its revision, and since when (monotonic).
    private let observed = Mutex<(revision: UInt64, since: ContinuousClock.Instant)?>(nil)

    public init(
        bucket: KeyValue,
        name: String,
        holder: String,
        duration: Duration,
        wallClock: @escaping @Sendable () -> Int64 = Lease.nowMilliseconds
    ) {
        self.bucket = bucket
        self.name = name
        self.holder = holder
        self.duration = duration
        self.wallClock = wallClock
    }

    /// A record that cannot be encoded is an error, never an empty value: an empty lease record reads
    /// as no record at all, so the next candidate would take a lease that is still held.
    static func encoded(_ record: some Encodable) throws(NATSError) -> [UInt8] {
        do {
            return Array(try JSONEncoder().encode(record))
        } catch {
            throw NATSError(.invalidArgument, message: "lease record not encodable: \(error)")
        }
    }

    @Sendable public static func nowMilliseconds() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    /// Takes or renews the lease; true when this instance holds it afterwards.
    public func tryAcquire(now: ContinuousClock.Instant = .now) async throws(NATSError) -> Bool {
        let record = LeaseRecord(holder: holder, expiresAtMilliseconds: wallClock() + duration.inMilliseconds)
        let payload = try Self.encoded(record)
        do {
            guard let current = try await bucket.get(name), current.operation == .put else {
                try await bucket.create(name, payload)
                return true
            }
            let existing = try? JSONDecoder().decode(LeaseRecord.self, from: Data(current.value))
            if let existing, existing.holder != holder, existing.expiresAtMilliseconds != 0 {
                // Held by another: dead only once its record stood still for `duration` here.
                let since = observed.withLock { seen in
                    if seen?.revision != current.revision { seen = (current.revision, now) }
                    return seen?.since ?? now
                }
                if now - since < duration { return false }
            }
            try await bucket.update(name, payload, revision: current.revision)
            return true
        } catch  where error.kind == .wrongLastSequence {
            return false  // another candidate won this round
        }
    }

    /// Gives the lease up at once (clean shutdown), so a standby takes over without waiting for expiry.
    public func release() async {
        guard let current = try? await bucket.get(name), current.operation == .put,
            let existing = try? JSONDecoder().decode(LeaseRecord.self, from: Data(current.value)), existing.holder == holder
        else { return }
        guard let expired = try? Self.encoded(LeaseRecord(holder: holder, expiresAtMilliseconds: 0)) else { return }
        _ = try? await bucket.update(name, expired, revision: current.revision)
    }

    /// Runs `work` while holding the lease; renews every `duration / 3`; cancels `work` when the lease is lost.
    public func whileLeader(logger: Logger, _ work: @escaping @Sendable () async -> Void) async {
        let renewEvery = duration / 3
        while !Task.isCancelled {
            let held = (try? await tryAcquire()) ?? false
            if !held {
                try? await Task.sleep(for: renewEvery)
                continue
            }
            logger.info("became leader", metadata: ["lease": "\(name)", "holder": "\(holder)"])
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await work() }
                group.addTask {
                    // Renew until a renewal fails; then stop the work so two leaders never overlap for long.
                    // A holder that was paused (or starved) past `duration` since its last renewal may
                    // have been replaced: it stops at once, before asking.
                    var renewed = ContinuousClock.now
                    while !Task.isCancelled {
                        try? await Task.sleep(for: renewEvery)
                        if Task.isCancelled || ContinuousClock.now - renewed >= self.duration { return }
                        if !((try? await self.tryAcquire()) ?? false) { return }
                        renewed = .now
                    }
                }
                await group.next()
                group.cancelAll()
            }
            logger.info("leadership ended", metadata: ["lease": "\(name)", "holder": "\(holder)"])
            if Task.isCancelled { await release() }
        }
    }
}
