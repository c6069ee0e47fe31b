import ChatCore
import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import Metrics
import NATS
import NIOCore
import NIOWebSocket
import ServiceLifecycle
import ServiceSupport

/// Request context that keeps the channel, so a stuck socket can be closed hard.
public struct GatewayRequestContext: RequestContext, WriteGuardContext {
    public var coreContext: CoreRequestContextStorage
    let channel: any Channel
    /// The user of a REST write's token (token mode), set by `WriteGuard`.
    var verifiedUserID: UserID?

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
    configuration: GatewayConfiguration,
    logger: Logger,
    onServerRunning: @escaping @Sendable (any Channel) async -> Void = { _ in }
) async throws -> (app: some ApplicationProtocol, core: GatewayCore) {
    Observability.bootstrapMetrics()
    var logger = logger
    logger[metadataKey: LogKey.gatewayID] = "\(configuration.gatewayID)"
    // The keys first: a key set file that cannot be used ends start-up before anything connects.
    var verifier: TokenVerifier?
    if let auth = configuration.auth { verifier = try await TokenVerifier.start(configuration: auth, logger: logger) }
    let connection = try await NATSConnection.connect(configuration.nats, logger: logger)
    let core = GatewayCore(
        configuration: configuration,
        connection: connection,
        auth: Authenticator(configuration: configuration, verifier: verifier),
        logger: logger
    )
    logger.info("\(core.auth.modeDescription)")

    let router = Router(context: GatewayRequestContext.self)
    router.middlewares.add(LogRequestsMiddleware(.debug))
    let knownRoutes = KnownRoutes()
    router.middlewares.add(HardeningMiddleware(routes: knownRoutes))
    StatusRoutes.add(to: router) { core.health() }
    addRESTRoutes(to: router, core: core)
    if let webRoot = configuration.webRoot {
        router.middlewares.add(StaticFileGuard(root: webRoot, routes: knownRoutes))
        router.middlewares.add(FileMiddleware(webRoot, searchForIndexHtml: true))
    }
    router.get("ws") { _, _ -> Response in
        throw GatewayHTTPError(.upgradeRequired, ChatError(.invalidRequest, "/ws is a WebSocket endpoint: connect with a WebSocket client"))
    }
    knownRoutes.load(from: router)
    let upgrade = webSocketUpgrade(core: core)
    let server = HTTPServerBuilder { responder in
        GatewayHTTPChannel(
            responder: responder,
            configuration: .init(idleTimeout: .milliseconds(configuration.httpIdleTimeout.inMilliseconds)),
            maxFrameSize: configuration.maxFrameBytes,
            headTimeout: configuration.requestHeadTimeout,
            bodyDeadline: configuration.requestBodyTimeout + .seconds(1),
            decide: upgrade
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
