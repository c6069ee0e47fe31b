import Dispatch
import Foundation
import NATS
import Synchronization
import Testing

@Suite("BlockingExecutor adds threads while every thread is blocked, up to its limit")
struct BlockingExecutorTests {
    /// Runs `count` jobs that block until released; returns once `expectedRunning` run at the same time
    /// (or the deadline passed), with how many did.
    final class Running: Sendable {
        let count = Mutex(0)
    }

    func blockedJobs(
        executor: BlockingExecutor,
        count: Int,
        expectedRunning: Int
    ) async -> (running: Int, release: @Sendable () -> Void, done: Task<Void, Never>) {
        let running = Running()
        let gate = DispatchSemaphore(value: 0)
        let done = Task {
            await withTaskGroup(of: Void.self) { group in
                for _ in 0..<count {
                    group.addTask {
                        _ = try? await executor.run { () throws(NATSError) in
                            running.count.withLock { $0 += 1 }
                            gate.wait()
                        }
                    }
                }
            }
        }
        let deadline = ContinuousClock.now + .seconds(10)
        while running.count.withLock({ $0 }) < expectedRunning, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(5))  // polling a condition with a deadline
        }
        let release: @Sendable () -> Void = { for _ in 0..<count { gate.signal() } }
        return (running.count.withLock { $0 }, release, done)
    }

    @Test func blockedThreadsDoNotHoldUpNewJobs() async {
        let executor = BlockingExecutor(maxThreads: 32, name: "test-grow")
        let (running, release, done) = await blockedJobs(executor: executor, count: 20, expectedRunning: 20)
        #expect(running == 20, "every blocked job got its own thread")
        release()
        await done.value
        // One more job after all returned runs on an existing thread.
        #expect(await (try? executor.run { () throws(NATSError) in 7 }) == 7)
        #expect(executor.threadCount <= 32)
        #expect(executor.threadCount >= 20)
    }

    @Test func threadsStopGrowingAtTheLimit() async {
        let executor = BlockingExecutor(maxThreads: 3, name: "test-limit")
        let (running, release, done) = await blockedJobs(executor: executor, count: 6, expectedRunning: 3)
        #expect(running == 3)
        #expect(executor.threadCount == 3)
        release()
        await done.value  // the other three ran once threads came free
    }
}
