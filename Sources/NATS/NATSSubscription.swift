import Synchronization

/// A bounded single-consumer queue between a libnats delivery thread (or any producer) and one task.
///
/// The consumer takes everything queued in one lock acquisition, and a producer only resumes the
/// consumer when it is parked, handing it no element: by the time the consumer runs, more elements
/// have usually arrived, so the cost of waking a task is paid per batch, not per message.
/// Overflow policy: when `limit` elements are queued, new elements are dropped and counted (the same
/// policy as a NATS slow consumer), so a stalled consumer never grows memory without bound and never
/// blocks the producer.
public final class MessageBuffer<Element: Sendable>: Sendable {
    private struct State {
        var items: [Element] = []
        var waiter: CheckedContinuation<Void, Never>?
        var finished = false
        var woken = false
        var dropped = 0
        /// The number of the `takeAll(until:)` waiting now, nil when none does. A deadline that fires
        /// after its wait ended finds nil (or a later wait's number) and does nothing, instead of
        /// waking the next wait.
        var deadlineWait: UInt64?
        var waits: UInt64 = 0
    }

    private let state = Mutex(State())
    private let deadlines: DeadlineRegistry
    public let limit: Int

    /// A buffer of no connection: its deadlines use a registry shared by such buffers.
    public convenience init(limit: Int) { self.init(limit: limit, deadlines: .shared) }

    init(limit: Int, deadlines: DeadlineRegistry) {
        self.limit = max(1, limit)
        self.deadlines = deadlines
    }

    /// Returns false when the element was dropped (buffer full or finished).
    @discardableResult
    public func append(_ element: Element) -> Bool {
        let (accepted, waiter): (Bool, CheckedContinuation<Void, Never>?) = state.withLock { state in
            guard !state.finished else { return (false, nil) }
            if state.items.count >= limit {
                state.dropped += 1
                return (false, nil)
            }
            state.items.append(element)
            defer { state.waiter = nil }
            return (true, state.waiter)
        }
        waiter?.resume()
        return accepted
    }

    /// Ends the sequence: queued elements are still returned, then `takeAll` returns nil.
    public func finish() {
        let waiter = state.withLock { state in
            state.finished = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    public var dropped: Int { state.withLock { $0.dropped } }
    public var count: Int { state.withLock { $0.items.count } }

    private enum Take {
        case batch([Element])
        case finished
        case woken
        case wait
    }

    private func take(_ state: inout State) -> Take {
        if !state.items.isEmpty {
            let batch = state.items
            state.items = []
            state.items.reserveCapacity(min(batch.count, 1024))
            return .batch(batch)
        }
        if state.finished { return .finished }
        if state.woken {
            state.woken = false
            return .woken
        }
        return .wait
    }

    /// Everything queued, waiting if nothing is; nil once finished and empty, or when the task is
    /// cancelled; [] when `wake()` was called with nothing queued.
    public func takeAll() async -> [Element]? {
        while true {
            switch state.withLock({ take(&$0) }) {
            case .batch(let batch): return batch
            case .finished: return nil
            case .woken: return []
            case .wait: break
            }
            if Task.isCancelled { return nil }
            await withTaskCancellationHandler {
                await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                    let ready = state.withLock { state in
                        if !state.items.isEmpty || state.finished || state.woken || Task.isCancelled { return true }
                        state.waiter = continuation
                        return false
                    }
                    if ready { continuation.resume() }
                }
            } onCancel: {
                let waiter = state.withLock { state in
                    defer { state.waiter = nil }
                    return state.waiter
                }
                waiter?.resume()
            }
        }
    }

    /// Like `takeAll`, but returns [] when nothing arrived before `deadline`. The deadline is an entry
    /// in the registry's heap, not a timer task of its own.
    public func takeAll(until deadline: ContinuousClock.Instant) async -> [Element]? {
        switch state.withLock({ take(&$0) }) {
        case .batch(let batch): return batch
        case .finished: return nil
        case .woken: return []
        case .wait: break
        }
        guard deadline > .now else { return [] }
        let wait = state.withLock { state in
            state.waits += 1
            state.deadlineWait = state.waits
            return state.waits
        }
        let key = deadlines.add(deadline) { [weak self] in self?.expire(wait) }
        defer {
            deadlines.cancel(key)
            state.withLock { $0.deadlineWait = nil }
        }
        return await takeAll()
    }

    /// Ends the wait of `takeAll(until:)` whose deadline passed.
    private func expire(_ wait: UInt64) {
        let waiter: CheckedContinuation<Void, Never>? = state.withLock { state in
            guard state.deadlineWait == wait else { return nil }
            state.deadlineWait = nil
            state.woken = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    /// Makes a waiting (or the next) `takeAll` return [] if nothing is queued.
    public func wake() {
        let waiter = state.withLock { state in
            state.woken = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }
}

/// Messages of one subscription as an `AsyncSequence`. Iterate it from one task only.
///
/// Bounded by `bufferLimit` (see `MessageBuffer` for the drop-newest overflow policy); `dropped`
/// counts what was lost to overflow here or in libnats.
public final class NATSSubscription: AsyncSequence, Sendable {
    public typealias Element = NATSMessage

    let handle: SubscriptionHandle
    let buffer: MessageBuffer<NATSMessage>
    public let subject: String

    init(handle: SubscriptionHandle, buffer: MessageBuffer<NATSMessage>, subject: String) {
        self.handle = handle
        self.buffer = buffer
        self.subject = subject
    }

    /// Stops delivery at once; queued messages are still returned by the iterator, then it ends.
    public func unsubscribe() { handle.unsubscribe() }

    /// Lets in-flight messages arrive, then ends the sequence.
    public func drain() { handle.drain() }

    public var dropped: Int { buffer.dropped + Int(handle.dropped) }

    public struct AsyncIterator: AsyncIteratorProtocol {
        let subscription: NATSSubscription
        var batch: [NATSMessage] = []
        var index = 0

        /// Returns buffered messages without leaving the caller's actor; only an empty buffer awaits.
        /// (A plain nonisolated `next()` would hop executors twice per message when iterated from an
        /// actor, which costs far more than the message itself.)
        public mutating func next(isolation actor: isolated (any Actor)? = #isolation) async -> NATSMessage? {
            if index < batch.count {
                defer { index += 1 }
                return batch[index]
            }
            while true {
                guard let next = await subscription.buffer.takeAll() else { return nil }
                guard !next.isEmpty else { continue }
                batch = next
                index = 1
                return batch[0]
            }
        }

        public mutating func next() async -> NATSMessage? { await next(isolation: nil) }

        /// The rest of the current batch plus anything queued (for batch processing).
        public mutating func nextBatch(isolation actor: isolated (any Actor)? = #isolation) async -> [NATSMessage]? {
            if index < batch.count {
                defer {
                    batch = []
                    index = 0
                }
                return Array(batch[index...])
            }
            return await subscription.buffer.takeAll()
        }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(subscription: self) }
}

/// The fast path: a handler called directly on the libnats delivery thread for every message. It must
/// not block; use it for hot subscriptions where an async hop per message would cost more than the work.
public final class NATSCallbackSubscription: Sendable {
    let handle: SubscriptionHandle
    public let subject: String

    init(handle: SubscriptionHandle, subject: String) {
        self.handle = handle
        self.subject = subject
    }

    public func unsubscribe() { handle.unsubscribe() }
    public func drain() { handle.drain() }
    public var dropped: Int { Int(handle.dropped) }
}
