import Logging
import Synchronization

/// Receives libnats connection callbacks (on libnats threads) and fans them out to any number of
/// `AsyncStream` listeners. Callbacks only take a lock and yield, so they never block libnats.
final class ConnectionEvents: Sendable {
    private struct State {
        var listeners: [Int: AsyncStream<ConnectionEvent>.Continuation] = [:]
        var nextID = 0
        var closed = false
        var reconnects = 0
    }

    private let state = Mutex(State())
    let logger: Logger

    init(logger: Logger) { self.logger = logger }

    func emit(_ event: ConnectionEvent) {
        let listeners = state.withLock { state in
            if event == .closed { state.closed = true }
            if event == .reconnected { state.reconnects += 1 }
            return Array(state.listeners.values)
        }
        switch event {
        case .disconnected: logger.warning("NATS disconnected")
        case .reconnected: logger.info("NATS reconnected")
        case .closed: logger.info("NATS connection closed")
        }
        for listener in listeners {
            listener.yield(event)
            if event == .closed { listener.finish() }
        }
    }

    func asyncError(status: Int32, text: String, subject: String?) {
        logger.error(
            "NATS asynchronous error",
            metadata: [
                "nats.status": "\(status)", "nats.error": "\(text)", "nats.subject": "\(subject ?? "-")",
            ]
        )
    }

    var isClosed: Bool { state.withLock { $0.closed } }
    var reconnects: Int { state.withLock { $0.reconnects } }

    func stream() -> AsyncStream<ConnectionEvent> {
        let (stream, continuation) = AsyncStream.makeStream(of: ConnectionEvent.self, bufferingPolicy: .bufferingNewest(64))
        let (id, closed) = state.withLock { state in
            let id = state.nextID
            state.nextID += 1
            if !state.closed { state.listeners[id] = continuation }
            return (id, state.closed)
        }
        if closed {
            continuation.yield(.closed)
            continuation.finish()
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.state.withLock { $0.listeners.removeValue(forKey: id) }
        }
        return stream
    }
}
