import ChatCore
import Foundation
import Hummingbird
import HummingbirdWebSocket
import Logging
import NATS
import NIOCore
import ServiceLifecycle
import ServiceSupport

/// Request context that keeps the channel, so a stuck socket can be closed hard.
public struct GatewayRequestContext: RequestContext, WebSocketRequestContext {
    public var coreContext: CoreRequestContextStorage
    public let webSocket: WebSocketHandlerReference<Self>
    let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.webSocket = .init()
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
    router.middlewares.add(HardeningMiddleware())
    StatusRoutes.add(to: router) { core.health() }
    addRESTRoutes(to: router, core: core)
    if let webRoot = configuration.webRoot {
        router.middlewares.add(FileMiddleware(webRoot, searchForIndexHtml: true))
    }
    addWebSocketRoute(to: router, core: core)

    let wsConfiguration = WebSocketServerConfiguration(
        maxFrameSize: configuration.maxFrameBytes,
        autoPing: .enabled(timePeriod: configuration.pingInterval),
        closeTimeout: .seconds(2),
        validateUTF8: true
    )
    let app = Application(
        router: router,
        server: .http1WebSocketUpgrade(webSocketRouter: router, configuration: .init(ws: wsConfiguration)),
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
        var request = request
        let body: ByteBuffer
        do {
            body = try await request.collectBody(upTo: context.maxUploadSize)
        } catch {
            throw GatewayHTTPError(.contentTooLarge, ChatError(.invalidRequest, "request body larger than \(context.maxUploadSize) bytes"))
        }
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

func addWebSocketRoute(to router: Router<GatewayRequestContext>, core: GatewayCore) {
    let limiter = ConnectionLimiter(
        maxConnections: core.configuration.maxConnections, maxPerIP: core.configuration.maxConnectionsPerIP,
        trustedProxies: core.configuration.trustedProxies
    )
    router.ws("/ws") { request, context in
        do throws(GatewayHTTPError) {
            _ = try await core.auth.identify(request)
            try limiter.admit(request, channel: context.channel)  // MAX_CONNECTIONS(_PER_IP): ConnectionLimits.swift
        } catch {
            // Without this the client would get a bare 400 instead of this error's status and JSON body.
            await RefusedUpgradeResponder.install(on: context.channel, for: error)
            throw error
        }
        return .upgrade([:])
    } onUpgrade: { inbound, outbound, context in
        let identity = try await core.auth.identify(context.request)
        let connectionID = String(makeUUID().prefix(13))
        var logger = core.logger
        logger[metadataKey: LogKey.connectionID] = "\(connectionID)"
        logger[metadataKey: LogKey.userID] = "\(identity.userID)"
        logger[metadataKey: LogKey.username] = "\(identity.username)"
        let client = ClientConnection(
            id: connectionID, userID: identity.userID, username: identity.username,
            queueLimit: core.configuration.outboundQueueLimit, channel: context.requestContext.channel,
            logger: logger, metrics: core.metrics
        )
        core.register(client)
        defer { core.unregister(client) }
        client.attach(outbound)
        logger.info("client connected")
        client.send(ServerFrame.connected(userID: identity.userID, username: identity.username.rawValue, gatewayID: core.configuration.gatewayID))
        // One task per connection: this one reads and answers; frames to the client are written on
        // the channel's event loop (see ClientConnection).
        var session = ChatSession(connection: client, gateway: core)
        do {
            for try await message in inbound.messages(maxSize: core.configuration.maxFrameBytes) {
                await session.handle(message)
            }
        } catch {
            await session.disconnected()
            client.finish()
            throw error  // e.g. message too large: the WebSocket layer closes with 1009
        }
        await session.disconnected()
        client.finish()
        logger.info("client disconnected")
    }
}
