import NATSTesting
import Synchronization
import Testing

@testable import NATS

/// The deadline heap and its one driver task, without a server.
@Suite("DeadlineRegistry")
struct DeadlineRegistryTests {
    /// Records which actions ran, and whether any ran before its deadline.
    final class Log: Sendable {
        private let state = Mutex<(fired: [Int], early: Int)>(([], 0))
        var fired: [Int] { state.withLock { $0.fired } }
        var early: Int { state.withLock { $0.early } }

        func action(_ id: Int, deadline: ContinuousClock.Instant) -> DeadlineRegistry.Action {
            {
                self.state.withLock { state in
                    state.fired.append(id)
                    if ContinuousClock.now < deadline { state.early += 1 }
                }
            }
        }
    }

    @Test func deadlinesFireInOrderAndNotBefore() async throws {
        let registry = DeadlineRegistry()
        defer { registry.close() }
        let log = Log()
        let start = ContinuousClock.now
        for id in [3, 1, 4, 0, 2] {
            let deadline = start + .milliseconds(40 * (id + 1))
            registry.add(deadline, log.action(id, deadline: deadline))
        }
        try await eventually("five deadlines fired") { log.fired.count == 5 }
        #expect(log.fired == [0, 1, 2, 3, 4])
        #expect(log.early == 0)
        #expect(registry.count == 0)
    }

    @Test func cancelBeforeTheDeadlineKeepsTheActionFromRunning() async throws {
        let registry = DeadlineRegistry()
        defer { registry.close() }
        let log = Log()
        let start = ContinuousClock.now
        let cancelled = registry.add(start + .milliseconds(100), log.action(1, deadline: start + .milliseconds(100)))
        registry.add(start + .milliseconds(200), log.action(2, deadline: start + .milliseconds(200)))
        #expect(registry.cancel(cancelled))
        #expect(registry.count == 1)
        // The later deadline firing means the cancelled one's moment has passed too.
        try await eventually("the later deadline fired") { log.fired == [2] }
        #expect(log.fired == [2])
        #expect(registry.count == 0)
    }

    @Test func cancelAfterTheDeadlineFiredIsANoOp() async throws {
        let registry = DeadlineRegistry()
        defer { registry.close() }
        let log = Log()
        let key = registry.add(.now, log.action(1, deadline: .now))
        try await eventually("fired") { log.fired == [1] }
        #expect(!registry.cancel(key))
        #expect(!registry.cancel(key))
        #expect(log.fired == [1])
        #expect(registry.count == 0)
    }

    /// Thousands of entries, most cancelled (as replies cancel request timeouts): the rest fire once
    /// each, none early, and the heap of cancelled keys does not keep entries alive.
    @Test func manyEntriesFireOnceEachAndCancelledOnesNever() async throws {
        let registry = DeadlineRegistry()
        defer { registry.close() }
        let log = Log()
        let start = ContinuousClock.now
        var kept: [Int] = []
        for id in 0..<10_000 {
            let deadline = start + .milliseconds(50 + (id * 7919) % 300)
            let key = registry.add(deadline, log.action(id, deadline: deadline))
            if id % 4 == 0 { kept.append(id) } else { #expect(registry.cancel(key)) }
        }
        let keptCount = kept.count
        #expect(registry.count == keptCount)
        try await eventually("every kept deadline fired") { log.fired.count >= keptCount }
        #expect(log.fired.sorted() == kept)
        #expect(log.early == 0)
        #expect(registry.count == 0)
    }

    /// A deadline earlier than the one the driver sleeps for wakes it.
    @Test func anEarlierDeadlineWakesTheSleepingDriver() async throws {
        let registry = DeadlineRegistry()
        defer { registry.close() }
        let log = Log()
        registry.add(.now + .seconds(60), log.action(1, deadline: .now + .seconds(60)))
        let start = ContinuousClock.now
        registry.add(start + .milliseconds(50), log.action(2, deadline: start + .milliseconds(50)))
        try await eventually("the earlier deadline fired", timeout: .seconds(5)) { log.fired == [2] }
        #expect(registry.count == 1)
    }

    @Test func closeRunsPendingActionsAtOnceAndLaterOnesImmediately() async throws {
        let registry = DeadlineRegistry()
        let log = Log()
        registry.add(.now + .seconds(60), log.action(1, deadline: .now))
        registry.close()
        #expect(log.fired == [1])
        registry.add(.now + .seconds(60), log.action(2, deadline: .now))
        #expect(log.fired == [1, 2])
        #expect(registry.count == 0)
    }

    /// `run()` takes over from the registry's own task, and after it ends that task comes back.
    @Test func runDrivesTheDeadlinesAndTheOwnTaskResumesAfterIt() async throws {
        let registry = DeadlineRegistry()
        defer { registry.close() }
        let log = Log()
        registry.add(.now + .milliseconds(10), log.action(0, deadline: .now))  // starts the registry's own task
        try await eventually("fired by the registry's own task") { log.fired == [0] }
        let service = Task { await registry.run() }
        registry.add(.now + .milliseconds(50), log.action(1, deadline: .now + .milliseconds(50)))
        try await eventually("fired while run() drives") { log.fired == [0, 1] }
        service.cancel()
        await service.value
        registry.add(.now + .milliseconds(50), log.action(2, deadline: .now + .milliseconds(50)))
        try await eventually("fired after run() ended") { log.fired == [0, 1, 2] }
    }
}
