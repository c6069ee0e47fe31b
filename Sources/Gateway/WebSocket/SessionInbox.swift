import ChatCore
import Logging
import NIOCore
import Synchronization

/// A connection's complete inbound messages, processed in order by its `ChatSession` in a task that
/// exists only while messages wait (an idle connection holds no task). The session itself is the
/// baton: a drain task takes it out of the state and puts it back when the queue is empty, so at most
/// one task ever holds it.
final class SessionInbox: Sendable {
    enum Item: Sendable {
        case text(ByteBuffer)
        case binary
        /// The socket closed: the session leaves its rooms; nothing follows.
        case closed
    }

    enum Pushed: Equatable {
        case queued
        /// The queue is at `pauseAt`: stop reading the socket; the drain resumes it.
        case pause
    }

    private struct State {
        var items: [Item] = []
        /// nil while a drain task holds the session.
        var session: ChatSession?
        var paused = false
    }

    private let state: Mutex<State>
    private let channel: any Channel
    let logger: Logger
    private let pauseAt: Int
    private let onClosed: @Sendable () -> Void
    /// Owns the drain tasks, so none outlives the gateway's shutdown.
    private let background: BackgroundWork

    init(
        session: ChatSession,
        channel: any Channel,
        background: BackgroundWork,
        pauseAt: Int = 32,
        onClosed: @escaping @Sendable () -> Void
    ) {
        self.state = Mutex(State(session: session))
        self.background = background
        self.channel = channel
        self.logger = session.logger
        self.pauseAt = pauseAt
        self.onClosed = onClosed
    }

    @discardableResult
    func push(_ item: Item) -> Pushed {
        let (idle, pause) = state.withLock { state -> (ChatSession?, Bool) in
            state.items.append(item)
            let pause = !state.paused && state.items.count >= pauseAt
            if pause { state.paused = true }
            defer { state.session = nil }
            return (state.session, pause)
        }
        if let idle, !background.spawn({ await self.drain(idle) }) {
            state.withLock { $0.session = idle }  // shutting down: nothing will process it
        }
        return pause ? .pause : .queued
    }

    private func drain(_ session: ChatSession) async {
        var session = session
        while true {
            let next = state.withLock { state -> (items: [Item], resume: Bool)? in
                if state.items.isEmpty {
                    state.session = session
                    return nil
                }
                defer {
                    state.items = []
                    state.paused = false
                }
                return (state.items, state.paused)
            }
            guard let next else { return }
            if next.resume { channel.setOption(ChannelOptions.autoRead, value: true).whenFailure { _ in } }
            for item in next.items {
                switch item {
                case .text(let text): await session.handle(text: text)
                case .binary: session.handleBinary()
                case .closed:
                    await session.disconnected()
                    onClosed()
                }
            }
        }
    }
}
