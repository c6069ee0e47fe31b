import Foundation
import Logging
import NATS

/// A leadership lease in a KV bucket: at most one holder at a time per name, taken over by another
/// instance once the holder stops renewing for `duration`. Ownership changes by compare-and-set on
/// the key's revision, so two candidates can never both win the same round.
///
/// Expiry compares wall clocks of different hosts; keep them NTP-synchronised (skew eats into `duration`).
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

    public init(bucket: KeyValue, name: String, holder: String, duration: Duration) {
        self.bucket = bucket
        self.name = name
        self.holder = holder
        self.duration = duration
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

    static func nowMilliseconds() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    /// Takes or renews the lease; true when this instance holds it afterwards.
    public func tryAcquire() async throws(NATSError) -> Bool {
        let now = Self.nowMilliseconds()
        let record = LeaseRecord(holder: holder, expiresAtMilliseconds: now + duration.inMilliseconds)
        let payload = try Self.encoded(record)
        do {
            guard let current = try await bucket.get(name), current.operation == .put else {
                try await bucket.create(name, payload)
                return true
            }
            let existing = try? JSONDecoder().decode(LeaseRecord.self, from: Data(current.value))
            if let existing, existing.holder != holder, existing.expiresAtMilliseconds > now { return false }
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
                    while !Task.isCancelled {
                        try? await Task.sleep(for: renewEvery)
                        if Task.isCancelled { return }
                        if !((try? await self.tryAcquire()) ?? false) { return }
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
