import Synchronization

/// The one timer of a connection: actions to run at deadlines (a request's timeout, the end of a wait
/// for messages) in a min-heap behind one lock, fired by one driver task. A deadline costs a heap
/// insert (O(log n)) and a cancel (O(1); cancelled keys are dropped when they reach the top or when
/// they outnumber the live ones), never a task of its own.
///
/// The driver is `run()` — the connection's `Service.run()` when a ServiceGroup runs it — or else a
/// task the registry starts itself on the first deadline and keeps (parked while nothing is due), so
/// tests, benchmarks and code that never run the connection as a service still get their deadlines.
/// `close()` ends either and runs every pending action at once: after it no one would fire them.
final class DeadlineRegistry: Sendable {
    typealias Key = UInt64
    typealias Action = @Sendable () -> Void

    /// A deadline this close to (or after) the one the driver sleeps for does not wake it: it fires
    /// with that one, at most this late, so deadlines close together cost one wake-up.
    static let coalescing: Duration = .milliseconds(1)

    /// For buffers that belong to no connection.
    static let shared = DeadlineRegistry()

    private enum Driver {
        case none
        case lazy(Task<Void, Never>, generation: UInt64)
        case service(generation: UInt64)
        case closed
    }

    private struct State {
        var heap = DeadlineHeap()
        var actions: [Key: Action] = [:]
        var nextKey: Key = 1
        var driver = Driver.none
        var generation: UInt64 = 0
        /// The deadline the waiting driver sleeps for; nil while it is parked (nothing pending).
        var target: ContinuousClock.Instant?
        /// The waiting driver's wake-up, and the driver generation it belongs to.
        var signal: (generation: UInt64, continuation: CheckedContinuation<Void, Never>)?

        func isCurrent(_ generation: UInt64) -> Bool {
            switch driver {
            case .lazy(_, let current), .service(let current): return current == generation
            case .none, .closed: return false
            }
        }

        /// The earliest deadline still pending; drops cancelled entries off the top.
        mutating func liveTop() -> DeadlineHeap.Entry? {
            while let top = heap.top {
                if actions[top.key] != nil { return top }
                heap.popTop()
            }
            return nil
        }

        mutating func takeSignal() -> CheckedContinuation<Void, Never>? {
            defer { signal = nil }
            return signal?.continuation
        }
    }

    private let state = Mutex(State())

    /// Pending deadlines (neither fired nor cancelled).
    var count: Int { state.withLock { $0.actions.count } }

    /// Runs `action` once `deadline` has passed, unless `cancel` comes first. On a closed registry it
    /// runs at once.
    @discardableResult
    func add(_ deadline: ContinuousClock.Instant, _ action: @escaping Action) -> Key {
        let (key, signal): (Key?, CheckedContinuation<Void, Never>?) = state.withLock { state in
            if case .closed = state.driver { return (nil, nil) }
            let key = state.nextKey
            state.nextKey += 1
            state.heap.insert(.init(deadline: deadline, key: key))
            state.actions[key] = action
            if case .none = state.driver { startLazyDriver(&state) }
            guard state.signal != nil else { return (key, nil) }  // the driver looks at the heap before it waits
            if let target = state.target, target <= deadline + Self.coalescing { return (key, nil) }
            state.target = deadline
            return (key, state.takeSignal())
        }
        guard let key else {
            action()
            return 0
        }
        signal?.resume()
        return key
    }

    /// True when the action was still pending and now never runs; false when it ran (or is running).
    @discardableResult
    func cancel(_ key: Key) -> Bool {
        state.withLock { state in
            guard state.actions.removeValue(forKey: key) != nil else { return false }
            if state.heap.count > 64, state.heap.count > 2 * state.actions.count {
                let actions = state.actions
                state.heap.compact { actions[$0] != nil }
            }
            return true
        }
    }

    /// Drives the deadlines until the calling task is cancelled (the registry's own task steps aside
    /// meanwhile and comes back on the next deadline after this returns).
    func run() async {
        let started: (UInt64, Task<Void, Never>?, CheckedContinuation<Void, Never>?)? = state.withLock { state in
            if case .closed = state.driver { return nil }
            var lazy: Task<Void, Never>?
            if case .lazy(let task, _) = state.driver { lazy = task }
            state.generation += 1
            state.driver = .service(generation: state.generation)
            return (state.generation, lazy, state.takeSignal())
        }
        guard let (generation, lazy, signal) = started else { return }
        lazy?.cancel()
        signal?.resume()
        await drive(generation)
        state.withLock { state in
            guard state.isCurrent(generation) else { return }
            state.driver = .none
            if !state.actions.isEmpty { startLazyDriver(&state) }
        }
    }

    /// Ends the driver and runs every pending action now; later deadlines run as they are added.
    func close() {
        let (actions, lazy, signal): ([Action], Task<Void, Never>?, CheckedContinuation<Void, Never>?) = state.withLock { state in
            var lazy: Task<Void, Never>?
            if case .lazy(let task, _) = state.driver { lazy = task }
            state.driver = .closed
            defer {
                state.actions.removeAll()
                state.heap.removeAll()
            }
            return (Array(state.actions.values), lazy, state.takeSignal())
        }
        lazy?.cancel()
        signal?.resume()
        for action in actions { action() }
    }

    private func startLazyDriver(_ state: inout State) {
        state.generation += 1
        let generation = state.generation
        state.driver = .lazy(Task { await self.drive(generation) }, generation: generation)
    }

    /// Fires what is due, then sleeps until the next deadline (or until an earlier one is added), until
    /// cancelled or replaced by another driver. A sleep costs two child tasks, paid per wake-up (a
    /// deadline due, an earlier one added), not per deadline: replies cancel most deadlines unfired.
    private func drive(_ generation: UInt64) async {
        while !Task.isCancelled {
            let round: (due: [Action], next: ContinuousClock.Instant?)? = state.withLock { state in
                guard state.isCurrent(generation) else { return nil }
                let now = ContinuousClock.now
                var due: [Action] = []
                while let top = state.liveTop(), top.deadline <= now {
                    state.heap.popTop()
                    if let action = state.actions.removeValue(forKey: top.key) { due.append(action) }
                }
                state.target = state.liveTop()?.deadline
                return (due, state.target)
            }
            guard let round else { return }
            for action in round.due { action() }
            if Task.isCancelled { return }
            if let next = round.next {
                await withTaskGroup(of: Void.self) { group in
                    group.addTask { try? await Task.sleep(until: next, clock: .continuous) }
                    group.addTask { await self.waitForSignal(generation, target: next) }
                    await group.next()
                    group.cancelAll()
                }
            } else {
                await waitForSignal(generation, target: nil)
            }
        }
    }

    /// Returns when `add` brings a deadline earlier than `target` (any, when nil), when this driver
    /// is replaced or closed, or when the task is cancelled.
    private func waitForSignal(_ generation: UInt64, target: ContinuousClock.Instant?) async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let ready = state.withLock { state in
                    guard state.isCurrent(generation), !Task.isCancelled else { return true }
                    // Added between deciding to sleep and getting here.
                    if let top = state.liveTop(), target.map({ top.deadline + Self.coalescing < $0 }) ?? true { return true }
                    state.target = target
                    state.signal = (generation, continuation)
                    return false
                }
                if ready { continuation.resume() }
            }
        } onCancel: {
            let signal = state.withLock { state in
                state.signal?.generation == generation ? state.takeSignal() : nil
            }
            signal?.resume()
        }
    }
}
