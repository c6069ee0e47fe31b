import Foundation
import NATS
import NATSTesting
import Synchronization
import Testing

@Suite("JetStream and KV against a real nats-server")
struct JetStreamTests {
    func setUp() async throws -> (NATSServerProcess, NATSConnection, JetStream) {
        let server = try NATSServerProcess()
        let connection = try await server.connect()
        let js = connection.jetStream
        var config = StreamConfiguration(name: "EVENTS", subjects: ["events.>"])
        config.maxMessagesPerSubject = 1000
        try await js.createOrUpdateStream(config)
        return (server, connection, js)
    }

    @Test func publishDedupAndExpectedLastSubjectSequence() async throws {
        let (server, _, js) = try await setUp()
        defer { withExtendedLifetime(server) {} }
        let first = try await js.publish("events.a", payload: [1], options: .init(messageID: "one"))
        #expect(first == PublishAck(stream: "EVENTS", sequence: 1, duplicate: false))
        let again = try await js.publish("events.a", payload: [1], options: .init(messageID: "one"))
        #expect(again.duplicate)
        #expect(again.sequence == 1)

        let second = try await js.publish("events.a", payload: [2], options: .init(expectedLastSubjectSequence: 1))
        #expect(second.sequence == 2)
        do {
            _ = try await js.publish("events.a", payload: [3], options: .init(expectedLastSubjectSequence: 1))
            Issue.record("a stale expected sequence must be rejected")
        } catch {
            #expect(error.kind == .wrongLastSequence)
            #expect(error.jetStreamCode == 10071)
        }
        let fresh = try await js.publish("events.b", payload: [4], options: .init(expectedLastSubjectSequence: 0))
        #expect(fresh.sequence == 3)

        do {
            _ = try await js.publish("nostream.x", payload: [1])
            Issue.record("publishing outside any stream must fail")
        } catch {
            #expect(error.jetStreamCode == JetStreamErrorCode.streamNotFound)
        }

        // Updating the stream config in place works.
        var updated = StreamConfiguration(name: "EVENTS", subjects: ["events.>"])
        updated.maxMessagesPerSubject = 5
        let info = try await js.createOrUpdateStream(updated)
        #expect(info.config.maxMessagesPerSubject == 5)
        #expect(info.state.messages == 3)
    }

    @Test func replicasCreatingOneStreamAtOnceAllSucceed() async throws {
        let server = try NATSServerProcess()
        var connections: [NATSConnection] = []
        for index in 0..<6 { connections.append(try await server.connect(name: "replica-\(index)")) }
        let config = StreamConfiguration(name: "RACE", subjects: ["race.>"])
        // Several rounds. The "subjects overlap" answer to a racing create (seen once when two
        // chat-service processes started together) is rare, and not reproduced here reliably.
        for round in 0..<10 {
            var changed = config
            changed.maxMessagesPerSubject = Int64(10 + round)
            let roundConfig = changed
            let results = await withTaskGroup(of: Result<StreamInfo, NATSError>.self) { group in
                for connection in connections {
                    group.addTask {
                        do throws(NATSError) { return .success(try await connection.jetStream.createOrUpdateStream(roundConfig)) } catch {
                            return .failure(error)
                        }
                    }
                }
                return await group.reduce(into: []) { $0.append($1) }
            }
            for result in results {
                #expect(try result.get().config.name == "RACE")
            }
            if round < 9 { try await connections[0].jetStream.deleteStream("RACE") }
        }
        // A stream of another name over the same subjects is still refused.
        do {
            try await connections[0].jetStream.createOrUpdateStream(StreamConfiguration(name: "OTHER", subjects: ["race.x"]))
            Issue.record("an overlapping stream of another name must be refused")
        } catch {
            #expect(error.jetStreamCode == JetStreamErrorCode.subjectsOverlap)
        }
        withExtendedLifetime(server) {}
    }

    @Test func pipelinedPublishAndReads() async throws {
        let (server, _, js) = try await setUp()
        defer { withExtendedLifetime(server) {} }
        let messages = (0..<500).map { JetStream.OutgoingMessage(subject: "events.\($0 % 2)", payload: Array("\($0)".utf8)) }
        let results = await js.publishPipelined(messages, window: 128)
        let sequences = try results.map { try $0.get().sequence }
        #expect(sequences == Array(1...500))

        let bySequence = try #require(try await js.message(stream: "EVENTS", sequence: 10))
        #expect(String(decoding: bySequence.payload, as: UTF8.self) == "9")
        let last = try #require(try await js.lastMessage(stream: "EVENTS", subject: "events.1"))
        #expect(last.sequence == 500)
        let range = try await js.messages(stream: "EVENTS", subject: "events.0", from: 100, limit: 5)
        #expect(range.map(\.sequence) == [101, 103, 105, 107, 109])
        #expect(try await js.message(stream: "EVENTS", sequence: 10_000) == nil)
    }

    /// Page reads: dense subjects come from one pipelined batch, sparse ones fall back to a consumer;
    /// both must return exactly the subject's messages from the start sequence on, in order.
    @Test func pageReadsOnDenseAndSparseSubjects() async throws {
        let (server, _, js) = try await setUp()
        defer { withExtendedLifetime(server) {} }
        // 300 messages of events.dense in a row, then events.sparse once every 10 among events.noise.
        var outgoing = (0..<300).map { JetStream.OutgoingMessage(subject: "events.dense", payload: Array("\($0)".utf8)) }
        outgoing += (0..<600).map {
            JetStream.OutgoingMessage(subject: $0 % 10 == 0 ? "events.sparse" : "events.noise", payload: Array("\($0)".utf8))
        }
        for result in await js.publishPipelined(outgoing) { _ = try result.get() }

        let dense = try await js.messages(stream: "EVENTS", subject: "events.dense", from: 11, limit: 50)
        #expect(dense.map(\.sequence) == Array(11...60))
        let sparse = try await js.messages(stream: "EVENTS", subject: "events.sparse", from: 305, limit: 20)
        #expect(sparse.map(\.sequence) == stride(from: 311, through: 501, by: 10).map { UInt64($0) })
        #expect(sparse.allSatisfy { $0.subject == "events.sparse" })
        let tail = try await js.messages(stream: "EVENTS", subject: "events.sparse", from: 850, limit: 50)
        #expect(tail.map(\.sequence) == [851, 861, 871, 881, 891], "a page past the end returns what there is")
        #expect(try await js.messages(stream: "EVENTS", subject: "events.dense", from: 301, limit: 10).isEmpty)
        #expect(try await js.messages(stream: "EVENTS", subject: "events.none", from: 1, limit: 10).isEmpty)
    }

    @Test func durablePullConsumerAckNakAndRedelivery() async throws {
        let (server, _, js) = try await setUp()
        defer { withExtendedLifetime(server) {} }
        var consumerConfig = ConsumerConfiguration(durableName: "worker")
        consumerConfig.ackWait = .milliseconds(500)
        consumerConfig.maxAckPending = 100
        try await js.createOrUpdateConsumer(stream: "EVENTS", consumerConfig)
        for index in 0..<10 { _ = try await js.publish("events.x", payload: [UInt8(index)]) }

        let consumer = try js.pullConsumer(stream: "EVENTS", consumer: "worker")
        let batch = try await consumer.fetch(batch: 10, expires: .seconds(2))
        #expect(batch.map(\.streamSequence) == Array(1...10))
        #expect(batch.allSatisfy { $0.deliveries == 1 })
        for message in batch[0..<8] { try message.ack() }
        try batch[8].nak()
        // batch[9] is neither acked nor nacked: it comes back after ack_wait.
        let redelivered = Mutex<[UInt64: Int]>([:])
        try await eventually("nak and ack-wait redelivery", timeout: .seconds(10)) {
            for message in try await consumer.fetch(batch: 5, expires: .milliseconds(300)) {
                redelivered.withLock { $0[message.streamSequence] = message.deliveries }
                try await message.ackSync()
            }
            return redelivered.withLock { $0.count } == 2
        }
        #expect(redelivered.withLock { $0 } == [9: 2, 10: 2])
        let info = try await js.consumerInfo(stream: "EVENTS", consumer: "worker")
        #expect(info.numAckPending == 0)
        #expect(info.numPending == 0)

        // The explicit durable consumer survives its subscriptions.
        _ = consumer
        let rebound = try js.pullConsumer(stream: "EVENTS", consumer: "worker")
        _ = try await js.publish("events.x", payload: [42])
        let next = try await rebound.fetch(batch: 1, expires: .seconds(2))
        #expect(next.first?.streamSequence == 11)
        try next[0].ack()

        // A streaming pull: messages come as they are published, while the request stays open; the
        // server ends it at its expiry with a status.
        try rebound.request(batch: 100, expires: .milliseconds(800))
        var streamed: [UInt64] = []
        for payload in [UInt8(43), 44] {
            _ = try await js.publish("events.x", payload: [payload])
            let received = try await rebound.receive(until: .now.advanced(by: .seconds(5)))
            #expect(!received.requestEnded, "the request is still open after one message")
            streamed += received.messages.map(\.streamSequence)
            for message in received.messages { try await message.ackSync() }  // no redelivery within the request
        }
        #expect(streamed == [12, 13])
        var ended = false
        let deadline = ContinuousClock.now.advanced(by: .seconds(5))
        while !ended, ContinuousClock.now < deadline {
            let received = try await rebound.receive(until: deadline)
            #expect(received.messages.isEmpty)
            ended = received.requestEnded
        }
        #expect(ended, "the server ended the request at its expiry")
        // wake() ends a wait with nothing received.
        rebound.wake()
        let woken = try await rebound.receive()
        #expect(woken.messages.isEmpty && !woken.requestEnded)
    }

    @Test func leaderReadsAgreeWithDirectGets() async throws {
        let (server, connection, _) = try await setUp()
        defer { withExtendedLifetime(server) {} }
        let kv = try await connection.keyValue(KeyValueConfiguration(bucket: "leader", history: 3))
        #expect(try await kv.get("missing", leader: true) == nil)
        #expect(try await kv.confirmedValue("missing") == nil)
        try await kv.put("k", Array("one\r\ntwo: \u{e9}".utf8))
        let direct = try #require(try await kv.get("k"))
        let leader = try #require(try await kv.get("k", leader: true))
        #expect(leader.value == direct.value)
        #expect(leader.revision == direct.revision)
        #expect(leader.operation == .put)
        #expect(leader.createdNanoseconds == direct.createdNanoseconds && leader.createdNanoseconds > 0)
        #expect(try await kv.confirmedValue("k")?.value == direct.value)
        try await kv.delete("k")
        #expect(try await kv.get("k", leader: true)?.operation == .delete, "the delete marker's KV-Operation header is read")
        #expect(try await kv.value("k", leader: true) == nil)
        #expect(try await kv.confirmedValue("k") == nil)
    }

    @Test func keyValueCompareAndSetDeleteKeysAndFollow() async throws {
        let (server, connection, _) = try await setUp()
        defer { withExtendedLifetime(server) {} }
        let kv = try await connection.keyValue(KeyValueConfiguration(bucket: "settings", history: 5))
        #expect(try await kv.get("missing") == nil)
        let r1 = try await kv.create("color", Array("red".utf8))
        do {
            try await kv.create("color", Array("blue".utf8))
            Issue.record("create over an existing value must fail")
        } catch {
            #expect(error.kind == .wrongLastSequence)
        }
        let r2 = try await kv.update("color", Array("green".utf8), revision: r1)
        #expect(r2 > r1)
        do {
            try await kv.update("color", Array("stale".utf8), revision: r1)
            Issue.record("update with a stale revision must fail")
        } catch {
            #expect(error.kind == .wrongLastSequence)
        }
        #expect(try await kv.value("color")?.value == Array("green".utf8))
        try await kv.put("size", Array("L".utf8))
        #expect(Set(try await kv.storedKeys(matching: ">")) == ["color", "size"])

        let seen = Mutex<[KeyValueEntry]>([])
        let follower = Task { try await kv.followPuts { entries in seen.withLock { $0 += entries } } }
        // Every stored put (the bucket keeps 5 revisions per key), in order, then the changes.
        try await eventually("the stored puts") { seen.withLock { $0.map(\.key) } == ["color", "color", "size"] }
        #expect(seen.withLock { $0.prefix(2).map(\.revision) } == [r1, r2])
        #expect(
            seen.withLock { $0[1] }
                == KeyValueEntry(
                    key: "color",
                    value: [],
                    revision: r2,
                    createdNanoseconds: try #require(try await kv.get("color")).createdNanoseconds,
                    operation: .put
                )
        )
        try await kv.put("color", Array("blue".utf8))
        try await kv.delete("color")
        try await kv.put("size", Array("XL".utf8))
        try await eventually("the changes, not the delete") {
            seen.withLock { $0.map(\.key) } == ["color", "color", "size", "color", "size"]
        }
        follower.cancel()

        #expect(try await kv.value("color") == nil)
        try await kv.create("color", Array("again".utf8))  // create succeeds over a delete marker
        try await kv.purge("size")
        #expect(try await kv.value("size") == nil)
        #expect(try await kv.values(matching: "*").map(\.key) == ["color"])

        // No acknowledgement to wait for: the value shows up once the server has stored it.
        try kv.putWithoutAck("shape", Array("round".utf8))
        try await eventually("the unacknowledged put is stored") { try await kv.value("shape")?.value == Array("round".utf8) }
        #expect(throws: NATSError.self) { try kv.putWithoutAck("bad key!", []) }

        // Without a watcher: the same current values (deleted and purged keys left out), in key order.
        try await kv.put("a.one", Array("1".utf8))
        try await kv.put("a.two", Array("2".utf8))
        try await kv.put("a.two", Array("2b".utf8))
        try await kv.put("a.three", Array("3".utf8))
        try await kv.delete("a.three")
        let direct = try await kv.valuesOfStoredKeys(matching: ">")
        #expect(direct.map(\.key) == ["a.one", "a.two", "color", "shape"])
        #expect(direct.first { $0.key == "a.two" }?.value == Array("2b".utf8))
        #expect(direct.map(\.key) == (try await kv.values(matching: ">")).map(\.key).sorted())
        #expect(try await kv.valuesOfStoredKeys(matching: "a.*").map(\.value) == [Array("1".utf8), Array("2b".utf8)])
        #expect(try await kv.valuesOfStoredKeys(matching: "none.*").isEmpty)
    }

    @Test(arguments: [Duration.zero, .milliseconds(30)])
    func followPutsDeliversEveryPutOnceInOrderAcrossAServerRestartAndALostConsumer(linger: Duration) async throws {
        let (server, connection, js) = try await setUp()
        defer { withExtendedLifetime(server) {} }
        let kv = try await connection.keyValue(KeyValueConfiguration(bucket: "follow"))
        let started = Int64(Date().timeIntervalSince1970 * 1e9)
        for key in ["a", "b.x", "c"] { try await kv.put(key, Array(key.utf8)) }
        try await kv.delete("b.x")
        let seen = Mutex<[KeyValueEntry]>([])
        let follower = Task { try await kv.followPuts(linger: linger) { entries in seen.withLock { $0 += entries } } }
        defer { follower.cancel() }
        @Sendable func keys() -> [String] { seen.withLock { $0.map(\.key) } }
        try await eventually("stored puts") { keys() == ["a", "c"] }  // b.x's put was replaced by its delete
        try await kv.put("d", [1])
        try await eventually("a live put") { keys() == ["a", "c", "d"] }
        // The consumer lives in the server's memory: a restart loses it, and the follower carries on
        // after the last revision it delivered, repeating and skipping nothing.
        try server.restart()
        try await eventually("reconnected") { connection.isConnected }
        try await eventually("a put after the restart", timeout: .seconds(20)) {
            _ = try? await kv.put("e", [2])
            return keys().last == "e"
        }
        // A consumer deleted under it (an operator, an inactivity cleanup): the same.
        let names = try await connection.request("$JS.API.CONSUMER.NAMES.KV_follow", payload: [])
        let consumers =
            try #require(try JSONSerialization.jsonObject(with: Data(names.payload)) as? [String: Any])["consumers"] as? [String]
        #expect(consumers?.count == 1)
        for name in consumers ?? [] { try await js.deleteConsumer(stream: "KV_follow", consumer: name) }
        try await eventually("a put after the consumer was deleted", timeout: .seconds(20)) {
            _ = try? await kv.put("f", [3])
            return keys().last == "f"
        }
        // Nothing lost at the end either: the follower reaches the stream's last revision.
        let last = try await js.streamInfo("KV_follow").state.lastSequence
        try await eventually("caught up") { seen.withLock { $0.last?.revision } == last }
        let entries = seen.withLock { $0 }
        let afterD = entries.map(\.key).drop { $0 != "d" }.dropFirst()
        #expect(entries.map(\.key).prefix(3) == ["a", "c", "d"])
        #expect(afterD.drop { $0 == "e" }.allSatisfy { $0 == "f" } && afterD.first == "e", "\(entries.map(\.key))")

        // Started after a revision, a follower delivers only what came later.
        let later = Mutex<[String]>([])
        let second = Task {
            try await kv.followPuts(after: last - 1, linger: linger) { entries in later.withLock { $0 += entries.map(\.key) } }
        }
        defer { second.cancel() }
        try await eventually("only the last put") { later.withLock { $0 } == ["f"] }
        #expect(zip(entries, entries.dropFirst()).allSatisfy { $0.revision < $1.revision }, "in order, once each")
        #expect(entries.allSatisfy { $0.operation == .put && $0.value.isEmpty })
        #expect(entries.allSatisfy { abs($0.createdNanoseconds - started) < 120_000_000_000 }, "store times from the stream")
    }

    /// A lingering follower takes a steady stream of puts in a few pulls; a put after a quiet spell
    /// still arrives at once (no linger in front of it).
    @Test func aLingeringFollowerTakesPutsInFewPulls() async throws {
        let (server, connection, _) = try await setUp()
        defer { withExtendedLifetime(server) {} }
        // A long linger: on a loaded machine 40 acknowledged puts can take seconds.
        for (linger, bucket) in [(Duration.zero, "eager"), (.seconds(2), "linger")] {
            let kv = try await connection.keyValue(KeyValueConfiguration(bucket: bucket))
            let deliveries = Mutex<[[String]]>([])
            let follower = Task {
                try await kv.followPuts(linger: linger) { entries in deliveries.withLock { $0.append(entries.map(\.key)) } }
            }
            defer { follower.cancel() }
            // A put after a quiet spell: delivered alone and soon, with or without lingering.
            try await kv.put("first", [])
            try await eventually("the first put", timeout: .seconds(2)) { deliveries.withLock { $0 } == [["first"]] }
            // 40 puts, each acknowledged before the next: a steady stream.
            for index in 0..<40 { try await kv.put("k\(index)", []) }
            try await eventually("every put") { deliveries.withLock { $0.joined().count } == 41 }
            let batches = deliveries.withLock { $0 }
            #expect(Array(batches.joined()) == ["first"] + (0..<40).map { "k\($0)" }, "in order, once each")
            if linger == .zero {
                // Loose on purpose: a starved test process can see a few puts arrive together.
                #expect(batches.count > 6, "an open pull hands over puts as they come: \(batches.map(\.count))")
            } else {
                #expect(batches.count <= 6, "lingering takes them in a few pulls: \(batches.map(\.count))")
            }
        }
    }

    /// A replay of more than a batch (1024) does not pause between full batches: the linger is only
    /// spent when a pull came back short.
    @Test func aLingeringFollowerReplaysFullBatchesWithoutPausing() async throws {
        let (server, connection, js) = try await setUp()
        defer { withExtendedLifetime(server) {} }
        let kv = try await connection.keyValue(KeyValueConfiguration(bucket: "replay"))
        for index in 0..<2_500 { try kv.putWithoutAck("k\(index)", []) }
        try await eventually("stored") { try await js.streamInfo("KV_replay").state.messages == 2_500 }
        let count = Mutex(0)
        let started = ContinuousClock.now
        let follower = Task { try await kv.followPuts(linger: .seconds(8)) { entries in count.withLock { $0 += entries.count } } }
        defer { follower.cancel() }
        try await eventually("the replay", timeout: .seconds(40)) { count.withLock { $0 } == 2_500 }
        // One linger after the first put (1 + 1024 + 1024 + 451): about 8 s; pausing after each full
        // batch too would take at least 24 s. The linger is long so that a loaded machine's own
        // slowness (seconds for the replay itself) cannot be mistaken for pauses.
        #expect(ContinuousClock.now - started < .seconds(16), "\(ContinuousClock.now - started)")
    }

    @Test func streamSurvivesServerRestart() async throws {
        let (server, connection, js) = try await setUp()
        for index in 0..<20 { _ = try await js.publish("events.keep", payload: [UInt8(index)]) }
        try server.restart()
        try await eventually("reconnected", timeout: .seconds(15)) { connection.status == .connected }
        try await eventually("JetStream back", timeout: .seconds(15)) { (try? await js.streamInfo("EVENTS")) != nil }
        let info = try await js.streamInfo("EVENTS")
        #expect(info.state.messages == 20)
        let ack = try await js.publish("events.keep", payload: [99])
        #expect(ack.sequence == 21)
    }
}
