import ChatCore
import Foundation
import Logging
import Metrics
import NATS
import NIOCore
import NIOWebSocket
import Synchronization

/// One WebSocket client: identity, its bounded outbox, and the channel its frames are written to.
///
/// Frames are written straight to the channel on its event loop: `send` appends to the outbox and,
/// when no flush is pending, schedules one; the flush writes everything queued since and flushes the
/// socket once. (A writer task awaiting `outbound.write` per frame cost ~45 % more CPU per delivery.)
/// Frames queued but not yet written, plus frames written but not yet on the wire, are bounded by
/// `outboundQueueLimit`: beyond it the client is too slow, and it is disconnected (close 1008) so it
/// never holds up a room or grows the gateway's memory.
public final class ClientConnection: Sendable {
    public let id: String
    public let userID: UserID
    public let username: Username
    /// The client's address (`ConnectionLimiter.clientAddress`), the key of its per-address limits.
    let address: String
    /// The client's current JWT (token mode): sent with its joins and sends, because the chat-service
    /// verifies who a request acts for itself. The one it connected with, until an `auth` frame
    /// replaces it (`refresh`).
    var token: String? { credential.withLock { $0 } }
    private let credential: Mutex<String?>
    let limit: Int
    let channel: any Channel
    /// Encoded frames go out here (see `WebSocketFrameBytes`).
    let output: WebSocketFrameOutput
    let logger: Logger
    private let slowDisconnects: Counter
    private let framesOut: Counter

    private struct Outbox {
        var pending: [ByteBuffer] = []
        /// Frames handed to the channel whose write has not completed (NIO buffers them while the
        /// peer does not read).
        var inFlight = 0
        var flushScheduled = false
        var lifecycle = ConnectionLifecycle.open
    }
    private let outbox = Mutex(Outbox())
    /// Rooms a room worker took this connection out of (a removal, ban or deletion event; or a private
    /// room's delivery from a broadcaster too old to apply removals): its session forgets them before it
    /// handles its next frame, and leaves those marked `true` at the chat-service (a removal or deletion
    /// took the member away there already).
    private let revoked = Mutex<[RoomID: Bool]>([:])

    /// Rooms this user is muted in (until milliseconds since 1970; nil: until lifted), from the join
    /// reply and `muted` / `unmuted` frames: the gateway drops the user's typing notices there.
    private let mutes = Mutex<[RoomID: Int64?]>([:])

    func setMute(_ room: RoomID, untilMilliseconds: Int64??) {
        mutes.withLock { mutes in
            if let until = untilMilliseconds { mutes[room] = until } else { mutes[room] = nil }
        }
    }

    func isMuted(in room: RoomID, atMilliseconds now: Int64) -> Bool {
        guard let until = mutes.withLock({ $0[room] }) else { return false }
        return until.map { now < $0 } ?? true
    }

    func revoke(_ room: RoomID, leave: Bool = false) { revoked.withLock { $0[room] = leave || ($0[room] ?? false) } }

    func takeRevoked() -> [RoomID: Bool] {
        revoked.withLock { revoked in
            defer { revoked.removeAll() }
            return revoked
        }
    }

    init(
        id: String,
        userID: UserID,
        username: Username,
        address: String,
        token: String? = nil,
        queueLimit: Int,
        channel: any Channel,
        output: WebSocketFrameOutput,
        logger: Logger,
        metrics: GatewayMetrics
    ) {
        self.id = id
        self.userID = userID
        self.username = username
        self.address = address
        self.credential = Mutex(token)
        self.limit = queueLimit
        self.channel = channel
        self.output = output
        self.logger = logger
        self.slowDisconnects = metrics.slowDisconnects
        self.framesOut = metrics.framesOut
    }

    enum Enqueued {
        /// Queued behind a flush that is already scheduled.
        case queued
        /// Queued; the caller must schedule a flush (`flush()` on the channel's event loop).
        case needsFlush
        /// Not queued: the socket is closing, or the client was too slow and is being disconnected.
        case refused
    }

    /// Queues an encoded frame (`WebSocketFrameBytes`) without scheduling its flush; fan-out uses this to flush many sockets per
    /// event-loop task (see `FlushBatch`).
    func enqueue(_ frame: ByteBuffer) -> Enqueued {
        var slowDisconnect = false
        let result = outbox.withLock { box -> Enqueued? in
            guard box.lifecycle.acceptsFrames else { return .refused }
            if box.pending.count + box.inFlight >= limit {
                box.pending = []
                // The close request is this sender's to make, unless a graceful close is already on its way.
                slowDisconnect = box.lifecycle == .open
                _ = box.lifecycle.advance(to: .closing)
                return nil
            }
            box.pending.append(frame)
            if box.flushScheduled { return .queued }
            box.flushScheduled = true
            return .needsFlush
        }
        guard let result else {
            disconnectSlowClient(requestClose: slowDisconnect)
            return .refused
        }
        return result
    }

    /// Queues an encoded frame (`WebSocketFrameBytes`) for the socket; false when the socket is
    /// closing or the client was too slow.
    @discardableResult
    func send(frame: ByteBuffer) -> Bool {
        switch enqueue(frame) {
        case .queued: return true
        case .needsFlush:
            channel.eventLoop.execute { self.flush() }
            return true
        case .refused: return false
        }
    }

    /// Queues a text frame with this payload.
    public func send(_ payload: [UInt8]) { send(frame: WebSocketFrameBytes.text(payload)) }

    /// Writes everything queued and flushes the socket once. Must run on the channel's event loop.
    func flush() {
        let batch = outbox.withLock { box -> [ByteBuffer] in
            box.flushScheduled = false
            let batch = box.pending
            box.pending = []
            box.inFlight += batch.count
            return batch
        }
        guard let last = batch.last else { return }
        for frame in batch.dropLast() {
            output.write(frame, promise: nil)
        }
        output.writeAndFlush(last, promise: nil)
        let count = batch.count
        // Usually the socket took every byte at once: nothing is in flight, and no completion (a
        // promise and a callback per socket per flush) is needed. Otherwise the batch stays counted
        // until a marker written behind it completes (writes complete in order).
        let buffered = (try? channel.syncOptions?.getOption(ChannelOptions.bufferedWritableBytes)) ?? 1
        if buffered == 0 {
            outbox.withLock { $0.inFlight -= count }
            if channel.isActive { framesOut.increment(by: Int64(count)) }
            return
        }
        let written = channel.eventLoop.makePromise(of: Void.self)
        output.writeAndFlush(ByteBuffer(), promise: written)
        let framesOut = self.framesOut
        written.futureResult.whenComplete { result in
            self.outbox.withLock { $0.inFlight -= count }
            if case .success = result { framesOut.increment(by: Int64(count)) }
        }
    }

    /// Closes the socket with `code` after everything already queued (graceful shutdown: 1001): the
    /// close handshake is the connection handler's (`WebSocketConnectionHandler`).
    public func close(_ code: WebSocketErrorCode, reason: String) {
        let timeout = WebSocketConnectionHandler.closeTimeout
        guard outbox.withLock({ $0.lifecycle.advance(to: .closeRequested) }) else { return }
        channel.eventLoop.execute {
            // Frames queued before the close go out first; nothing is queued after it.
            self.flush()
            _ = self.outbox.withLock { $0.lifecycle.advance(to: .closing) }
            self.channel.pipeline.fireUserInboundEventTriggered(
                WebSocketCloseRequest(code: code, reason: reason, graceAfterWrite: timeout, deadline: timeout)
            )
        }
    }

    /// A verified fresh token of the same user: sent from now on, and the socket closes (4001) at its
    /// `exp` instead of the old one's (the expiry timer is the connection handler's).
    func refresh(token: String, expiresAt: Date) {
        credential.withLock { $0 = token }
        channel.pipeline.fireUserInboundEventTriggered(WebSocketExpiryUpdate(deadline: WebSocketExpiryUpdate.deadline(expiresAt)))
    }

    var lifecycle: ConnectionLifecycle { outbox.withLock { $0.lifecycle } }

    /// The WebSocket handler queued its own close frame (a protocol error, a ping timeout, the peer's
    /// close): data frames must not follow it.
    func closeFrameQueued() {
        _ = outbox.withLock { $0.lifecycle.advance(to: .closing) }
    }

    /// The socket is gone: refuse further frames.
    func socketClosed() {
        _ = outbox.withLock { $0.lifecycle.advance(to: .closed) }
    }

    /// How long a client that stopped reading keeps its socket after the 1008 close frame is queued:
    /// a client that reads again within it gets everything in flight and then the close frame.
    static let slowClientCloseTimeout: TimeAmount = .seconds(10)

    /// Queues the 1008 close frame straight behind the frames already handed to the channel (the ones
    /// not yet handed over were dropped), then drops the TCP connection once the frame is in the
    /// kernel's send buffer (the client reads it before the FIN) or after `slowClientCloseTimeout`
    /// (a client that never reads again cannot receive it, and must not hold the socket).
    private func disconnectSlowClient(requestClose: Bool) {
        slowDisconnects.increment()
        logger.warning("client too slow: outbound queue full, disconnecting", metadata: ["limit": "\(limit)"])
        guard requestClose else { return }
        // The frames not yet handed to the channel were dropped; the close frame goes straight behind
        // the ones in flight. A moment after it reached the kernel the client has it (and its close
        // reply is read by the handler).
        channel.pipeline.fireUserInboundEventTriggered(
            WebSocketCloseRequest(
                code: .policyViolation,
                reason: "slow consumer: outbound queue full",
                graceAfterWrite: .seconds(1),
                deadline: Self.slowClientCloseTimeout
            )
        )
    }
}
