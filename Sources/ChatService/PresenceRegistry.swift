import ChatCore
import Foundation
import Logging
import NATS
import Synchronization

/// Which gateways are alive: KV `chat_gateways`, `<gateway>` → its last sign of life (a heartbeat, or
/// a join through it). Members held by a gateway that stopped beating, or that a live gateway says it
/// does not hold, are removed through `Membership` (which emits UserLeft).
public final class PresenceRegistry: Sendable {
    struct GatewayRecord: Codable {
        var gatewayID: String
        var lastSeenMilliseconds: Int64
        var connections: Int
        /// Set by the presence sweeper when it removed this gateway's members: its next heartbeat is
        /// told to re-join them (the bucket's TTL removes records of gateways that never come back).
        var expired: Bool?
        /// SHA-256 (hex) of the gateway's `GatewayCredential` key, fixed by its first request.
        var keySHA256: String?
        enum CodingKeys: String, CodingKey {
            case connections, expired
            case gatewayID = "gateway_id"
            case lastSeenMilliseconds = "last_seen_ms"
            case keySHA256 = "key_sha256"
        }
    }

    let gateways: KeyValue
    let membership: Membership
    let configuration: ChatServiceConfiguration
    let logger: Logger
    /// When each gateway was last recorded alive from a join (at most once a second per gateway).
    private let touchedByJoin = Mutex<[GatewayID: ContinuousClock.Instant]>([:])
    /// The sweeper's view of each gateway record: its revision and since when (this replica's monotonic
    /// clock) it has not changed. A gateway is dead when its record stood still for the presence
    /// timeout — judged without comparing `last_seen_ms`, which another replica's clock wrote.
    private let observed = Mutex<[String: (revision: UInt64, since: ContinuousClock.Instant)]>([:])
    /// Which gateway a request comes from (the key digests in these records).
    let keys: GatewayKeys

    init(gateways: KeyValue, membership: Membership, configuration: ChatServiceConfiguration, logger: Logger) {
        self.gateways = gateways
        self.keys = GatewayKeys(gateways: gateways)
        self.membership = membership
        self.configuration = configuration
        self.logger = logger
    }

    /// A member joined through `gateway`: also a sign of life, so a gateway that dies before its first
    /// heartbeat still has a record for presence expiry to find. Once a second is plenty.
    public func joined(via gateway: GatewayID) async throws(ChatError) {
        let now = ContinuousClock.now
        let due = touchedByJoin.withLock { touched in
            if let last = touched[gateway], now - last < .seconds(1) { return false }
            touched[gateway] = now
            return true
        }
        guard due else { return }
        do {
            try await touch(gateway, connections: nil)
        } catch {
            throw ChatStorage.chatError(error)
        }
    }

    /// Records the gateway as alive. Returns true when the presence sweeper had declared it dead and
    /// removed its members (or this is its first sign of life): the gateway must join them again.
    public func heartbeat(gateway: GatewayID, connections: Int) async throws(ChatError) -> Bool {
        do {
            let record = try await record(of: gateway)
            try await touch(gateway, connections: connections)
            return record == nil || record?.expired == true
        } catch {
            throw ChatStorage.chatError(error)
        }
    }

    /// A record that cannot be encoded is an error, never an empty value (which no reader can decode:
    /// the sweeper skips it, so the gateway would never expire).
    static func encoded(_ record: some Encodable) throws(NATSError) -> [UInt8] {
        do {
            return Array(try JSONEncoder().encode(record))
        } catch {
            throw NATSError(.invalidArgument, message: "gateway record not encodable: \(error)")
        }
    }

    private func record(of gateway: GatewayID) async throws(NATSError) -> GatewayRecord? {
        guard let entry = try await gateways.value(ChatNames.gatewayKey(gateway)) else { return nil }
        return try? JSONDecoder().decode(GatewayRecord.self, from: Data(entry.value))
    }

    /// Records a sign of life. From a join (`connections` nil) an expired record is left as it is, so
    /// the gateway's next heartbeat still learns that its other members were removed.
    private func touch(_ gateway: GatewayID, connections: Int?) async throws(NATSError) {
        if connections == nil, try await record(of: gateway)?.expired == true { return }
        let now = ChatTime.now().milliseconds
        let record = GatewayRecord(
            gatewayID: gateway.rawValue,
            lastSeenMilliseconds: now,
            connections: connections ?? -1,
            keySHA256: keys.digest(of: gateway)
        )
        try await gateways.put(ChatNames.gatewayKey(gateway), try Self.encoded(record))
    }

    /// A live gateway's statement of what it holds (`ServiceAPI.PresenceSync`): removes its member
    /// records older than `presenceSyncGrace` that the statement does not list — in `room` the users
    /// not in `users`; without `room`, every room not in `rooms` — of the users (or rooms) whose id
    /// starts with `partition` ("" for all). Returns how many were removed. `snapshotAge`: how long
    /// before this request the gateway took its snapshot; records are judged by when nats-server stored
    /// them against nats-server's clock now, so a chat-service whose clock is off never removes a
    /// member who joined after the snapshot.
    public func sync(
        gateway: GatewayID,
        room: RoomID?,
        users: Set<UserID>,
        rooms: Set<RoomID>,
        partition: String = "",
        snapshotAge: Duration = .zero
    ) async throws(ChatError) -> Int {
        let now: Int64
        do { now = try await membership.serverNow() } catch { throw ChatStorage.chatError(error) }
        let cutoff = now - snapshotAge.inMilliseconds - configuration.presenceSyncGrace.inMilliseconds
        func isStale(_ member: Member, storedAt: Int64, in memberRoom: RoomID) -> Bool {
            guard member.gatewayID == gateway, storedAt < cutoff else { return false }
            if let room {
                return room == memberRoom && member.userID.rawValue.hasPrefix(partition) && !users.contains(member.userID)
            }
            return memberRoom.rawValue.hasPrefix(partition) && !rooms.contains(memberRoom)
        }
        do {
            var removed = 0
            for (memberRoom, member, storedAt) in try await membership.records(in: room)
            where isStale(member, storedAt: storedAt, in: memberRoom) {
                let stillStale = { (current: Member, storedAt: Int64) in isStale(current, storedAt: storedAt, in: memberRoom) }
                if try await membership.remove(room: memberRoom, user: member.userID, reason: "presence_sync", only: stillStale) {
                    removed += 1
                }
            }
            if removed > 0 {
                logger.notice(
                    "presence sync removed members the gateway does not hold",
                    metadata: [
                        "gateway_id": "\(gateway)", "room_id": "\(room.map(\.rawValue) ?? "*")",
                        "partition": "\(partition.isEmpty ? "*" : partition)", "members": "\(removed)",
                    ]
                )
            }
            return removed
        } catch {
            throw ChatStorage.chatError(error)
        }
    }

    /// Removes every member held by a gateway that stopped heartbeating, emitting UserLeft for each.
    /// Run by the presence leader only. Returns how many members were removed.
    ///
    /// `reconcile` also checks every member against the gateway records, not only the members of
    /// gateways that just expired: a member of a gateway declared dead earlier (tombstone) that joined
    /// before the tombstone, or of a gateway with no record at all, is stale. Such records come back
    /// when a delete is lost — nats-server 2.12/2.15 resurrect purged KV entries written before one
    /// crash when it crashes again (docs/design.md, "Presence") — so the leader reconciles after a NATS
    /// reconnect and every `presenceReconcileInterval`.
    @discardableResult
    public func sweepExpiredGateways(
        nowMilliseconds: Int64,
        reconcile: Bool = false,
        now: ContinuousClock.Instant = .now
    ) async throws(NATSError) -> Int {
        let timeout = configuration.presenceTimeout.inMilliseconds
        var dead: [String: String?] = [:]  // key → its key digest, kept in the tombstone
        var alive: Set<String> = []
        var tombstones: [String: Int64] = [:]  // key → when nats-server stored the tombstone
        // Every sweep (each second): read without creating a consumer (see `valuesOfStoredKeys`).
        let entries = try await gateways.valuesOfStoredKeys(matching: ">")
        let unchangedSince = observed.withLock { observed in
            let present = Set(entries.map(\.key))
            observed = observed.filter { present.contains($0.key) }
            for entry in entries where observed[entry.key]?.revision != entry.revision { observed[entry.key] = (entry.revision, now) }
            return observed.mapValues(\.since)
        }
        for entry in entries {
            guard let record = try? JSONDecoder().decode(GatewayRecord.self, from: Data(entry.value)) else { continue }
            if record.expired == true {
                tombstones[entry.key] = entry.createdNanoseconds / 1_000_000
            } else if now - (unchangedSince[entry.key] ?? now) > configuration.presenceTimeout {
                dead.updateValue(record.keySHA256, forKey: entry.key)
            } else {
                alive.insert(entry.key)
            }
        }
        guard !dead.isEmpty || reconcile else { return 0 }
        // Reconciling compares member records with tombstones and with now, all by nats-server's clock.
        let serverNow = reconcile ? try await membership.serverNow() : 0
        /// Stale: held by a gateway that just expired, or (reconciling) by one declared dead before the
        /// member joined, or by one with no record that would have beaten by now.
        func isStale(_ member: Member, storedAt: Int64) -> Bool {
            let gateway = member.gatewayID.rawValue
            if alive.contains(gateway) { return false }
            if dead.keys.contains(gateway) { return true }
            guard reconcile else { return false }
            // Stored in the same millisecond as the tombstone counts as before it (the gateway re-joins
            // its members when its next heartbeat learns it was declared dead).
            if let declaredDead = tombstones[gateway] { return storedAt <= declaredDead }
            return storedAt + timeout < serverNow
        }
        var removed = 0
        for (room, member, storedAt) in try await membership.records() where isStale(member, storedAt: storedAt) {
            let sameRecord = { (current: Member, currentStoredAt: Int64) in
                current.gatewayID == member.gatewayID && currentStoredAt == storedAt
            }
            if try await membership.remove(room: room, user: member.userID, reason: "gateway_expired", only: sameRecord) {
                removed += 1
            }
        }
        for (key, digest) in dead {
            // A tombstone, not a delete: the gateway may only be cut off (a partition, a pause), and its
            // next heartbeat must learn that it has to join its members again — with the same key.
            let tombstone = GatewayRecord(
                gatewayID: key,
                lastSeenMilliseconds: nowMilliseconds,
                connections: 0,
                expired: true,
                keySHA256: digest
            )
            try await gateways.put(key, try Self.encoded(tombstone))
        }
        if removed > 0 {
            logger.notice(
                "removed members of expired gateways",
                metadata: [
                    "gateways": "\(dead.keys.sorted())", "members": "\(removed)", "reconcile": "\(reconcile)",
                ]
            )
        }
        return removed
    }
}
