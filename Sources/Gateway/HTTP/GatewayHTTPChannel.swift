import ChatCore
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import Metrics
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOWebSocket
import ServiceSupport
import Synchronization

/// The gateway's HTTP/1 server channel: Hummingbird's HTTP handling for REST, the UI and status, and
/// for `/ws` an upgrade straight to `WebSocketConnectionHandler` — no `NIOAsyncChannel` and no task
/// per WebSocket (hummingbird-websocket keeps two tasks and two async streams per socket; that was
/// most of the ~45 KiB an idle connection cost). Modelled on hummingbird-websocket's
/// `HTTP1WebSocketUpgradeChannel`, whose HTTP half it repeats.
struct GatewayHTTPChannel: ServerChildChannel, HTTPChannelHandler {
    /// The answer to an upgrade request.
    enum Upgrade: Sendable {
        /// Upgrade, then `install` adds the connection's handler (called on the channel's event loop).
        case accept(install: @Sendable (any Channel) throws -> Void)
        /// Refuse: answered with this error's status and JSON body (400 without one).
        case refuse(GatewayHTTPError?)
    }
    /// The decision on the event loop, or work that has to suspend first (a token check).
    enum Decision: Sendable {
        case now(Upgrade)
        case later(@Sendable () async -> Upgrade)
    }
    typealias Decide = @Sendable (Request, any Channel, Logger) -> Decision

    enum UpgradeResult: Sendable {
        case websocket
        case notUpgraded(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>)
        case refused(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>, GatewayHTTPError?)
    }

    struct Value: ServerChildChannelValue {
        let upgradeResult: EventLoopFuture<UpgradeResult>
        let channel: any Channel
    }

    let responder: HTTPChannelHandler.Responder
    let configuration: HTTP1Channel.Configuration
    let maxFrameSize: Int
    /// Until the first request head is read and the upgrade decided, no other timer watches a connection.
    let headTimeout: Duration
    /// A request whose body is not complete this long after its head closes the connection.
    let bodyDeadline: Duration
    let decide: Decide

    private static let headTimeouts = Counter(label: "gateway_request_head_timeouts_total")

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            // Plain accepted upgrades are answered by the first handler; everything else gets the
            // HTTP pipeline below (see `WebSocketFastUpgrade`).
            let result = channel.eventLoop.makePromise(of: UpgradeResult.self)
            try channel.pipeline.syncOperations.addHandler(
                WebSocketFastUpgrade(
                    decide: decide,
                    maxFrameSize: maxFrameSize,
                    logger: logger,
                    result: result,
                    fallback: { channel, decided in try configureHTTP(channel: channel, alreadyDecided: decided, logger: logger) }
                )
            )
            // A client that never finishes its first head (a slowloris, a port scanner) is closed.
            let deadline = channel.eventLoop.scheduleTask(in: .milliseconds(headTimeout.inMilliseconds)) {
                Self.headTimeouts.increment()
                logger.debug(
                    "closing a connection without a complete request head",
                    metadata: ["timeout_ms": "\(headTimeout.inMilliseconds)"]
                )
                channel.close(promise: nil)
            }
            result.futureResult.whenComplete { _ in deadline.cancel() }
            return Value(upgradeResult: result.futureResult, channel: channel)
        }
    }

    /// Hummingbird's HTTP/1 pipeline with NIO's WebSocket upgrader, behind `WebSocketFastUpgrade`.
    private func configureHTTP(channel: any Channel, alreadyDecided: Upgrade?, logger: Logger) throws -> EventLoopFuture<UpgradeResult> {
        do {
            let decisionBox = DecisionBox()
            let parserErrorClose = NIOLoopBound(ParserErrorClose(), eventLoop: channel.eventLoop)
            let upgrader = NIOTypedWebSocketServerUpgrader<UpgradeResult>(
                maxFrameSize: maxFrameSize,
                enableAutomaticErrorHandling: false,  // WebSocketConnectionHandler answers decoding errors
                shouldUpgrade: { channel, head in
                    @Sendable func decided(_ upgrade: Upgrade) -> HTTPHeaders? {
                        decisionBox.set(upgrade)
                        if case .accept = upgrade { return HTTPHeaders() }
                        return nil
                    }
                    let request: Request
                    do {
                        request = Request(head: try HTTPRequest(head, secure: false, splitCookie: false), body: .init(buffer: ByteBuffer()))
                    } catch {
                        return channel.eventLoop.makeFailedFuture(error)
                    }
                    switch alreadyDecided.map(Decision.now) ?? decide(request, channel, logger) {
                    case .now(let upgrade):
                        // No task per connection when nothing has to wait (username clients).
                        return channel.eventLoop.makeSucceededFuture(decided(upgrade))
                    case .later(let work):
                        let promise = channel.eventLoop.makePromise(of: HTTPHeaders?.self)
                        promise.completeWithTask { decided(await work()) }
                        return promise.futureResult
                    }
                },
                upgradePipelineHandler: { channel, _ in
                    channel.eventLoop.makeCompletedFuture {
                        guard case .accept(let install) = decisionBox.get() else { throw ChannelError.inappropriateOperationForState }
                        channel.pipeline.syncOperations.removeHandler(parserErrorClose.value, promise: nil)  // no HTTP parser any more
                        try install(channel)
                        return UpgradeResult.websocket
                    }
                }
            )
            let serverUpgrade = NIOTypedHTTPServerUpgradeConfiguration(
                upgraders: [upgrader],
                notUpgradingCompletionHandler: { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(HTTP1ToHTTPServerCodec(secure: false))
                        try channel.pipeline.syncOperations.addHandler(RequestBodyDeadlineHandler(deadline: bodyDeadline))
                        try channel.pipeline.syncOperations.addHandlers(configuration.additionalChannelHandlers())
                        try channel.pipeline.syncOperations.addHandler(
                            HTTPConnectionStateHandler(idleTimeout: configuration.idleTimeout.map { .init($0) }, logger: logger)
                        )
                        let asyncChannel = try NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>(
                            wrappingChannelSynchronously: channel,
                            configuration: .init(isOutboundHalfClosureEnabled: true)
                        )
                        switch decisionBox.get() {
                        case nil: return UpgradeResult.notUpgraded(asyncChannel)
                        case .refuse(let error): return UpgradeResult.refused(asyncChannel, error)
                        case .accept: return UpgradeResult.refused(asyncChannel, nil)
                        }
                    }
                }
            )
            var pipeline = NIOUpgradableHTTPServerPipelineConfiguration<UpgradeResult>(upgradeConfiguration: serverUpgrade)
            pipeline.enablePipelining = false  // HTTP is pipelined by NIOAsyncChannel
            // NIO's error handler answers a request the HTTP parser refused (CL with TE, two Content-Lengths,
            // bare LF line ends, too many headers) with 400, and `ParserErrorClose` then closes the connection;
            // without them nothing answered until the head timeout. Hummingbird answers all other errors.
            pipeline.enableErrorHandling = true
            pipeline.enableResponseHeaderValidation = false  // HTTPTypes validated them
            pipeline.decoderConfiguration.maxHeaderFieldSize = configuration.httpDecoder.maxHeaderFieldSize
            pipeline.decoderConfiguration.maxHeaderListSize = configuration.httpDecoder.maxHeaderListSize
            pipeline.decoderConfiguration.maxHeaderFieldCount = configuration.httpDecoder.maxHeaderFieldCount
            let upgraded = try channel.pipeline.syncOperations.configureUpgradableHTTPServerPipeline(configuration: pipeline)
            try channel.pipeline.syncOperations.addHandler(parserErrorClose.value)
            return upgraded
        }
    }

    /// Runs for the HTTP part of a connection; returns as soon as a WebSocket is installed (the
    /// handler carries it from there).
    func handle(value: Value, logger: Logger) async {
        do {
            switch try await value.upgradeResult.get() {
            case .websocket:
                return
            case .notUpgraded(let http):
                await handleHTTP(asyncChannel: http, logger: logger)
            case .refused(let http, let error):
                await Self.refuse(http, error: error, logger: logger)
            }
        } catch let error as ChannelError where error == .inputClosed {
            logger.trace("upgrade failed: input closed")
        } catch {
            logger.debug("upgrade failed", metadata: [LogKey.error: "\(error)"])
        }
    }

    /// Answers a refused upgrade with the error's status and `{"error","code"}` body, then closes.
    private static func refuse(_ http: NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>, error: GatewayHTTPError?, logger: Logger) async {
        do {
            try await http.executeThenClose { _, outbound in
                var fields: HTTPFields = [.connection: "close"]
                var body: ByteBuffer?
                if let error {
                    fields.append(contentsOf: error.headers)
                    let bytes = ChatJSON.encode(error.error)
                    fields[.contentType] = "application/json"
                    fields[.init("X-Content-Type-Options")!] = "nosniff"
                    if error.status == .unauthorized { fields[.wwwAuthenticate] = "Bearer" }
                    body = ByteBuffer(bytes: bytes)
                }
                fields[.contentLength] = String(body?.readableBytes ?? 0)
                try await outbound.write(.head(HTTPResponse(status: error?.status ?? .badRequest, headerFields: fields)))
                if let body { try await outbound.write(.body(body)) }
                try await outbound.write(.end(nil))
            }
        } catch {
            logger.trace("could not answer a refused upgrade", metadata: [LogKey.error: "\(error)"])
        }
    }
}

/// The upgrade decision, written by the `shouldUpgrade` task and read on the event loop afterwards.
private final class DecisionBox: Sendable {
    private let value = Mutex<GatewayHTTPChannel.Upgrade?>(nil)
    func set(_ upgrade: GatewayHTTPChannel.Upgrade) { value.withLock { $0 = upgrade } }
    func get() -> GatewayHTTPChannel.Upgrade? { value.withLock { $0 } }
}
