import ChatCore
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
        var closed = false
        var closeRequested = false
    }
    private let outbox = Mutex(Outbox())

    init(id: String, userID: UserID, username: Username, queueLimit: Int, channel: any Channel, output: WebSocketFrameOutput, logger: Logger, metrics: GatewayMetrics) {
        self.id = id
        self.userID = userID
        self.username = username
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
        let result = outbox.withLock { box -> Enqueued? in
            if box.closed { return .refused }
            if box.pending.count + box.inFlight >= limit {
                box.closed = true
                box.pending = []
                return nil
            }
            box.pending.append(frame)
            if box.flushScheduled { return .queued }
            box.flushScheduled = true
            return .needsFlush
        }
        guard let result else {
            disconnectSlowClient()
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
        guard claimClose() else { return }
        channel.eventLoop.execute {
            // Frames queued before the close go out first; nothing is queued after it.
            self.flush()
            self.outbox.withLock { $0.closed = true }
            self.channel.pipeline.fireUserInboundEventTriggered(
                WebSocketCloseRequest(code: code, reason: reason, graceAfterWrite: timeout, deadline: timeout))
        }
    }

    /// True for the first caller only: a socket is closed once, by whoever asks first (a shutdown, a
    /// slow-client disconnect, an error).
    private func claimClose() -> Bool {
        outbox.withLock { box in
            defer { box.closeRequested = true }
            return !box.closeRequested
        }
    }

    /// The session is over: refuse further frames.
    func finish() {
        outbox.withLock { $0.closed = true }
    }

    /// How long a client that stopped reading keeps its socket after the 1008 close frame is queued:
    /// a client that reads again within it gets everything in flight and then the close frame.
    static let slowClientCloseTimeout: TimeAmount = .seconds(10)

    /// Queues the 1008 close frame straight behind the frames already handed to the channel (the ones
    /// not yet handed over were dropped), then drops the TCP connection once the frame is in the
    /// kernel's send buffer (the client reads it before the FIN) or after `slowClientCloseTimeout`
    /// (a client that never reads again cannot receive it, and must not hold the socket).
    private func disconnectSlowClient() {
        slowDisconnects.increment()
        logger.warning("client too slow: outbound queue full, disconnecting", metadata: ["limit": "\(limit)"])
        guard claimClose() else { return }
        // The frames not yet handed to the channel were dropped; the close frame goes straight behind
        // the ones in flight. A moment after it reached the kernel the client has it (and its close
        // reply is read by the handler).
        channel.pipeline.fireUserInboundEventTriggered(WebSocketCloseRequest(
            code: .policyViolation, reason: "slow consumer: outbound queue full",
            graceAfterWrite: .seconds(1), deadline: Self.slowClientCloseTimeout))
    }
}

/// Collects the sockets a fan-out queued frames for, then flushes each event loop's sockets in one
/// task: one `execute` per loop per batch of room events instead of one per socket per frame.
struct FlushBatch {
    private var byLoop: [ObjectIdentifier: (loop: any EventLoop, clients: [ClientConnection])] = [:]

    /// Queues an encoded frame (`WebSocketFrameBytes`) for `client`.
    mutating func send(_ frame: ByteBuffer, to client: ClientConnection) {
        guard case .needsFlush = client.enqueue(frame) else { return }
        let loop = client.channel.eventLoop
        byLoop[ObjectIdentifier(loop), default: (loop, [])].clients.append(client)
    }

    mutating func submit() {
        for (loop, clients) in byLoop.values {
            loop.execute { for client in clients { client.flush() } }
        }
        byLoop.removeAll(keepingCapacity: true)
    }
}

/// Metrics of one gateway process.
struct GatewayMetrics: Sendable {
    let connections = Gauge(label: "gateway_connections")
    let framesOut = Counter(label: "gateway_frames_out_total")
    let slowDisconnects = Counter(label: "gateway_slow_client_disconnects_total")
    let sendLatency = Metrics.Timer(label: "gateway_send_latency_seconds")
    let natsConnected = Gauge(label: "gateway_nats_connected")
    let gapFills = Counter(label: "gateway_gap_fill_messages_total")
    let duplicatesDropped = Counter(label: "gateway_duplicate_deliveries_dropped_total")
    let deliveriesDropped = Counter(label: "gateway_room_inbox_overflow_total")
    /// Leaves after a disconnect that failed and will be tried again (the chat-service unreachable).
    let leaveRetries = Counter(label: "gateway_leave_retries_total")

    /// Made once: a labelled counter made per frame costs a registry lookup (lock and hashing) each time.
    private let framesInByType: [String: Counter] = Dictionary(uniqueKeysWithValues: (ClientFrame.types + ["binary", "invalid"]).map {
        ($0, Counter(label: "gateway_frames_in_total", dimensions: [("type", $0)]))
    })
    private let errorsByCode: [ChatErrorCode: Counter] = Dictionary(uniqueKeysWithValues: ChatErrorCode.allCases.map {
        ($0, Counter(label: "gateway_errors_total", dimensions: [("code", $0.rawValue)]))
    })

    func framesIn(_ type: String) -> Counter { framesInByType[type] ?? Counter(label: "gateway_frames_in_total", dimensions: [("type", type)]) }
    func error(_ code: ChatErrorCode) -> Counter { errorsByCode[code]! }
}
