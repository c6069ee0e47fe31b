import NIOCore
import NIOHTTP1

/// Ends a connection whose request the HTTP parser refused (Content-Length with Transfer-Encoding, two
/// Content-Lengths, bare LF line ends, too many headers), after NIO's `HTTPServerProtocolErrorHandler`
/// has written its 400: nothing else would close it before the head timeout. Our side closes at once
/// (a FIN after the 400); the socket closes when the peer closes its side, or a second later. Closing
/// both sides with unread request bytes would send a reset, which can destroy the 400 before the client
/// reads it.
final class ParserErrorClose: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart

    static let lingerTime: TimeAmount = .seconds(1)
    private var failed = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.fireChannelRead(data)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is HTTPParserError, !failed {
            failed = true
            let channel = context.channel
            context.close(mode: .output, promise: nil)
            context.eventLoop.scheduleTask(in: Self.lingerTime) { channel.close(promise: nil) }
        }
        context.fireErrorCaught(error)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if failed, let event = event as? ChannelEvent, event == .inputClosed { context.close(promise: nil) }
        context.fireUserInboundEventTriggered(event)
    }
}
