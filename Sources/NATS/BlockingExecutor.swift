import Foundation
import Synchronization

/// A small fixed pool of threads for libnats calls that block (connect, flush, KV operations, watcher
/// polls), so they never occupy Swift's cooperative thread pool.
public final class BlockingExecutor: Sendable {
    // KV calls and watcher polls block a thread each for a round trip; 16 keeps a busy process from queueing them.
    public static let shared = BlockingExecutor(threads: 16, name: "nats-blocking")

    private struct State {
        var jobs: [@Sendable () -> Void] = []
        var head = 0
    }

    private let condition = NSCondition()
    // Guarded by `condition`; Mutex would not let the worker wait on the same lock.
    nonisolated(unsafe) private var state = State()

    public init(threads: Int, name: String) {
        for index in 0..<max(1, threads) {
            let thread = Thread { [self] in self.work() }
            thread.name = "\(name)-\(index)"
            thread.start()
        }
    }

    private func work() {
        while true {
            condition.lock()
            while state.head == state.jobs.count { condition.wait() }
            let job = state.jobs[state.head]
            state.head += 1
            if state.head > 1024, state.head * 2 > state.jobs.count {
                state.jobs.removeFirst(state.head)
                state.head = 0
            }
            condition.unlock()
            job()
        }
    }

    private func submit(_ job: @escaping @Sendable () -> Void) {
        condition.lock()
        state.jobs.append(job)
        condition.signal()
        condition.unlock()
    }

    /// Runs `body` on a pool thread and resumes the caller with its result.
    public func run<T: Sendable>(_ body: @escaping @Sendable () throws(NATSError) -> T) async throws(NATSError) -> T {
        let result: Result<T, NATSError> = await withCheckedContinuation { continuation in
            submit {
                do throws(NATSError) {
                    continuation.resume(returning: .success(try body()))
                } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
        }
        return try result.get()
    }
}
