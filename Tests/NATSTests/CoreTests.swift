import NATS
import NATSTesting
import Synchronization
import Testing

@Suite("Core NATS against a real nats-server")
struct CoreTests {
    @Test func publishSubscribeDeliversEveryMessageInOrderWithHeaders() async throws {
        let server = try NATSServerProcess()
        let connection = try await server.connect()
        let subscription = try connection.subscribe("orders.>")
        try await connection.flush()
        for index in 0..<1000 {
            try connection.publish("orders.\(index % 3)", payload: Array("m\(index)".utf8), headers: ["Index": "\(index)"])
        }
        let messages = await collect(subscription, count: 1000)
        #expect(messages.count == 1000)
        for (index, message) in messages.enumerated() {
            #expect(String(decoding: message.payload, as: UTF8.self) == "m\(index)")
            #expect(message.headers["Index"] == "\(index)")
            #expect(message.subject == "orders.\(index % 3)")
        }
        #expect(subscription.dropped == 0)
    }

    @Test func queueGroupMembersShareTheMessages() async throws {
        let server = try NATSServerProcess()
        let connection = try await server.connect()
        let counts = Mutex<[Int]>([0, 0])
        let first = try connection.subscribe("work", queue: "workers") { _ in counts.withLock { $0[0] += 1 } }
        let second = try connection.subscribe("work", queue: "workers") { _ in counts.withLock { $0[1] += 1 } }
        try await connection.flush()
        for _ in 0..<400 { try connection.publish("work", payload: [1]) }
        try await connection.flush()
        try await eventually("all 400 delivered once") { counts.withLock { $0[0] + $0[1] } == 400 }
        let final = counts.withLock { $0 }
        #expect(final[0] > 0 && final[1] > 0, "both queue members got work: \(final)")
        #expect(final[0] + final[1] == 400)
        first.unsubscribe()
        second.unsubscribe()
    }

    @Test func requestReplyTimeoutAndNoResponders() async throws {
        let server = try NATSServerProcess()
        let connection = try await server.connect()
        let responder = try connection.subscribe("echo") { message in
            guard let reply = message.reply else { return }
            try? connection.publish(reply, payload: message.payload.reversed(), headers: ["Echoed": "yes"])
        }
        try await connection.flush()
        let reply = try await connection.request("echo", payload: Array("abc".utf8), timeout: .seconds(2))
        #expect(String(decoding: reply.payload, as: UTF8.self) == "cba")
        #expect(reply.headers["Echoed"] == "yes")

        // Many requests in flight at once all get their own reply.
        let replies = try await withThrowingTaskGroup(of: Bool.self) { group in
            for index in 0..<200 {
                group.addTask {
                    let reply = try await connection.request("echo", payload: Array("\(index)".utf8))
                    return String(decoding: reply.payload, as: UTF8.self) == String("\(index)".reversed())
                }
            }
            return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(replies == 200)

        let start = ContinuousClock.now
        await #expect(throws: NATSError.self) { _ = try await connection.request("nobody.here", timeout: .seconds(5)) }
        do {
            _ = try await connection.request("nobody.here", timeout: .seconds(5))
        } catch {
            #expect(error.kind == .noResponders)
        }
        #expect(ContinuousClock.now - start < .seconds(2), "no responders fails at once")

        let silent = try connection.subscribe("silent") { _ in }
        try await connection.flush()
        do {
            _ = try await connection.request("silent", timeout: .milliseconds(200))
            Issue.record("expected a timeout")
        } catch {
            #expect(error.kind == .timeout)
        }
        silent.unsubscribe()
        responder.unsubscribe()
    }

    @Test func bufferOverflowDropsNewestAndCounts() async throws {
        let server = try NATSServerProcess()
        let connection = try await server.connect()
        let subscription = try connection.subscribe("flood", bufferLimit: 10)
        try await connection.flush()
        for index in 0..<100 { try connection.publish("flood", payload: [UInt8(index)]) }
        try await connection.flush()
        try await eventually("overflow counted") { subscription.dropped == 90 }
        var iterator = subscription.makeAsyncIterator()
        let batch = await iterator.nextBatch() ?? []
        #expect(batch.map { $0.payload[0] } == Array(0..<10), "the oldest 10 are kept")
    }

    @Test func reconnectsAcrossServerRestartWithoutLosingMessages() async throws {
        let server = try NATSServerProcess()
        let connection = try await server.connect()
        let events = connection.events()
        let subscription = try connection.subscribe("survive")
        try await connection.flush()
        try connection.publish("survive", payload: [0])
        try await connection.flush()
        server.stop()
        try await eventually("disconnect noticed") { connection.status != .connected }
        // Published while the server is down: held in the reconnect buffer.
        for index in 1...50 { try connection.publish("survive", payload: [UInt8(index)]) }
        try server.start()
        try await eventually("reconnected", timeout: .seconds(15)) { connection.status == .connected }
        let seen = await collect(subscription, count: 51).map { $0.payload[0] }
        #expect(seen == Array(0...50))
        var sawReconnect = false
        for await event in events where event == .reconnected {
            sawReconnect = true
            break
        }
        #expect(sawReconnect)
        #expect(connection.reconnects >= 1)
    }
}
