import ChatCore
import ChatService
import Foundation
import NATS
import NATSTesting
import ServiceSupport
import Testing

/// Leases and presence expiry judge time by each process's own monotonic clock, never by comparing
/// wall-clock timestamps that another host wrote: hosts minutes apart (a VM resumed, NTP off) must
/// neither steal a live lease, wait minutes for a dead one, nor declare a live gateway dead.
@Suite("leases and presence expiry under clock skew") struct ClockSkewTests {
    static let tenMinutes: Int64 = 600_000

    @Test func aLeaseIsNeitherStolenFromAHolderBehindNorKeptByADeadOneAhead() async throws {
        let server = try NATSServerProcess()
        let connection = try await server.connect(name: "lease-test")
        let bucket = try await connection.keyValue(KeyValueConfiguration(bucket: "lease_skew"))
        let duration = Duration.seconds(1)

        // Behind by ten minutes: its expires_at_ms lies ten minutes in the past for everyone else.
        let behind = Lease(bucket: bucket, name: "behind", holder: "slow-clock", duration: duration) {
            Lease.nowMilliseconds() - Self.tenMinutes
        }
        let rival = Lease(bucket: bucket, name: "behind", holder: "rival", duration: duration)
        #expect(try await behind.tryAcquire())
        // Three lease durations of the holder renewing at its cadence (a third of the duration).
        let end = ContinuousClock.now + duration * 3
        while ContinuousClock.now < end {
            #expect(try await rival.tryAcquire() == false, "a live lease was taken from a holder whose clock is behind")
            try await Task.sleep(for: duration / 3)
            #expect(try await behind.tryAcquire())
        }
        let stopped = ContinuousClock.now
        try await eventually("the rival takes the abandoned lease", timeout: .seconds(15), poll: .milliseconds(100)) {
            try await rival.tryAcquire()
        }
        #expect(ContinuousClock.now - stopped >= duration, "not before the record stood still for the duration")

        // Ahead by ten minutes and then gone: replaced after about a duration, not ten minutes.
        let ahead = Lease(bucket: bucket, name: "ahead", holder: "fast-clock", duration: duration) {
            Lease.nowMilliseconds() + Self.tenMinutes
        }
        let standby = Lease(bucket: bucket, name: "ahead", holder: "standby", duration: duration)
        #expect(try await ahead.tryAcquire())
        #expect(try await standby.tryAcquire() == false)
        let takeover = "the standby takes over from a dead holder whose clock was ahead"
        try await eventually(takeover, timeout: .seconds(15), poll: .milliseconds(100)) {
            try await standby.tryAcquire()
        }
        // A released lease is free at once.
        await standby.release()
        #expect(try await ahead.tryAcquire())
    }

    /// A gateway record written by a replica whose clock is ten minutes behind keeps changing (the gateway
    /// beats): its members stay. Once it stops changing they go after the presence timeout.
    @Test func aBeatingGatewayStaysAliveWhateverClockWroteItsRecord() async throws {
        let fixture = try await ChatFixture { $0.presenceTimeout = .seconds(3) }
        try await fixture.startReplica(instance: "sweeper")
        let room = try await fixture.createRoom("skew")
        let user = UserID.random()
        _ = try await fixture.join(room.id, user, "skewed", gateway: "gw-skewed")
        let gateways = try await fixture.client.keyValue(KeyValueConfiguration(bucket: ChatNames.gatewaysBucket))
        let key = "gw-skewed"
        let written = try #require(try await gateways.value(key))
        var record = try #require(try JSONSerialization.jsonObject(with: Data(written.value)) as? [String: Any])
        @Sendable func isMember() async throws -> Bool {
            let list: ServiceAPI.MemberList = try await fixture.chat.call(.members, ServiceAPI.ListMembers(roomID: room.id.rawValue))
            return list.members.contains { $0.userID == user }
        }
        // Beats as a replica ten minutes behind records them, for twice the presence timeout.
        let end = ContinuousClock.now + .seconds(6)
        var lastBeat = ContinuousClock.now
        while ContinuousClock.now < end {
            record["last_seen_ms"] = ChatTime.now().milliseconds - Self.tenMinutes
            try await gateways.put(key, Array(try JSONSerialization.data(withJSONObject: record)))
            lastBeat = .now
            try await Task.sleep(for: .milliseconds(400))
            #expect(try await isMember(), "a beating gateway's member was removed because its record's clock is behind")
        }
        // The beats stop: the member goes once the record stood still for the timeout.
        try await eventually("the silent gateway's member removed", timeout: .seconds(20), poll: .milliseconds(100)) {
            try await !isMember()
        }
        #expect(ContinuousClock.now - lastBeat >= .seconds(3), "not before the record stood still for the timeout")
    }
}
