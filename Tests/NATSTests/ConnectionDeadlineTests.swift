import NATSTesting
import Testing

@testable import NATS

/// Request timeouts and waits with a deadline go through the connection's one `DeadlineRegistry`.
@Suite("Connection deadlines against a real nats-server")
struct ConnectionDeadlineTests {
    @Test func aRequestTimesOutThroughTheRegistry() async throws {
        let server = try NATSServerProcess()
        let connection = try await server.connect()
        defer { connection.close() }
        let silent = try connection.subscribe("silent") { _ in }  // receives, never answers
        try await connection.flush()
        let start = ContinuousClock.now
        do {
            _ = try await connection.request("silent", timeout: .milliseconds(300))
            Issue.record("a request nobody answers returned")
        } catch {
            #expect(error.kind == .timeout)
        }
        #expect(ContinuousClock.now - start >= .milliseconds(300))
        #expect(connection.deadlines.count == 0)
        #expect(connection.mux.pendingCount == 0)
        silent.unsubscribe()
    }

    @Test func takeAllUntilReturnsEmptyAtItsDeadline() async throws {
        let server = try NATSServerProcess()
        let connection = try await server.connect()
        defer { connection.close() }
        let subscription = try connection.subscribe("quiet")
        let deadline = ContinuousClock.now + .milliseconds(300)
        let taken = await subscription.buffer.takeAll(until: deadline)
        #expect(taken?.isEmpty == true)
        #expect(ContinuousClock.now >= deadline)
        #expect(connection.deadlines.count == 0)
        // A message before the deadline ends the wait with it, and the deadline entry goes with it.
        try await connection.flush()
        try connection.publish("quiet", payload: [7])
        let message = await subscription.buffer.takeAll(until: .now + .seconds(10))
        #expect(message?.first?.payload == [7])
        #expect(connection.deadlines.count == 0)
        // The cancelled deadline does not wake a later wait early.
        let later = ContinuousClock.now + .milliseconds(200)
        #expect(await subscription.buffer.takeAll(until: later)?.isEmpty == true)
        #expect(ContinuousClock.now >= later)
    }

    /// Every answered request and every wait that got its messages leaves no deadline behind: their
    /// timeouts are heap entries cancelled on completion, not tasks.
    @Test func completedCallsLeaveNoDeadlineBehind() async throws {
        let server = try NATSServerProcess()
        let connection = try await server.connect()
        defer { connection.close() }
        let echo = try connection.subscribe("echo") { message in
            if let reply = message.reply { try? connection.publish(reply, payload: message.payload) }
        }
        try await connection.flush()
        for index in 0..<200 {
            let reply = try await connection.request("echo", payload: [UInt8(index % 256)], timeout: .seconds(30))
            #expect(reply.payload == [UInt8(index % 256)])
        }
        let many = await connection.requestMany((0..<500).map { ("echo", [UInt8($0 % 256)], nil) }, timeout: .seconds(30))
        #expect(many.allSatisfy { (try? $0.get()) != nil })
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<100 {
                group.addTask { _ = try await connection.request("echo", timeout: .seconds(30)) }
            }
            try await group.waitForAll()
        }
        #expect(connection.deadlines.count == 0)
        #expect(connection.mux.pendingCount == 0)

        let consumer = try connection.subscribe("burst")
        try await connection.flush()
        var received = 0
        for index in 0..<50 {
            try connection.publish("burst", payload: [UInt8(index)])
            received += await consumer.buffer.takeAll(until: .now + .seconds(10))?.count ?? 0
        }
        #expect(received == 50)
        #expect(connection.deadlines.count == 0)
        echo.unsubscribe()
    }

    /// `run()` drives the deadlines while it runs; cancelled, it closes the connection.
    @Test func runDrivesTheTimerAndClosesOnCancellation() async throws {
        let server = try NATSServerProcess()
        let connection = try await server.connect()
        let service = Task { try await connection.run() }
        let silent = try connection.subscribe("silent") { _ in }
        try await connection.flush()
        do {
            _ = try await connection.request("silent", timeout: .milliseconds(200))
            Issue.record("a request nobody answers returned")
        } catch {
            #expect(error.kind == .timeout)
        }
        service.cancel()
        try await service.value
        #expect(connection.status == .closed)
        do {
            _ = try await connection.request("silent", timeout: .seconds(5))
            Issue.record("a request on a closed connection returned")
        } catch {
            #expect(error.kind == .connectionClosed)
        }
        silent.unsubscribe()
    }
}
