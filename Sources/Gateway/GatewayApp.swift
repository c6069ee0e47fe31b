import ChatCore
import Foundation
import Hummingbird
import HummingbirdCore
import NIOWebSocket
import Logging
import Metrics
import NATS
import NIOCore
import ServiceLifecycle
import ServiceSupport

/// Request context that keeps the channel, so a stuck socket can be closed hard.
public struct GatewayRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.channel = source.channel
    }

    /// REST bodies are small JSON documents.
    public var maxUploadSize: Int { 16 * 1024 }
}

/// Builds the gateway: connects to NATS (waiting for it), then returns the HTTP/WebSocket application
/// and the core service. Run both in one `ServiceGroup` with the core last, so on SIGTERM the core
/// closes every socket with 1001 before the HTTP server stops. Tests boot it on port 0.
public func buildGateway(
    configuration: GatewayConfiguration, logger: Logger,
    onServerRunning: @escaping @Sendable (any Channel) async -> Void = { _ in }
) async throws -> (app: some ApplicationProtocol, core: GatewayCore) {
    Observability.bootstrapMetrics()
    var logger = logger
    logger[metadataKey: LogKey.gatewayID] = "\(configuration.gatewayID)"
    let connection = try await NATSConnection.connect(configuration.nats, logger: logger)
    let core = GatewayCore(configuration: configuration, connection: connection, auth: await Authenticator.make(configuration: configuration), logger: logger)

    let router = Router(context: GatewayRequestContext.self)
    router.middlewares.add(LogRequestsMiddleware(.debug))
    let knownRoutes = KnownRoutes()
    router.middlewares.add(HardeningMiddleware(routes: knownRoutes))
    StatusRoutes.add(to: router) { core.health() }
    addRESTRoutes(to: router, core: core)
    if let webRoot = configuration.webRoot {
        router.middlewares.add(FileMiddleware(webRoot, searchForIndexHtml: true))
    }
    router.get("ws") { _, _ -> Response in
        throw GatewayHTTPError(.upgradeRequired, ChatError(.invalidRequest, "/ws is a WebSocket endpoint: connect with a WebSocket client"))
    }
    knownRoutes.load(from: router)
    let upgrade = webSocketUpgrade(core: core)
    let server = HTTPServerBuilder { responder in
        GatewayHTTPChannel(
            responder: responder, configuration: .init(idleTimeout: .milliseconds(configuration.httpIdleTimeout.inMilliseconds)),
            maxFrameSize: configuration.maxFrameBytes, headTimeout: configuration.requestHeadTimeout,
            bodyDeadline: configuration.requestBodyTimeout + .seconds(1), decide: upgrade
        )
    }
    let app = Application(
        router: router,
        server: server,
        configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "gateway"),
        onServerRunning: onServerRunning,
        logger: logger
    )
    return (app, core)
}

/// JSON helpers of the REST routes.
enum REST {
    static func reply(_ bytes: [UInt8], status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    static func call<T: Decodable>(_ core: GatewayCore, _ endpoint: ChatNames.Endpoint, _ body: some Encodable) async throws(GatewayHTTPError) -> T {
        do {
            return try await core.chat.call(endpoint, body)
        } catch {
            core.metrics.error(error.code).increment()
            throw GatewayHTTPError(error)
        }
    }

    private static let bodyTimeouts = Counter(label: "gateway_request_body_timeouts_total")

    /// The request body, at most `limit` bytes, complete within `timeout` of starting to read it. A
    /// client that trickles its body (a slowloris past the head; each byte resets the idle timeout)
    /// gets 408 `Connection: close`, after which the connection closes (`RequestBodyDeadlineHandler`
    /// closes it a second later if nothing else did).
    static func body(of request: Request, upTo limit: Int, within timeout: Duration) async throws(GatewayHTTPError) -> ByteBuffer {
        enum Outcome: Sendable { case body(ByteBuffer), tooLarge, unreadable, timedOut }
        let outcome = await withTaskGroup(of: Outcome.self) { group in
            group.addTask {
                var request = request
                do {
                    return .body(try await request.collectBody(upTo: limit))
                } catch is NIOTooManyBytesError {
                    return .tooLarge
                } catch {
                    return .unreadable  // the connection failed or closed mid-body
                }
            }
            group.addTask {
                do {
                    try await Task.sleep(for: timeout)
                    return .timedOut
                } catch {
                    return .unreadable  // cancelled: the body came first, or the server is stopping
                }
            }
            let first = await group.next() ?? .timedOut
            group.cancelAll()
            return first
        }
        switch outcome {
        case .body(let body): return body
        case .tooLarge: throw GatewayHTTPError(.contentTooLarge, ChatError(.invalidRequest, "request body larger than \(limit) bytes"))
        case .unreadable: throw GatewayHTTPError(.badRequest, ChatError(.invalidRequest, "request body could not be read"))
        case .timedOut:
            bodyTimeouts.increment()
            throw GatewayHTTPError(.requestTimeout, ChatError(.invalidRequest, "request body not complete within \(timeout.inMilliseconds) ms"),
                                   headers: [.connection: "close"])
        }
    }

    static func roomID(_ context: GatewayRequestContext) throws(GatewayHTTPError) -> RoomID {
        guard let text = context.parameters.get("id"), let id = RoomID(text) else {
            throw GatewayHTTPError(.notFound, ChatError(.roomNotFound, "room not found (room ids are UUIDs)"))
        }
        return id
    }
}

func addRESTRoutes(to router: Router<GatewayRequestContext>, core: GatewayCore) {
    let api = router.group("api/v1")
    api.get("rooms") { _, _ -> Response in
        let list: ServiceAPI.RoomList = try await REST.call(core, .listRooms, ServiceAPI.ListRooms())
        return REST.reply(ChatJSON.encode(list))
    }
    api.post("rooms") { request, context -> Response in
        let body = try await REST.body(of: request, upTo: context.maxUploadSize, within: core.configuration.requestBodyTimeout)
        let create: ServiceAPI.CreateRoom
        do throws(ChatError) {
            create = try ChatJSON.decode(ServiceAPI.CreateRoom.self, from: Array(buffer: body))
        } catch {
            throw GatewayHTTPError(error)
        }
        let room: Room = try await REST.call(core, .createRoom, create)
        return REST.reply(ChatJSON.encode(room), status: .created)
    }
    api.get("rooms/:id") { _, context -> Response in
        let room: Room = try await REST.call(core, .getRoom, ServiceAPI.RoomRef(roomID: try REST.roomID(context).rawValue))
        return REST.reply(ChatJSON.encode(room))
    }
    api.get("rooms/:id/history") { request, context -> Response in
        let id = try REST.roomID(context)
        let query = FormQuery.parse(request.uri.query ?? "")
        let limit: Int?
        let before: UInt64?
        do throws(ChatError) {
            (limit, before) = try HistoryQuery.parse(limit: query["limit"].map { $0 ?? "" }, before: query["before"].map { $0 ?? "" })
        } catch {
            throw GatewayHTTPError(error)
        }
        let result: ServiceAPI.HistoryResult = try await REST.call(core, .history, ServiceAPI.History(roomID: id.rawValue, limit: limit, before: before))
        struct Body: Encodable {
            var room_id: RoomID
            var messages: [ChatMessage]
            var has_more: Bool
        }
        return REST.reply(ChatJSON.encode(Body(room_id: result.roomID, messages: result.messages, has_more: result.hasMore)))
    }
}

/// Decides `/ws` upgrades (identity, then the connection limits) and installs each accepted
/// connection: its `ClientConnection`, `ChatSession` and `WebSocketConnectionHandler`.
func webSocketUpgrade(core: GatewayCore) -> GatewayHTTPChannel.Decide {
    let limiter = ConnectionLimiter(
        maxConnections: core.configuration.maxConnections, maxPerIP: core.configuration.maxConnectionsPerIP,
        trustedProxies: core.configuration.trustedProxies
    )
    let configuration = core.configuration
    /// Installs an accepted connection (on its event loop, once upgraded).
    @Sendable func accept(_ identity: Identity) -> GatewayHTTPChannel.Upgrade {
        .accept { channel in
            let connectionID = String(makeUUID().prefix(13))
            var connectionLogger = core.logger
            connectionLogger[metadataKey: LogKey.connectionID] = "\(connectionID)"
            connectionLogger[metadataKey: LogKey.userID] = "\(identity.userID)"
            connectionLogger[metadataKey: LogKey.username] = "\(identity.username)"
            let logger = connectionLogger
            let output = try WebSocketFrameOutput(channel: channel)
            let client = ClientConnection(
                id: connectionID, userID: identity.userID, username: identity.username,
                queueLimit: configuration.outboundQueueLimit, channel: channel, output: output, logger: logger, metrics: core.metrics
            )
            let inbox = SessionInbox(session: ChatSession(connection: client, gateway: core), channel: channel) {
                client.finish()
                core.unregister(client)
                logger.info("client disconnected")
            }
            try channel.pipeline.syncOperations.addHandler(WebSocketConnectionHandler(
                inbox: inbox, output: output, maxMessageBytes: configuration.maxFrameBytes,
                pingInterval: TimeAmount(configuration.pingInterval)
            ))
            // `connected` is queued before the client is registered: from then on room-wide news
            // (`room_created`) can be queued for it too, and must not come first.
            client.send(ServerFrame.connected(userID: identity.userID, username: identity.username.rawValue, gatewayID: configuration.gatewayID))
            core.register(client)
            logger.info("client connected")
        }
    }
    /// The identity, then the connection limits; `accept` or the error to answer.
    @Sendable func admit(_ request: Request, _ channel: any Channel, _ identify: () throws(GatewayHTTPError) -> Identity) -> GatewayHTTPChannel.Upgrade {
        do throws(GatewayHTTPError) {
            let identity = try identify()
            try limiter.admit(request, channel: channel)  // MAX_CONNECTIONS(_PER_IP): ConnectionLimits.swift
            return accept(identity)
        } catch {
            return .refuse(error)
        }
    }
    return { request, channel, _ in
        guard request.uri.path == "/ws" else { return .now(.refuse(nil)) }
        guard core.auth.requiresToken else {
            return .now(admit(request, channel) { () throws(GatewayHTTPError) in try core.auth.identifyByUsername(request) })
        }
        return .later {
            let identity: Identity
            do throws(GatewayHTTPError) {
                identity = try await core.auth.identify(request)
            } catch {
                return .refuse(error)
            }
            return admit(request, channel) { identity }
        }
    }
}
