import Foundation
import Synchronization

/// A pool of threads for libnats calls that block (connect, flush, bucket creation), so
/// they never occupy Swift's cooperative thread pool.
///
/// It starts with no thread and adds one whenever a job arrives while every thread is busy, up to
/// `maxThreads` (threads then stay). A fixed 16 was starved when many blocking calls waited out their
/// timeouts at once — each KV watcher held a thread per 250 ms poll (KV reads and followers now use
/// pull consumers on the async path instead), and a JetStream API call against
/// a restarting server holds one for its whole timeout — and a request queued behind them went
/// unanswered for 15 s (seen with ~70 services in one test process).
public final class BlockingExecutor: Sendable {
    public static let shared = BlockingExecutor(maxThreads: 64, name: "nats-blocking")

    private struct State {
        var jobs: [@Sendable () -> Void] = []
        var head = 0
        var threads = 0
        var idle = 0
    }

    private let condition = NSCondition()
    // Guarded by `condition`; Mutex would not let the worker wait on the same lock.
    nonisolated(unsafe) private var state = State()
    private let maxThreads: Int
    private let name: String

    public init(maxThreads: Int, name: String) {
        self.maxThreads = max(1, maxThreads)
        self.name = name
    }

    /// Threads started so far.
    public var threadCount: Int {
        condition.lock()
        defer { condition.unlock() }
        return state.threads
    }

    private func work() {
        while true {
            condition.lock()
            while state.head == state.jobs.count {
                state.idle += 1
                condition.wait()
                state.idle -= 1
            }
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
        // Jobs queued beyond the idle threads get a new thread each, up to the limit.
        let grow = state.jobs.count - state.head > state.idle && state.threads < maxThreads
        if grow { state.threads += 1 }
        let index = state.threads
        condition.signal()
        condition.unlock()
        if grow {
            let thread = Thread { [self] in self.work() }
            thread.name = "\(name)-\(index)"
            thread.start()
        }
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
