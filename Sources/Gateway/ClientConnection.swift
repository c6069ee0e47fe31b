import ChatCore
import HummingbirdWebSocket
import Logging
import Metrics
import NATS
import NIOCore
import NIOWebSocket
import Synchronization

/// One WebSocket client: identity, its bounded outbound queue, and the channel (for a hard close).
///
/// Frames for the socket go through `send`, which never blocks: when `outboundQueueLimit` frames are
/// waiting the client is too slow, and it is disconnected (close 1008) so it never holds up a room.
public final class ClientConnection: Sendable {
    public enum Outgoing: Sendable {
        case frame(ByteBuffer)
        case close(WebSocketErrorCode, String)
    }

    public let id: String
    public let userID: UserID
    public let username: Username
    let queue: MessageBuffer<Outgoing>
    let channel: any Channel
    let logger: Logger
    private let slow = Atomic<Bool>(false)
    private let slowDisconnects: Counter
    private let framesOut: Counter

    init(id: String, userID: UserID, username: Username, queueLimit: Int, channel: any Channel, logger: Logger, metrics: GatewayMetrics) {
        self.id = id
        self.userID = userID
        self.username = username
        self.queue = MessageBuffer(limit: queueLimit)
        self.channel = channel
        self.logger = logger
        self.slowDisconnects = metrics.slowDisconnects
        self.framesOut = metrics.framesOut
    }

    /// Queues a frame for the socket; false when the client was too slow and is being disconnected.
    @discardableResult
    public func send(_ frame: ByteBuffer) -> Bool {
        if queue.append(.frame(frame)) { return true }
        // Refused because the queue is full (a slow client) or finished (the socket is closing, e.g. a
        // room event raced a normal disconnect): only the first one is a slow-client disconnect.
        if queue.count >= queue.limit { disconnectSlowClient() }
        return false
    }

    public func send(_ bytes: [UInt8]) { send(ByteBuffer(bytes: bytes)) }

    /// Queues a close frame after everything already queued (used for graceful shutdown: 1001).
    public func close(_ code: WebSocketErrorCode, reason: String) {
        _ = queue.append(.close(code, reason))
    }

    var isSlow: Bool { slow.load(ordering: .relaxed) }

    private func disconnectSlowClient() {
        guard !slow.exchange(true, ordering: .relaxed) else { return }
        slowDisconnects.increment()
        logger.warning("client too slow: outbound queue full, disconnecting", metadata: ["queued": "\(queue.count)"])
        queue.finish()
        // The writer may be stuck on a socket the client no longer reads: drop the TCP connection.
        let channel = self.channel
        channel.eventLoop.scheduleTask(in: .milliseconds(500)) { channel.close(promise: nil) }
    }

    /// Writes queued frames until the queue finishes or a close is requested. Runs as the connection's writer task.
    func runWriter(_ outbound: WebSocketOutboundWriter) async {
        while let batch = await queue.takeAll() {
            for item in batch {
                switch item {
                case .frame(let buffer):
                    do {
                        try await outbound.write(.custom(WebSocketFrame(fin: true, opcode: .text, data: buffer)))
                        framesOut.increment()
                    } catch {
                        queue.finish()
                        return
                    }
                case .close(let code, let reason):
                    try? await outbound.close(code, reason: reason)
                    queue.finish()
                    return
                }
            }
        }
        if isSlow {
            try? await outbound.close(.policyViolation, reason: "slow consumer: outbound queue full")
        }
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

    func framesIn(_ type: String) -> Counter { Counter(label: "gateway_frames_in_total", dimensions: [("type", type)]) }
    func error(_ code: ChatErrorCode) -> Counter { Counter(label: "gateway_errors_total", dimensions: [("code", code.rawValue)]) }
}
