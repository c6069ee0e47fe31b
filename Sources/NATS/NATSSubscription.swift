import Synchronization

/// A bounded single-consumer queue between a libnats delivery thread and one Swift task.
///
/// The consumer takes everything queued in one lock acquisition, so the cost of waking a task is paid
/// per batch, not per message. Overflow policy: when `limit` elements are queued, new elements are
/// dropped and counted (the same policy as a NATS slow consumer), so a stalled consumer can never grow
/// memory without bound and never blocks the libnats thread.
enum AppendOutcome<Element: Sendable> { case queued, dropped, wake(CheckedContinuation<[Element]?, Never>) }

public final class MessageBuffer<Element: Sendable>: Sendable {
    private struct State {
        var items: [Element] = []
        var waiter: CheckedContinuation<[Element]?, Never>?
        var finished = false
        var dropped = 0
    }

    private let state = Mutex(State())
    public let limit: Int

    public init(limit: Int) { self.limit = max(1, limit) }

    /// Returns false when the element was dropped (buffer full or finished).
    @discardableResult
    public func append(_ element: Element) -> Bool {
        let outcome: AppendOutcome<Element> = state.withLock { state in
            guard !state.finished else { return .dropped }
            if let waiter = state.waiter {
                state.waiter = nil
                return .wake(waiter)
            }
            if state.items.count >= limit {
                state.dropped += 1
                return .dropped
            }
            state.items.append(element)
            return .queued
        }
        switch outcome {
        case .queued: return true
        case .dropped: return false
        case .wake(let waiter):
            waiter.resume(returning: [element])
            return true
        }
    }

    public func finish() {
        let waiter = state.withLock { state in
            state.finished = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: nil)
    }

    public var dropped: Int { state.withLock { $0.dropped } }
    public var count: Int { state.withLock { $0.items.count } }

    /// Everything queued, waiting if nothing is; nil once finished and empty, or when the task is cancelled.
    public func takeAll() async -> [Element]? {
        if let ready = takeReady() { return ready.isEmpty ? nil : ready }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<[Element]?, Never>) in
                let immediate: [Element]?? = state.withLock { state in
                    if !state.items.isEmpty {
                        defer { state.items.removeAll(keepingCapacity: true) }
                        return .some(state.items)
                    }
                    if state.finished || Task.isCancelled { return .some(nil) }
                    state.waiter = continuation
                    return .none
                }
                if let immediate { continuation.resume(returning: immediate) }
            }
        } onCancel: {
            let waiter = state.withLock { state in
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume(returning: nil)
        }
    }

    /// Like `takeAll`, but returns [] when nothing arrived before `deadline`.
    public func takeAll(until deadline: ContinuousClock.Instant) async -> [Element]? {
        if let ready = takeReady() { return ready.isEmpty ? nil : ready }
        let timer = Task { [weak self] in
            try? await Task.sleep(until: deadline)
            if !Task.isCancelled { self?.wake() }
        }
        defer { timer.cancel() }
        return await takeAll()
    }

    /// Resumes a waiting consumer with an empty batch.
    public func wake() {
        let waiter = state.withLock { state in
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: [])
    }

    /// nil: nothing ready, must wait; []: finished; else the batch.
    private func takeReady() -> [Element]? {
        state.withLock { state in
            if !state.items.isEmpty {
                let batch = state.items
                state.items = []
                state.items.reserveCapacity(min(batch.count, 1024))
                return batch
            }
            return state.finished ? [] : nil
        }
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

        public mutating func next() async -> NATSMessage? {
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

        /// The rest of the current batch plus anything queued, without waiting (for batch processing).
        public mutating func nextBatch() async -> [NATSMessage]? {
            if index < batch.count {
                defer { batch = []; index = 0 }
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
