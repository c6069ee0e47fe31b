import ChatCore
import Foundation
import Logging
import NIOCore
import NIOWebSocket
import ServiceSupport
import Synchronization

/// What the connection's socket may be asked to do from outside its event loop (see
/// `ClientConnection.close`): sent as a user event through the pipeline, so it runs on the loop.
struct WebSocketCloseRequest: Sendable {
    var code: WebSocketErrorCode
    var reason: String
    /// The socket closes this long after the close frame reached the kernel, unless the peer's close
    /// frame arrives first.
    var graceAfterWrite: TimeAmount
    /// The socket closes at the latest this long after the request (a peer that does not read never
    /// takes the close frame).
    var deadline: TimeAmount
}

/// A refreshed token's expiry (`ClientConnection.refresh`): the socket's expiry timer moves to it.
struct WebSocketExpiryUpdate: Sendable {
    var deadline: NIODeadline

    /// The event-loop deadline of a token's `exp`.
    static func deadline(_ expiresAt: Date) -> NIODeadline {
        .now() + .nanoseconds(Int64(max(0, expiresAt.timeIntervalSinceNow) * 1e9))
    }
}

/// The WebSocket side of one client connection, event-driven on the channel's event loop: no task
/// and no async stream per connection (an idle connection is this handler, its `ClientConnection` and
/// its session's state). Protocol rules live in `WebSocketStateMachine`; complete text messages go to
/// the `SessionInbox`, which runs the session in a task only while there is something to process.
final class WebSocketConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = ByteBuffer

    private var machine: WebSocketStateMachine
    /// Keeps the connection's `ConnectionLifecycle`, moved on here when a close frame is queued or
    /// the socket closes.
    private let client: ClientConnection
    private let inbox: SessionInbox
    /// Encoded frames (`WebSocketFrameBytes`) go out here, past NIO's frame encoder.
    private let output: WebSocketFrameOutput
    private let pingInterval: TimeAmount
    private var pingTimer: RepeatedTask?
    /// When the connection's token expires (token mode); nil: never.
    private var expiresAt: NIODeadline?
    private var expiryTimer: Scheduled<Void>?
    private var closeTimer: Scheduled<Void>?

    /// How long our close frame waits for the peer's reply (and for the kernel to take it) before the
    /// socket is closed anyway.
    static let closeTimeout: TimeAmount = .seconds(2)
    private var closeTimeout: TimeAmount { Self.closeTimeout }

    init(
        client: ClientConnection,
        inbox: SessionInbox,
        output: WebSocketFrameOutput,
        maxMessageBytes: Int,
        pingInterval: TimeAmount,
        expiresAt: NIODeadline? = nil
    ) {
        self.machine = WebSocketStateMachine(maxMessageBytes: maxMessageBytes)
        self.client = client
        self.inbox = inbox
        self.output = output
        self.pingInterval = pingInterval
        self.expiresAt = expiresAt
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        scheduleExpiry(context: context)
        guard pingInterval > .zero else { return }
        pingTimer = context.eventLoop.scheduleRepeatedTask(initialDelay: pingInterval, delay: pingInterval) { _ in
            let (handler, context) = bound.value
            handler.perform(handler.machine.pingTick(payload: { Self.pingPayload(context.channel.allocator) }), context: context)
        }
    }

    /// Arms the expiry timer for `expiresAt`, replacing any earlier one.
    private func scheduleExpiry(context: ChannelHandlerContext) {
        expiryTimer?.cancel()
        expiryTimer = nil
        guard let expiresAt else { return }
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        expiryTimer = context.eventLoop.scheduleTask(deadline: expiresAt) {
            let (handler, context) = bound.value
            handler.perform(handler.machine.tokenExpired(), context: context)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        perform(machine.received(unwrapInboundIn(data)), context: context)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case let request as WebSocketCloseRequest:
            close(request, context: context)
        case let update as WebSocketExpiryUpdate:
            // Only while the socket is open: a closing socket keeps no timers.
            guard machine.state == .open else { return }
            expiresAt = update.deadline
            scheduleExpiry(context: context)
        case let event as ChannelEvent where event == .inputClosed:
            // The peer shut down its side (the server allows half-closure, for HTTP): without a close
            // frame first this is an abnormal end; nothing more can be read, so the socket closes.
            context.close(promise: nil)
        case is ChannelShouldQuiesceEvent:
            close(
                WebSocketCloseRequest(
                    code: .goingAway,
                    reason: "server shutting down",
                    graceAfterWrite: closeTimeout,
                    deadline: closeTimeout
                ),
                context: context
            )
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        machine.closed()
        client.socketClosed()
        cancelTimers()
        inbox.push(.closed)
        context.fireChannelInactive()
    }

    /// The timers hold this handler and its context: they end with the handler, whichever of
    /// `channelInactive` and `handlerRemoved` comes first.
    func handlerRemoved(context: ChannelHandlerContext) {
        cancelTimers()
    }

    private func cancelTimers() {
        pingTimer?.cancel()
        closeTimer?.cancel()
        expiryTimer?.cancel()
        pingTimer = nil
        closeTimer = nil
        expiryTimer = nil
    }

    /// Frame decoding errors (the decoder stops after one) are answered with a close frame — 1009 for
    /// a frame over the size limit, 1002 otherwise — and the socket closes once it is written.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        inbox.logger.debug("WebSocket error, closing", metadata: [LogKey.error: "\(error)"])
        guard let error = error as? NIOWebSocketError, machine.state == .open else {
            context.close(promise: nil)
            return
        }
        _ = machine.close(.protocolError)
        let code: WebSocketErrorCode = error == .invalidFrameLength ? .messageTooLarge : .protocolError
        writeThenClose(WebSocketFrameBytes.close(code, reason: nil), context: context)
    }

    private func close(_ request: WebSocketCloseRequest, context: ChannelHandlerContext) {
        guard case .sendClose(let code, let reason, _) = machine.close(request.code, reason: request.reason) else { return }
        writeClose(code, reason: reason, graceAfterWrite: request.graceAfterWrite, deadline: request.deadline, context: context)
    }

    /// Writes our close frame; the socket closes when the peer's close frame arrives (`closeSocket`),
    /// `graceAfterWrite` after the frame reached the kernel, or at `deadline`.
    private func writeClose(
        _ code: WebSocketErrorCode,
        reason: String?,
        graceAfterWrite: TimeAmount,
        deadline: TimeAmount,
        context: ChannelHandlerContext
    ) {
        let channel = context.channel
        client.closeFrameQueued()
        closeTimer = context.eventLoop.scheduleTask(in: deadline) { channel.close(promise: nil) }
        let written = context.eventLoop.makePromise(of: Void.self)
        output.writeAndFlush(WebSocketFrameBytes.close(code, reason: reason), promise: written)
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        written.futureResult.whenComplete { _ in
            let handler = bound.value
            guard handler.client.lifecycle != .closed else { return }  // the socket closed meanwhile
            handler.closeTimer?.cancel()
            handler.closeTimer = channel.eventLoop.scheduleTask(in: graceAfterWrite) { channel.close(promise: nil) }
        }
    }

    private func perform(_ action: WebSocketStateMachine.Action, context: ChannelHandlerContext) {
        switch action {
        case .none:
            break
        case .deliverText(let text):
            deliver(.text(text), context: context)
        case .deliverBinary:
            deliver(.binary, context: context)
        case .sendPong(let payload):
            output.writeAndFlush(WebSocketFrameBytes.frame(.pong, payload.readableBytesView), promise: nil)
        case .sendPing(let payload):
            output.writeAndFlush(WebSocketFrameBytes.frame(.ping, payload.readableBytesView), promise: nil)
        case .sendClose(let code, let reason, let thenClose):
            let frame = WebSocketFrameBytes.close(code, reason: reason)
            if thenClose {
                writeThenClose(frame, context: context)
            } else {
                writeClose(code, reason: reason, graceAfterWrite: closeTimeout, deadline: closeTimeout, context: context)
            }
        case .closeSocket:
            context.close(promise: nil)
        }
    }

    private func writeThenClose(_ frame: ByteBuffer, context: ChannelHandlerContext) {
        let channel = context.channel
        client.closeFrameQueued()
        let written = context.eventLoop.makePromise(of: Void.self)
        output.writeAndFlush(frame, promise: written)
        written.futureResult.whenComplete { _ in channel.close(promise: nil) }
    }

    /// A too-talkative client stops being read until its session has caught up.
    private func deliver(_ item: SessionInbox.Item, context: ChannelHandlerContext) {
        if inbox.push(item) == .pause {
            context.channel.setOption(ChannelOptions.autoRead, value: false).whenFailure { _ in }
        }
    }

    static func pingPayload(_ allocator: ByteBufferAllocator) -> ByteBuffer {
        var payload = allocator.buffer(capacity: 16)
        var generator = SystemRandomNumberGenerator()
        payload.writeInteger(generator.next() as UInt64)
        payload.writeInteger(generator.next() as UInt64)
        return payload
    }
}
