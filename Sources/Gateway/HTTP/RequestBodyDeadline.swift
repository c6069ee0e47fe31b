import HTTPTypes
import Metrics
import NIOCore
import NIOHTTPTypes

/// Closes an HTTP connection whose request body is not complete `deadline` after its head. Every
/// request is covered, also the bodies Hummingbird drains after a route answered early (405, 413, an
/// unknown path): each byte of a trickled body resets the idle timeout, so without this a client
/// could hold a connection and its task indefinitely. Routes that read a body answer 408 first
/// (`REST.body`, `REQUEST_BODY_TIMEOUT_MS`); the deadline is that timeout plus a second for the answer
/// to go out.
final class RequestBodyDeadlineHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart

    private static let closes = Counter(label: "gateway_request_body_deadline_closes_total")

    private let deadline: TimeAmount
    private var timer: Scheduled<Void>?

    init(deadline: Duration) { self.deadline = .milliseconds(deadline.inMilliseconds) }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head:
            timer?.cancel()
            let channel = context.channel
            timer = context.eventLoop.scheduleTask(in: deadline) {
                Self.closes.increment()
                channel.close(promise: nil)
            }
        case .body:
            break
        case .end:
            timer?.cancel()
            timer = nil
        }
        context.fireChannelRead(data)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        context.fireChannelInactive()
    }
}
