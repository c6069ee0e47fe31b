/// Where a client connection is in its life: the one record of its close, kept by its
/// `ClientConnection` and moved on by whoever ends it (a shutdown, a slow-client disconnect, the
/// WebSocket handler on a protocol error or a closed socket). The outbox reads it to accept or refuse
/// frames; a close request reads it to be made once. (`WebSocketStateMachine` keeps only which frame
/// the close handshake still waits for.)
enum ConnectionLifecycle: Equatable, Sendable {
    case open
    /// A graceful close was asked for and is on its way to the event loop: frames queued until then
    /// still go out before the close frame.
    case closeRequested
    /// The close frame is queued (or the client was too slow): nothing more is queued.
    case closing
    /// The socket is gone.
    case closed

    var acceptsFrames: Bool { self == .open || self == .closeRequested }

    /// Moves to `next` unless the connection is already further along; true if it moved.
    mutating func advance(to next: ConnectionLifecycle) -> Bool {
        guard next.rank > rank else { return false }
        self = next
        return true
    }

    private var rank: Int {
        switch self {
        case .open: 0
        case .closeRequested: 1
        case .closing: 2
        case .closed: 3
        }
    }
}
