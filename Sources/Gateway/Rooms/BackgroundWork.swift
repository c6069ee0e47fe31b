import Synchronization

/// Work that outlives the call that starts it (room loops, session drains, presence statements),
/// owned by one `run()` so that none of it outlives shutdown: when `run()` is cancelled it cancels
/// every task still running, waits for them, and refuses new ones. Tasks start at once (no hop through
/// a queue: a session drain is on the path of every inbound message).
final class BackgroundWork: Sendable {
    typealias Job = @Sendable () async -> Void

    private struct State {
        var tasks: [UInt64: Task<Void, Never>] = [:]
        var nextID: UInt64 = 0
        var stopped = false
    }

    private let state = Mutex(State())

    init() {}

    /// Starts `job` in a task owned by `run()`. False once `run()` has ended: the job did not start.
    @discardableResult
    func spawn(_ job: @escaping Job) -> Bool {
        state.withLock { state in
            guard !state.stopped else { return false }
            let id = state.nextID
            state.nextID += 1
            // Made under the lock, so its removal below cannot come before its insertion.
            state.tasks[id] = Task {
                await job()
                self.state.withLock { _ = $0.tasks.removeValue(forKey: id) }
            }
            return true
        }
    }

    var running: Int { state.withLock { $0.tasks.count } }

    /// Returns when cancelled, once every task it owns has ended.
    func run() async {
        // Waits for cancellation: iterating a stream that never yields ends when the task is cancelled.
        let (cancelled, continuation) = AsyncStream<Never>.makeStream()
        for await _ in cancelled {}
        continuation.finish()
        let tasks = state.withLock { state in
            state.stopped = true
            return Array(state.tasks.values)
        }
        for task in tasks { task.cancel() }
        for task in tasks { await task.value }
    }
}
