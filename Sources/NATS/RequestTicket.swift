import Synchronization

/// Where one request of `RequestMux.request` stands, shared by the task that sends it and its
/// cancellation handler. A cancellation can arrive before the request has an id (the handler runs at
/// once when the task is already cancelled, before the continuation is even created): it is recorded,
/// and the request is failed as soon as it registers, instead of waiting out its timeout.
final class RequestTicket: Sendable {
    enum State {
        case unregistered
        case registered(UInt64)
        case cancelled
    }

    private let state = Mutex(State.unregistered)

    /// Records the request's id; false when the request was cancelled first (the caller fails it).
    func register(_ id: UInt64) -> Bool {
        state.withLock { state in
            guard case .unregistered = state else { return false }
            state = .registered(id)
            return true
        }
    }

    /// Marks the request cancelled; returns its id when it is registered (the caller fails it).
    func cancel() -> UInt64? {
        state.withLock { state in
            defer { state = .cancelled }
            if case .registered(let id) = state { return id }
            return nil
        }
    }
}
