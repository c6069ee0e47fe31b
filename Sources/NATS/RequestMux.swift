import Synchronization

/// Request-reply without blocking a thread per request: one wildcard inbox subscription per connection,
/// each request gets a reply subject `<inbox>.<id>`, and the reply resumes the waiting task. Deadlines are
/// enforced by one sweeper task, so a request costs no timer of its own; this is what lets thousands of
/// requests (and pipelined JetStream publishes) be in flight at once.
final class RequestMux: Sendable {
    private enum Waiter {
        case single(CheckedContinuation<NATSMessage, any Error>)
        case batch(BatchCollector, index: Int)
    }

    private struct Pending {
        var deadline: ContinuousClock.Instant
        var waiter: Waiter
    }

    private struct State {
        var pending: [UInt64: Pending] = [:]
        var nextID: UInt64 = 1
        var closed = false
    }

    private let state = Mutex(State())
    let prefix: String

    init(inbox: String) { self.prefix = inbox + "." }

    var subscriptionSubject: String { prefix + "*" }

    /// A reply subject no request is registered for (ids start at 1): replies to it are dropped.
    var discardedReplySubject: String { prefix + "0" }

    /// Called on the libnats delivery thread for every reply.
    func deliver(_ message: NATSMessage) {
        guard message.subject.hasPrefix(prefix), let id = UInt64(message.subject.dropFirst(prefix.count)) else { return }
        guard let pending = state.withLock({ $0.pending.removeValue(forKey: id) }) else { return }
        let result: Result<NATSMessage, NATSError> =
            message.isNoResponders
            ? .failure(NATSError(.noResponders, status: 34, message: "no responders"))
            : .success(message)
        Self.complete(pending.waiter, with: result)
    }

    private static func complete(_ waiter: Waiter, with result: Result<NATSMessage, NATSError>) {
        switch waiter {
        case .single(let continuation): continuation.resume(with: result.mapError { $0 as any Error })
        case .batch(let collector, let index): collector.set(index, result)
        }
    }

    /// Registers a waiter and returns its reply subject, or nil when the connection is closed.
    private func register(_ waiter: Waiter, timeout: Duration) -> (UInt64, String)? {
        let deadline = ContinuousClock.now.advanced(by: timeout)
        let id: UInt64? = state.withLock { state in
            guard !state.closed else { return nil }
            let id = state.nextID
            state.nextID += 1
            state.pending[id] = Pending(deadline: deadline, waiter: waiter)
            return id
        }
        return id.map { ($0, prefix + String($0)) }
    }

    func fail(_ id: UInt64, _ error: NATSError) {
        guard let pending = state.withLock({ $0.pending.removeValue(forKey: id) }) else { return }
        Self.complete(pending.waiter, with: .failure(error))
    }

    func request(timeout: Duration, send: (String) throws(NATSError) -> Void) async throws(NATSError) -> NATSMessage {
        let ticket = RequestTicket()
        do {
            return try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<NATSMessage, any Error>) in
                    guard let (id, reply) = register(.single(continuation), timeout: timeout) else {
                        continuation.resume(throwing: NATSError(.connectionClosed, message: "connection closed"))
                        return
                    }
                    guard ticket.register(id) else {
                        fail(id, Self.cancelled)
                        return
                    }
                    do throws(NATSError) { try send(reply) } catch { fail(id, error) }
                }
            } onCancel: {
                if let id = ticket.cancel() { fail(id, Self.cancelled) }
            }
        } catch let error as NATSError {
            throw error
        } catch {
            throw NATSError(.other, message: "\(error)")
        }
    }

    private static let cancelled = NATSError(.cancelled, message: "request cancelled")

    /// Sends every request before waiting for any reply; results keep the order of `count`.
    func requestMany(count: Int, timeout: Duration, send: (Int, String) throws(NATSError) -> Void) async -> [Result<NATSMessage, NATSError>]
    {
        guard count > 0 else { return [] }
        let collector = BatchCollector(count: count)
        for index in 0..<count {
            guard let (id, reply) = register(.batch(collector, index: index), timeout: timeout) else {
                collector.set(index, .failure(NATSError(.connectionClosed, message: "connection closed")))
                continue
            }
            do throws(NATSError) { try send(index, reply) } catch { fail(id, error) }
        }
        return await collector.wait()
    }

    /// Fails every request whose deadline passed. Driven by the connection's sweeper task.
    func sweep(now: ContinuousClock.Instant) {
        let expired: [Waiter] = state.withLock { state in
            var expired: [Waiter] = []
            for (id, pending) in state.pending where pending.deadline <= now {
                expired.append(pending.waiter)
                state.pending.removeValue(forKey: id)
            }
            return expired
        }
        for waiter in expired { Self.complete(waiter, with: .failure(NATSError(.timeout, status: 26, message: "request timed out"))) }
    }

    func close() {
        let all: [Waiter] = state.withLock { state in
            state.closed = true
            defer { state.pending.removeAll() }
            return state.pending.values.map(\.waiter)
        }
        for waiter in all { Self.complete(waiter, with: .failure(NATSError(.connectionClosed, message: "connection closed"))) }
    }
}

/// Collects the replies of `requestMany` and resumes its caller once all arrived or failed.
final class BatchCollector: Sendable {
    private struct State {
        var results: [Result<NATSMessage, NATSError>?]
        var remaining: Int
        var continuation: CheckedContinuation<[Result<NATSMessage, NATSError>], Never>?
    }

    private let state: Mutex<State>

    init(count: Int) { state = Mutex(State(results: Array(repeating: nil, count: count), remaining: count)) }

    func set(_ index: Int, _ result: Result<NATSMessage, NATSError>) {
        let done: (CheckedContinuation<[Result<NATSMessage, NATSError>], Never>, [Result<NATSMessage, NATSError>])? = state.withLock {
            state in
            guard state.results[index] == nil else { return nil }
            state.results[index] = result
            state.remaining -= 1
            guard state.remaining == 0, let continuation = state.continuation else { return nil }
            state.continuation = nil
            return (continuation, state.results.map { $0! })
        }
        if let (continuation, results) = done { continuation.resume(returning: results) }
    }

    func wait() async -> [Result<NATSMessage, NATSError>] {
        await withCheckedContinuation { continuation in
            let ready: [Result<NATSMessage, NATSError>]? = state.withLock { state in
                if state.remaining == 0 { return state.results.map { $0! } }
                state.continuation = continuation
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }
}
