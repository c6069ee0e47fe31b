import ChatCore
import ChatService
import Foundation
import NATS
import NATSTesting
import ServiceSupport
import Synchronization
import Testing

@Suite("chat-service against a real nats-server")
struct ChatServiceTests {
    @Test func roomsCreateDuplicateGetListAndValidation() async throws {
        let fixture = try await ChatFixture()
        try await fixture.startReplica()
        let room = try await fixture.createRoom("  General  ")
        #expect(room.name == "General")
        #expect(room.createdAt.hasSuffix("Z"))

        let duplicate = await expectChatError(.roomExists) { _ = try await fixture.createRoom("general") }
        #expect(duplicate?.code == .roomExists)
        #expect(duplicate?.room?.id == room.id, "the existing room comes with room_exists")

        for bad in ["", "   ", String(repeating: "x", count: 65), "tab\tname", "bell\u{7}"] {
            let error = await expectChatError(.nameInvalid) { _ = try await fixture.createRoom(bad) }
            #expect(error?.code == .nameInvalid, "name \(bad.debugDescription)")
        }
        #expect(try await fixture.createRoom(String(repeating: "é", count: 64)).name.count == 64)

        let fetched: Room = try await fixture.chat.call(.getRoom, ServiceAPI.RoomRef(roomID: room.id.rawValue.uppercased()))
        #expect(fetched.id == room.id)
        let missing = await expectChatError(.roomNotFound) {
            let _: Room = try await fixture.chat.call(.getRoom, ServiceAPI.RoomRef(roomID: RoomID.random().rawValue))
        }
        #expect(missing != nil)
        for hostile in ["a.b", "*", ">", " \(room.id)", "\(room.id).x", "../\(room.id)", "chat.room.*.msg"] {
            let error = await expectChatError(.invalidRequest) {
                let _: Room = try await fixture.chat.call(.getRoom, ServiceAPI.RoomRef(roomID: hostile))
            }
            #expect(error?.code == .invalidRequest, "hostile id \(hostile)")
        }
        let user = UserID.random()
        _ = try await fixture.join(room.id, user, "ann")
        let list: ServiceAPI.RoomList = try await fixture.chat.call(.listRooms, ServiceAPI.ListRooms())
        #expect(list.total == 2)
        #expect(list.rooms.first { $0.id == room.id }?.memberCount == 1)

        let garbage = try await fixture.client.request(ChatNames.Endpoint.createRoom.subject, payload: Array("not json".utf8))
        #expect(garbage.headers["Nats-Service-Error-Code"] == "400")
        #expect(try ChatJSON.decode(ChatError.self, from: garbage.payload).code == .invalidRequest)
        let mistyped = try await fixture.client.request(ChatNames.Endpoint.createRoom.subject, payload: Array("{\"name\":42}".utf8))
        #expect(try ChatJSON.decode(ChatError.self, from: mistyped.payload).error.contains("name"))
    }

    @Test func memberCountsInJoinedRepliesCatchUpWithOtherReplicas() async throws {
        let fixture = try await ChatFixture()
        try await fixture.startReplica()
        try await fixture.startReplica()
        let room = try await fixture.createRoom("busy")
        let users = (0..<20).map { _ in UserID.random() }
        for (index, user) in users.enumerated() {
            // Each replica counts its own joins at once and the other's within the cache TTL.
            let count = try await fixture.join(room.id, user, "u\(index)").room.memberCount
            #expect((1...index + 1).contains(count), "join \(index + 1): \(count)")
        }
        let exact: Room = try await fixture.chat.call(.getRoom, ServiceAPI.RoomRef(roomID: room.id.rawValue))
        #expect(exact.memberCount == users.count, "the room itself is always counted exactly")
        // Both replicas report every member once their cached counts expire: wait (deadline) for ten
        // replies in a row with the full count (a rejoin changes nothing).
        let deadline = ContinuousClock.now + .seconds(15)
        var streak = 0
        var replies: [Int] = []
        while streak < 10, ContinuousClock.now < deadline {
            let rejoin = try await fixture.join(room.id, users[0], "u0")
            #expect(!rejoin.joined)
            replies.append(rejoin.room.memberCount)
            streak = rejoin.room.memberCount == users.count ? streak + 1 : 0
            if streak == 0 { try await Task.sleep(for: .milliseconds(50)) }  // polling pace, not synchronisation
        }
        #expect(streak == 10, "\(replies.suffix(20))")
        #expect(replies.allSatisfy { (1...users.count).contains($0) })
    }

    @Test func joinLeaveMembersAndEvents() async throws {
        let fixture = try await ChatFixture()
        try await fixture.startReplica()
        let room = try await fixture.createRoom("lobby")
        let (ann, bob) = (UserID.random(), UserID.random())
        let first = try await fixture.join(room.id, ann, "ann")
        #expect(first.joined)
        #expect(first.lastSeq == 0)
        #expect(try await fixture.join(room.id, ann, "ann").joined == false, "joining twice is idempotent")
        #expect(try await fixture.join(room.id, bob, "bob").room.memberCount == 2)
        let members: ServiceAPI.MemberList = try await fixture.chat.call(.members, ServiceAPI.RoomRef(roomID: room.id.rawValue))
        #expect(members.members.map(\.username) == ["ann", "bob"])

        let js = fixture.client.jetStream
        let joinedEvent = try #require(try await js.lastMessage(stream: ChatNames.eventStream, subject: ChatNames.presenceSubject(room.id)))
        #expect(joinedEvent.headers[ChatNames.eventTypeHeader] == "UserJoined.v1")
        #expect(try ChatJSON.decode(PresenceEvent.self, from: joinedEvent.payload).username == "bob")

        let left: ServiceAPI.LeaveResult = try await fixture.chat.call(
            .leave,
            ServiceAPI.Leave(roomID: room.id.rawValue, userID: bob.rawValue)
        )
        #expect(left.left)
        let leftAgain: ServiceAPI.LeaveResult = try await fixture.chat.call(
            .leave,
            ServiceAPI.Leave(roomID: room.id.rawValue, userID: bob.rawValue)
        )
        #expect(!leftAgain.left)
        // Member counts after a leave: the joined reply, the room, the room list.
        #expect(try await fixture.join(room.id, ann, "ann").room.memberCount == 1)
        let counted: Room = try await fixture.chat.call(.getRoom, ServiceAPI.RoomRef(roomID: room.id.rawValue))
        #expect(counted.memberCount == 1)
        let list: ServiceAPI.RoomList = try await fixture.chat.call(.listRooms, ServiceAPI.ListRooms())
        #expect(list.rooms.first { $0.id == room.id }?.memberCount == 1)
        #expect(try await fixture.join(room.id, bob, "bob").room.memberCount == 2, "rejoining after a leave counts again")
        _ = try await fixture.chat.call(.leave, ServiceAPI.Leave(roomID: room.id.rawValue, userID: bob.rawValue)) as ServiceAPI.LeaveResult
        let leftEvent = try #require(try await js.lastMessage(stream: ChatNames.eventStream, subject: ChatNames.presenceSubject(room.id)))
        #expect(leftEvent.headers[ChatNames.eventTypeHeader] == "UserLeft.v1")
        let notMember = await expectChatError(.notMember) { _ = try await fixture.send(room.id, bob, "bob", "hi") }
        #expect(notMember != nil)
        let badUser = await expectChatError(.usernameInvalid) { _ = try await fixture.join(room.id, UserID.random(), "\u{0}evil") }
        #expect(badUser != nil)
        let badGateway = await expectChatError(.invalidRequest) {
            _ = try await fixture.join(room.id, UserID.random(), "eve", gateway: "gw.*")
        }
        #expect(badGateway != nil)
        let noRoom = await expectChatError(.roomNotFound) { _ = try await fixture.join(RoomID.random(), ann, "ann") }
        #expect(noRoom != nil)
    }

    @Test func sendValidatesAndNumbersMessagesAndRetriesAreIdempotent() async throws {
        let fixture = try await ChatFixture { $0.duplicateWindow = .milliseconds(300) }
        try await fixture.startReplica()
        let room = try await fixture.createRoom("numbers")
        let ann = UserID.random()
        _ = try await fixture.join(room.id, ann, "ann")
        var seqs: [UInt64] = []
        for index in 0..<5 { seqs.append(try await fixture.send(room.id, ann, "ann", "m\(index)").message.seq) }
        #expect(seqs == [1, 2, 3, 4, 5])

        #expect(
            await expectChatError(.contentTooLong) { _ = try await fixture.send(room.id, ann, "ann", String(repeating: "a", count: 4097)) }
                != nil
        )
        #expect(try await fixture.send(room.id, ann, "ann", String(repeating: "€", count: 1365)).message.seq == 6, "4095 bytes fit")
        #expect(await expectChatError(.contentInvalid) { _ = try await fixture.send(room.id, ann, "ann", "  \n ") } != nil)
        #expect(await expectChatError(.invalidRequest) { _ = try await fixture.send(room.id, ann, "ann", "x", clientID: "bad id!") } != nil)

        let original = try await fixture.send(room.id, ann, "ann", "once", clientID: "c-1")
        #expect(!original.duplicate)
        // A retry inside JetStream's duplicate window, also from a new connection of the same user.
        let annAgain = UserID.random()
        _ = try await fixture.join(room.id, annAgain, "ann")
        let retry = try await fixture.send(room.id, annAgain, "ann", "once", clientID: "c-1")
        #expect(retry.duplicate)
        #expect(retry.message.messageID == original.message.messageID)
        #expect(retry.message.seq == original.message.seq)
        // `ack_only` (what gateways ask for): the ids and seq without the message, for new sends and retries.
        let acked: ServiceAPI.SendAck = try await fixture.chat.call(
            .send,
            ServiceAPI.Send(
                roomID: room.id.rawValue,
                userID: ann.rawValue,
                username: "ann",
                content: "once",
                clientMessageID: "c-1",
                ackOnly: true
            )
        )
        #expect(
            acked == ServiceAPI.SendAck(ServiceAPI.SendResult(message: original.message, duplicate: true)),
            "a retry acknowledged with the original's ids"
        )
        let ackedReply = try await fixture.chat.connection.request(
            ChatNames.Endpoint.send.subject,
            payload: ChatJSON.encode(
                ServiceAPI.Send(
                    roomID: room.id.rawValue,
                    userID: ann.rawValue,
                    username: "ann",
                    content: "short",
                    clientMessageID: "c-2",
                    ackOnly: true
                )
            ),
            headers: fixture.chat.headers(),
            timeout: .seconds(5)
        )
        let fresh = try ChatJSON.decode(ServiceAPI.SendAck.self, from: ackedReply.payload)
        #expect(!fresh.duplicate && fresh.seq == original.message.seq + 1 && fresh.roomID == room.id)
        #expect(!String(decoding: ackedReply.payload, as: UTF8.self).contains("short"), "the reply does not carry the message")
        // Wait out the 300 ms duplicate window (the passage of time is what this step tests).
        try await Task.sleep(for: .milliseconds(600))
        let late = try await fixture.send(room.id, ann, "ann", "once", clientID: "c-1")
        #expect(late.duplicate)
        #expect(late.message.messageID == original.message.messageID)
        let history = try await fixture.history(room.id)
        #expect(history.messages.map(\.seq) == Array(1...8), "retries stored nothing new")
        #expect(history.messages.filter { $0.content == "once" }.count == 1)
    }

    @Test func sendsSkipTheIdempotencyReadYetRetriesAfterTheWindowAreFoundOnEitherReplica() async throws {
        // A 4 s duplicate window: the filter trusts a proof for 2 s, which sequential sends renew.
        let window: Duration = .seconds(4)
        let fixture = try await ChatFixture { $0.duplicateWindow = window }
        let one = try await fixture.startReplica(instance: "one")
        let two = try await fixture.startReplica(instance: "two")
        let room = try await fixture.createRoom("retries")
        let users = (0..<4).map { _ in UserID.random() }
        for (index, user) in users.enumerated() { _ = try await fixture.join(room.id, user, "u\(index)") }
        func lookups() -> IdempotencyRecords.Lookups {
            let (a, b) = (
                one.storage?.idempotency.lookups ?? IdempotencyRecords.Lookups(),
                two.storage?.idempotency.lookups ?? IdempotencyRecords.Lookups()
            )
            var sum = a
            sum.read += b.read
            sum.skipped += b.skipped
            return sum
        }
        var originals: [ChatMessage] = []
        for index in 0..<60 {
            originals.append(
                try await fixture.send(room.id, users[index % 4], "u\(index % 4)", "m\(index)", clientID: "c-\(index)").message
            )
        }
        let lastSent = ContinuousClock.now
        let counted = lookups()
        #expect(counted.read + counted.skipped == 60)
        // The first sends of each replica read (nothing proven yet); once their own records come back
        // through the watch, sends skip the read.
        #expect(counted.skipped >= 20, "\(counted)")
        #expect(
            (one.storage?.idempotency.lookups.skipped ?? 0) > 0 && (two.storage?.idempotency.lookups.skipped ?? 0) > 0,
            "both replicas skip"
        )

        // Past the window JetStream no longer rejects the msg id: only the records stand between a
        // retry and a second copy. Waiting for the window to pass is what this step tests.
        try await Task.sleep(until: lastSent + window + .milliseconds(500))
        // Each retry follows a new send, whose record renews the replicas' proofs: the retries are
        // decided by the filter holding their keys, not by a stale proof.
        for (index, original) in originals.enumerated() {
            #expect(try await !fixture.send(room.id, users[index % 4], "u\(index % 4)", "n\(index)", clientID: "f-\(index)").duplicate)
            let retry = try await fixture.send(room.id, users[index % 4], "u\(index % 4)", "m\(index)", clientID: "c-\(index)")
            #expect(retry.duplicate, "retry \(index)")
            #expect(retry.message.messageID == original.messageID)
            #expect(retry.message.seq == original.seq)
        }
        let after = lookups()
        #expect(after.read - counted.read >= 60, "every retry read the bucket")
        #expect(after.skipped - counted.skipped >= 20, "most new sends did not: \(after)")
        let history = try await fixture.history(room.id, limit: 200)
        #expect(history.messages.map(\.seq) == Array(1...120), "retries stored nothing new")
        #expect(Set(history.messages.map(\.content)).count == 120)
    }

    @Test func withTheFilterOffEverySendReadsTheBucket() async throws {
        let fixture = try await ChatFixture { $0.idempotencyFilter = false }
        let replica = try await fixture.startReplica()
        let room = try await fixture.createRoom("reads")
        let ann = UserID.random()
        _ = try await fixture.join(room.id, ann, "ann")
        for index in 0..<5 { #expect(try await !fixture.send(room.id, ann, "ann", "m\(index)", clientID: "c-\(index)").duplicate) }
        for index in 0..<5 { #expect(try await fixture.send(room.id, ann, "ann", "m\(index)", clientID: "c-\(index)").duplicate) }
        var expected = IdempotencyRecords.Lookups()
        expected.read = 10
        #expect(replica.storage?.idempotency.lookups == expected)
        #expect(try await fixture.history(room.id).messages.count == 5)
    }

    @Test func seqHasNoHolesWithTwoReplicasWritingOneRoom() async throws {
        let fixture = try await ChatFixture()
        try await fixture.startReplica(instance: "a")
        try await fixture.startReplica(instance: "b")
        let room = try await fixture.createRoom("busy")
        let users = (0..<4).map { _ in UserID.random() }
        for (index, user) in users.enumerated() { _ = try await fixture.join(room.id, user, "u\(index)") }
        let seqs = try await withThrowingTaskGroup(of: UInt64.self) { group in
            for index in 0..<200 {
                group.addTask { try await fixture.send(room.id, users[index % 4], "u\(index % 4)", "n\(index)").message.seq }
            }
            return try await group.reduce(into: [UInt64]()) { $0.append($1) }
        }
        #expect(seqs.sorted() == Array(1...200))
        let stats = try await fixture.client.request("$SRV.STATS.chat")
        #expect(!stats.payload.isEmpty)
        var all: [ChatMessage] = []
        var after: UInt64 = 0
        while true {
            let page = try await fixture.history(room.id, limit: 200, after: after)
            all += page.messages
            guard page.hasMore, let last = page.messages.last else { break }
            after = last.seq
        }
        #expect(all.map(\.seq) == Array(1...200))
        #expect(Set(all.map(\.content)).count == 200)
    }

    @Test func historyPagesOnInterleavedRooms() async throws {
        let fixture = try await ChatFixture()
        try await fixture.startReplica()
        let (a, b) = (try await fixture.createRoom("a"), try await fixture.createRoom("b"))
        let ann = UserID.random()
        _ = try await fixture.join(a.id, ann, "ann")
        _ = try await fixture.join(b.id, ann, "ann")
        for index in 0..<260 {
            _ = try await fixture.send(a.id, ann, "ann", "a\(index + 1)")
            if index % 3 == 0 { _ = try await fixture.send(b.id, ann, "ann", "b\(index)") }
        }
        let newest = try await fixture.history(a.id)
        #expect(newest.messages.map(\.seq) == Array(211...260))
        #expect(newest.hasMore)
        #expect(newest.messages.last?.content == "a260")
        let older = try await fixture.history(a.id, limit: 100, before: 211)
        #expect(older.messages.map(\.seq) == Array(111...210))
        let oldest = try await fixture.history(a.id, limit: 200, before: 11)
        #expect(oldest.messages.map(\.seq) == Array(1...10))
        #expect(!oldest.hasMore)
        let resume = try await fixture.history(a.id, limit: 5, after: 100)
        #expect(resume.messages.map(\.seq) == [101, 102, 103, 104, 105])
        #expect(resume.hasMore)
        let capped = try await fixture.history(a.id, limit: 1000)
        #expect(capped.messages.count == 200, "limit is capped at CHAT_HISTORY_MAX_LIMIT")
        #expect(try await fixture.history(b.id, limit: 3).messages.map(\.content) == ["b252", "b255", "b258"])
        let empty = try await fixture.createRoom("empty")
        #expect(try await fixture.history(empty.id).messages.isEmpty)
        #expect(await expectChatError(.invalidRequest) { _ = try await fixture.history(a.id, limit: 0) } != nil)
    }

    @Test func retentionKeepsTheNewestMessagesPerRoom() async throws {
        let fixture = try await ChatFixture { $0.retentionPerRoom = 20 }
        try await fixture.startReplica()
        let room = try await fixture.createRoom("short")
        let ann = UserID.random()
        _ = try await fixture.join(room.id, ann, "ann")
        for index in 0..<50 { _ = try await fixture.send(room.id, ann, "ann", "\(index)") }
        let page = try await fixture.history(room.id, limit: 100)
        #expect(page.messages.map(\.seq) == Array(31...50))
        #expect(!page.hasMore)
        #expect(try await fixture.send(room.id, ann, "ann", "next").message.seq == 51)
    }

    @Test func survivesChatServiceAndServerRestart() async throws {
        let fixture = try await ChatFixture()
        try await fixture.startReplica()
        let room = try await fixture.createRoom("durable")
        let ann = UserID.random()
        _ = try await fixture.join(room.id, ann, "ann")
        for index in 0..<10 { _ = try await fixture.send(room.id, ann, "ann", "\(index)") }
        await fixture.stopReplica(0)
        try fixture.server.restart()
        try await fixture.startReplica(instance: "after-restart")
        #expect(try await fixture.history(room.id).messages.map(\.seq) == Array(1...10))
        #expect(try await fixture.send(room.id, ann, "ann", "again").message.seq == 11, "membership and seq survived")
        let list: ServiceAPI.RoomList = try await fixture.chat.call(.listRooms, ServiceAPI.ListRooms())
        #expect(list.rooms.map(\.name) == ["durable"])
    }

    @Test func membersOfADeadGatewayExpireWithUserLeft() async throws {
        let fixture = try await ChatFixture { $0.presenceTimeout = .seconds(3) }
        try await fixture.startReplica(instance: "one")
        try await fixture.startReplica(instance: "two")
        let room = try await fixture.createRoom("presence")
        let (ghost, alive) = (UserID.random(), UserID.random())
        let start = ContinuousClock.now  // before gw-dead's last sign of life, its member's join
        _ = try await fixture.join(room.id, ghost, "ghost", gateway: "gw-dead")
        _ = try await fixture.join(room.id, alive, "alive", gateway: "gw-alive")
        // gw-alive keeps beating; gw-dead never does again.
        let beating = Task {
            while !Task.isCancelled {
                let _: ServiceAPI.Ok? = try? await fixture.gateway("gw-alive").call(
                    .heartbeat,
                    ServiceAPI.Heartbeat(gatewayID: "gw-alive", connections: 1)
                )
                try? await Task.sleep(for: .milliseconds(300))
            }
        }
        defer { beating.cancel() }
        // Removal is complete when the UserLeft event is stored (the member entry is emptied just before).
        let js = fixture.client.jetStream
        // 3 s timeout + 1 s sweeps; the deadline leaves room for JetStream calls answered late while the
        // whole suite (~20 nats-servers) shares two cores.
        try await eventually("ghost removed with UserLeft", timeout: .seconds(20)) {
            let members: ServiceAPI.MemberList = try await fixture.chat.call(.members, ServiceAPI.RoomRef(roomID: room.id.rawValue))
            let last = try await js.lastMessage(stream: ChatNames.eventStream, subject: ChatNames.presenceSubject(room.id))
            return members.members.map(\.username) == ["alive"] && last?.headers[ChatNames.eventTypeHeader] == "UserLeft.v1"
        }
        #expect(ContinuousClock.now - start >= .seconds(3), "not before the gateway's presence timeout")
        let event = try #require(try await js.lastMessage(stream: ChatNames.eventStream, subject: ChatNames.presenceSubject(room.id)))
        let left = try ChatJSON.decode(PresenceEvent.self, from: event.payload)
        #expect(left.username == "ghost")
        #expect(left.reason == "gateway_expired")
        // Exactly one UserLeft although two replicas run.
        let info = try await fixture.client.jetStream.streamInfo(ChatNames.eventStream)
        let events = try await fixture.client.jetStream.messages(
            stream: ChatNames.eventStream,
            subject: ChatNames.presenceSubject(room.id),
            from: 1,
            limit: Int(info.state.lastSequence)
        )
        #expect(events.filter { $0.headers[ChatNames.eventTypeHeader] == "UserLeft.v1" }.count == 1)
    }

    @Test func presenceSyncRemovesWhatTheGatewayDoesNotHold() async throws {
        let fixture = try await ChatFixture { $0.presenceSyncGrace = .zero }
        try await fixture.startReplica()
        let (a, b) = (try await fixture.createRoom("sync-a"), try await fixture.createRoom("sync-b"))
        let (held, gone, elsewhere, other) = (UserID.random(), UserID.random(), UserID.random(), UserID.random())
        _ = try await fixture.join(a.id, held, "held")
        _ = try await fixture.join(a.id, gone, "gone")
        _ = try await fixture.join(b.id, elsewhere, "elsewhere")
        _ = try await fixture.join(a.id, other, "other", gateway: "gw-other")
        func members(_ room: Room) async throws -> [String] {
            let list: ServiceAPI.MemberList = try await fixture.chat.call(.members, ServiceAPI.RoomRef(roomID: room.id.rawValue))
            return list.members.map(\.username)
        }
        // Room a: gw-test holds only `held`; gw-other's member is not gw-test's business.
        let inRoom: ServiceAPI.PresenceSyncResult = try await fixture.chat.call(
            .presenceSync,
            ServiceAPI.PresenceSync(gatewayID: "gw-test", roomID: a.id.rawValue, users: [held.rawValue])
        )
        #expect(inRoom.removed == 1)
        #expect(try await members(a) == ["held", "other"])
        // gw-test holds members in room a only: its member of room b is stale.
        let rooms: ServiceAPI.PresenceSyncResult = try await fixture.chat.call(
            .presenceSync,
            ServiceAPI.PresenceSync(gatewayID: "gw-test", rooms: [a.id.rawValue])
        )
        #expect(rooms.removed == 1)
        #expect(try await members(b).isEmpty)
        #expect(try await members(a) == ["held", "other"])
        let event = try #require(
            try await fixture.client.jetStream.lastMessage(stream: ChatNames.eventStream, subject: ChatNames.presenceSubject(b.id))
        )
        #expect(try ChatJSON.decode(PresenceEvent.self, from: event.payload).reason == "presence_sync")

        // Bad statements are refused before anything is touched.
        for bad in [
            ServiceAPI.PresenceSync(gatewayID: "gw-test", roomID: a.id.rawValue, users: ["not-a-uuid"]),
            ServiceAPI.PresenceSync(gatewayID: "gw.test", rooms: []),
            ServiceAPI.PresenceSync(gatewayID: "gw-test", roomID: a.id.rawValue, users: [], rooms: []),
            ServiceAPI.PresenceSync(gatewayID: "gw-test"),
        ] {
            do {
                let _: ServiceAPI.PresenceSyncResult = try await fixture.chat.call(.presenceSync, bad)
                Issue.record("accepted \(bad)")
            } catch {
                #expect(error.code == .invalidRequest)
            }
        }
        #expect(try await members(a) == ["held", "other"])
    }

    @Test func aPartitionedStatementCoversOnlyItsPrefix() async throws {
        let fixture = try await ChatFixture { $0.presenceSyncGrace = .zero }
        try await fixture.startReplica()
        let (a, b) = (try await fixture.createRoom("part-a"), try await fixture.createRoom("part-b"))
        func user(startingWith digit: String) -> UserID { UserID(digit + String(UserID.random().rawValue.dropFirst()))! }
        let (zero, zeroHeld, f) = (user(startingWith: "0"), user(startingWith: "0"), user(startingWith: "f"))
        _ = try await fixture.join(a.id, zero, "zero")
        _ = try await fixture.join(a.id, zeroHeld, "zero-held")
        _ = try await fixture.join(a.id, f, "f")
        _ = try await fixture.join(b.id, UserID.random(), "in-b")
        func members(_ room: Room) async throws -> Set<String> {
            let list: ServiceAPI.MemberList = try await fixture.chat.call(.members, ServiceAPI.RoomRef(roomID: room.id.rawValue))
            return Set(list.members.map(\.username))
        }
        // A snapshot older than every record (an hour): nothing in it can be judged stale.
        let old: ServiceAPI.PresenceSyncResult = try await fixture.chat.call(
            .presenceSyncPartition,
            ServiceAPI.PresenceSync(
                gatewayID: "gw-test",
                roomID: a.id.rawValue,
                users: [zeroHeld.rawValue],
                partition: "0",
                snapshotAgeMilliseconds: 3_600_000
            )
        )
        #expect(old.removed == 0)
        #expect(try await members(a) == ["zero", "zero-held", "f"])
        // Partition "0" of room a lists zero-held only: zero goes, f (outside the partition) stays.
        let inRoom: ServiceAPI.PresenceSyncResult = try await fixture.chat.call(
            .presenceSyncPartition,
            ServiceAPI.PresenceSync(
                gatewayID: "gw-test",
                roomID: a.id.rawValue,
                users: [zeroHeld.rawValue],
                partition: "0"
            )
        )
        #expect(inRoom.removed == 1)
        #expect(try await members(a) == ["zero-held", "f"])
        // The rooms statement for b's 8-digit prefix lists nothing: b's member goes, room a's stay.
        let rooms: ServiceAPI.PresenceSyncResult = try await fixture.chat.call(
            .presenceSyncPartition,
            ServiceAPI.PresenceSync(
                gatewayID: "gw-test",
                rooms: [],
                partition: String(b.id.rawValue.prefix(8))
            )
        )
        #expect(rooms.removed == 1)
        #expect(try await members(b).isEmpty)
        #expect(try await members(a) == ["zero-held", "f"])

        for (endpoint, bad) in [
            (
                .presenceSyncPartition,
                ServiceAPI.PresenceSync(gatewayID: "gw-test", roomID: a.id.rawValue, users: [f.rawValue], partition: "0")
            ),  // f is not in "0"
            (.presenceSyncPartition, ServiceAPI.PresenceSync(gatewayID: "gw-test", roomID: a.id.rawValue, users: [], partition: "F")),
            (.presenceSyncPartition, ServiceAPI.PresenceSync(gatewayID: "gw-test", roomID: a.id.rawValue, users: [], partition: "")),
            (
                .presenceSyncPartition,
                ServiceAPI.PresenceSync(gatewayID: "gw-test", roomID: a.id.rawValue, users: [], partition: "012345678")
            ),
            (.presenceSyncPartition, ServiceAPI.PresenceSync(gatewayID: "gw-test", rooms: [], partition: "a.>")),
            (.presenceSyncPartition, ServiceAPI.PresenceSync(gatewayID: "gw-test", rooms: [])),  // no partition
            (.presenceSyncPartition, ServiceAPI.PresenceSync(gatewayID: "gw-test", rooms: [], partition: "0", snapshotAgeMilliseconds: -1)),
            (
                .presenceSyncPartition,
                ServiceAPI.PresenceSync(gatewayID: "gw-test", rooms: [], partition: "0", snapshotAgeMilliseconds: 3_600_001)
            ),
            (.presenceSync, ServiceAPI.PresenceSync(gatewayID: "gw-test", rooms: [], snapshotAgeMilliseconds: -5)),
            // A partition sent as a whole statement: a chat-service that predates partitions would
            // have taken it for one, so the whole-statement endpoint refuses it too.
            (
                .presenceSync,
                ServiceAPI.PresenceSync(gatewayID: "gw-test", roomID: a.id.rawValue, users: [zeroHeld.rawValue], partition: "0")
            ),
        ] as [(ChatNames.Endpoint, ServiceAPI.PresenceSync)] {
            do {
                let _: ServiceAPI.PresenceSyncResult = try await fixture.chat.call(endpoint, bad)
                Issue.record("accepted \(bad)")
            } catch {
                #expect(error.code == .invalidRequest)
            }
        }
        #expect(try await members(a) == ["zero-held", "f"])
    }

    @Test func presenceSyncLeavesRecentJoinsAlone() async throws {
        let fixture = try await ChatFixture()  // default grace: 10 s
        try await fixture.startReplica()
        let room = try await fixture.createRoom("sync-grace")
        _ = try await fixture.join(room.id, UserID.random(), "just-joined")
        // The gateway's statement may predate this join's reply: a young record is not removed.
        let result: ServiceAPI.PresenceSyncResult = try await fixture.chat.call(
            .presenceSync,
            ServiceAPI.PresenceSync(gatewayID: "gw-test", roomID: room.id.rawValue, users: [])
        )
        #expect(result.removed == 0)
        let list: ServiceAPI.MemberList = try await fixture.chat.call(.members, ServiceAPI.RoomRef(roomID: room.id.rawValue))
        #expect(list.members.map(\.username) == ["just-joined"])
    }

    /// A member record that comes back after its gateway was declared dead (nats-server 2.12+ can
    /// resurrect purged KV entries after a second crash) is removed by the leader's reconcile.
    @Test func reconcileRemovesMembersOfDeadGatewaysThatCameBack() async throws {
        let fixture = try await ChatFixture {
            $0.presenceReconcileInterval = .milliseconds(300)
            $0.presenceTimeout = .seconds(3)
        }
        try await fixture.startReplica()
        let room = try await fixture.createRoom("reconcile")
        let gateways = try await fixture.client.keyValue(KeyValueConfiguration(bucket: ChatNames.gatewaysBucket))
        let members = try await fixture.client.keyValue(KeyValueConfiguration(bucket: ChatNames.membersBucket))
        // Records are judged by when nats-server stored them (its clock), so the order of the writes
        // below is what matters, not the `joined_at_ms` in them.
        @Sendable func storedAt(_ bucket: KeyValue, _ key: String) async throws -> Int64 {
            try #require(try await bucket.get(key, leader: true)).createdNanoseconds / 1_000_000
        }
        @Sendable func plant(_ name: String, gateway: String) async throws -> UserID {
            let user = UserID.random()
            let now = ChatTime.now()
            let member = Member(
                userID: user,
                username: name,
                gatewayID: GatewayID(gateway)!,
                joinedAt: now.text,
                joinedAtMilliseconds: now.milliseconds
            )
            _ = try await members.put(ChatNames.memberKey(room.id, user), ChatJSON.encode(member))
            return user
        }
        _ = try await plant("resurrected", gateway: "gw-gone")  // stored before it was declared dead
        let tombstone = Array(#"{"connections":0,"expired":true,"gateway_id":"gw-gone","last_seen_ms":0}"#.utf8)
        _ = try await gateways.put("gw-gone", tombstone)
        let declaredDead = try await storedAt(gateways, "gw-gone")
        try await eventually("the server's clock past the tombstone") {
            _ = try await members.put("clock.test", [])
            return try await storedAt(members, "clock.test") > declaredDead
        }
        _ = try await plant("rejoined", gateway: "gw-gone")  // stored after: a re-join
        _ = try await plant("orphan", gateway: "gw-unknown")  // no gateway record: gone once the timeout passed
        _ = try await fixture.join(room.id, UserID.random(), "live")  // gw-test beats
        @Sendable func names() async throws -> [String] {
            let list: ServiceAPI.MemberList = try await fixture.chat.call(.members, ServiceAPI.RoomRef(roomID: room.id.rawValue))
            return list.members.map(\.username)
        }
        try await eventually("stale members reconciled", timeout: .seconds(20)) { try await names() == ["live", "rejoined"] }
        // A member of a gateway without a record yet (it just joined) stays until the timeout.
        _ = try await plant("newcomer", gateway: "gw-unknown-2")
        #expect(try await names() == ["live", "newcomer", "rejoined"])
        try await eventually("the newcomer of a gateway that never beats removed", timeout: .seconds(20)) {
            try await names() == ["live", "rejoined"]
        }
    }

    @Test func serviceInfoListsEveryEndpoint() async throws {
        let fixture = try await ChatFixture()
        try await fixture.startReplica()
        let reply = try await fixture.client.request("$SRV.INFO.chat")
        let info = try #require(try JSONSerialization.jsonObject(with: Data(reply.payload)) as? [String: Any])
        #expect(info["name"] as? String == "chat")
        #expect(info["version"] as? String == ChatVersion.current)
        let endpoints = try #require(info["endpoints"] as? [[String: Any]])
        #expect(Set(endpoints.compactMap { $0["subject"] as? String }) == Set(ChatNames.Endpoint.allCases.map(\.subject)))
        #expect(endpoints.allSatisfy { $0["queue_group"] as? String == ChatNames.queueGroup })
    }
}
