import ChatCore
import NATS
import ServiceSupport
import Testing

@testable import ChatService

/// A holder of the gateway NATS credential (anyone who can publish to `chat.svc.>`) cannot speak for a
/// running gateway: presence calls, joins, sends and leaves need that gateway's key.
@Suite("Gateway credentials")
struct GatewayCredentialTests {
    /// A client claiming `gateway` with a key of its own (not the one the fixture's gateway registered).
    static func impostor(_ fixture: ChatFixture, as gateway: String) -> ChatServiceClient {
        ChatServiceClient(
            connection: fixture.client,
            timeout: .seconds(15),
            credential: GatewayCredential.random(gatewayID: GatewayID(gateway)!)
        )
    }

    static func code(_ body: () async throws -> Void) async -> ChatErrorCode? {
        do {
            try await body()
            return nil
        } catch {
            return (error as? ChatError)?.code
        }
    }

    @Test func anotherGatewaysPresenceCannotBeSyncedAwayOrBeaten() async throws {
        let fixture = try await ChatFixture { $0.presenceSyncGrace = .zero }
        try await fixture.startReplica()
        let room = try await fixture.createRoom("victims")
        let victim = UserID.random()
        _ = try await fixture.join(room.id, victim, "victim")  // held by gw-test, which has beaten with its key
        let impostor = Self.impostor(fixture, as: "gw-test")
        let sync = await Self.code {
            let _: ServiceAPI.PresenceSyncResult = try await impostor.call(
                .presenceSync,
                ServiceAPI.PresenceSync(gatewayID: "gw-test", roomID: room.id.rawValue, users: [])
            )
        }
        #expect(sync == .forbidden)
        let beat = await Self.code {
            let _: ServiceAPI.HeartbeatResult = try await impostor.call(
                .heartbeat,
                ServiceAPI.Heartbeat(gatewayID: "gw-test", connections: 0)
            )
        }
        #expect(beat == .forbidden)
        // Its own credential, naming another gateway in the body.
        let other = Self.impostor(fixture, as: "gw-attacker")
        let claimed = await Self.code {
            let _: ServiceAPI.PresenceSyncResult = try await other.call(
                .presenceSync,
                ServiceAPI.PresenceSync(gatewayID: "gw-test", roomID: room.id.rawValue, users: [])
            )
        }
        #expect(claimed == .forbidden)
        let list: ServiceAPI.MemberList = try await fixture.chat.call(.members, ServiceAPI.RoomRef(roomID: room.id.rawValue))
        #expect(list.members.map(\.userID) == [victim])
    }

    @Test func noOneSendsOrLeavesForAMemberAnotherGatewayHolds() async throws {
        let fixture = try await ChatFixture()
        try await fixture.startReplica()
        let room = try await fixture.createRoom("impersonation")
        let victim = UserID.random()
        _ = try await fixture.join(room.id, victim, "victim")
        let attacker = Self.impostor(fixture, as: "gw-attacker")
        let send = await Self.code {
            let _: ServiceAPI.SendResult = try await attacker.call(
                .send,
                ServiceAPI.Send(roomID: room.id.rawValue, userID: victim.rawValue, username: "victim", content: "forged")
            )
        }
        #expect(send == .notMember)
        let left: ServiceAPI.LeaveResult = try await attacker.call(
            .leave,
            ServiceAPI.Leave(roomID: room.id.rawValue, userID: victim.rawValue)
        )
        #expect(left.left == false)
        // Joining the victim's id again through another gateway changes nothing either.
        let joined: ServiceAPI.JoinResult = try await attacker.call(
            .join,
            ServiceAPI.Join(roomID: room.id.rawValue, userID: victim.rawValue, username: "victim", gatewayID: "gw-attacker")
        )
        #expect(joined.joined == false)
        let stillRefused = await Self.code {
            let _: ServiceAPI.SendResult = try await attacker.call(
                .send,
                ServiceAPI.Send(roomID: room.id.rawValue, userID: victim.rawValue, username: "victim", content: "forged")
            )
        }
        #expect(stillRefused == .notMember)
        // The holding gateway still acts for its member.
        _ = try await fixture.send(room.id, victim, "victim", "genuine")
        let history: ServiceAPI.HistoryResult = try await fixture.chat.call(.history, ServiceAPI.History(roomID: room.id.rawValue))
        #expect(history.messages.map(\.content) == ["genuine"])
    }

    @Test func requestsForMembersAndPresenceNeedACredential() async throws {
        let fixture = try await ChatFixture()
        try await fixture.startReplica()
        let room = try await fixture.createRoom("anonymous")
        let anonymous = ChatServiceClient(connection: fixture.client, timeout: .seconds(15))
        let join = await Self.code {
            let _: ServiceAPI.JoinResult = try await anonymous.call(
                .join,
                ServiceAPI.Join(roomID: room.id.rawValue, userID: UserID.random().rawValue, username: "x", gatewayID: "gw-x")
            )
        }
        #expect(join == .unauthorized)
        let beat = await Self.code {
            let _: ServiceAPI.HeartbeatResult = try await anonymous.call(
                .heartbeat,
                ServiceAPI.Heartbeat(gatewayID: "gw-x", connections: 0)
            )
        }
        #expect(beat == .unauthorized)
        // Reads stay open to any caller.
        let list: ServiceAPI.RoomList = try await anonymous.call(.listRooms, ServiceAPI.ListRooms())
        #expect(list.rooms.map(\.id) == [room.id])
    }
}

@Suite("Gateway key digests")
struct GatewayKeyDigestTests {
    @Test func digestIsLowercaseHexSHA256() {
        // echo -n abc | sha256sum
        #expect(GatewayKeys.digest("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }
}
