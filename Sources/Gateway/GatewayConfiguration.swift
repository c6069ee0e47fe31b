import ChatCore
import Foundation
import NATS
import ServiceSupport

/// Gateway settings from environment variables (all documented in docs/configuration.md).
public struct GatewayConfiguration: Sendable {
    public var nats: NATSConfiguration
    public var host = "0.0.0.0"
    /// `PORT` (seed default 3000; 0 picks a free port).
    public var port = 3000
    /// `GATEWAY_ID`: this instance's id (the `connected` frame, `/health`, logs).
    public var gatewayID = "gw-" + String(makeUUID().prefix(8))
    /// Random per process start: see `presenceID`.
    public let incarnation = String(makeUUID().filter(\.isHexDigit).prefix(8)).lowercased()
    /// The id this process records its memberships and heartbeats under: `GATEWAY_ID` (cut to 55
    /// characters) + "-" + `incarnation`. A gateway restarted with the same `GATEWAY_ID` (kill -9, a
    /// container restart) must not adopt the members of its previous life: they are held by the old
    /// presence id, whose heartbeats stopped, so presence expiry removes them.
    public var presenceID: String { String(gatewayID.prefix(55)) + "-" + incarnation }
    /// The key that proves this process is `presenceID` to the chat-service (`GatewayCredential`).
    public let credentialKey = GatewayCredential.randomKey()
    public var credential: GatewayCredential { GatewayCredential(gatewayID: GatewayID(presenceID)!, key: credentialKey) }
    /// `MAX_FRAME_BYTES`: larger client frames close the socket with 1009.
    public var maxFrameBytes = 16 * 1024
    /// `RATE_LIMIT_PER_SEC` / `RATE_LIMIT_BURST`: messages a connection may send (token bucket).
    public var ratePerSecond = 10.0
    public var rateBurst = 20.0
    /// `RATE_LIMIT_PER_USER_PER_SEC` / `RATE_LIMIT_PER_USER_BURST`: messages one user may send over all
    /// its connections to this gateway (default twice a connection's). The user is the verified `sub`
    /// in token mode, the username in username mode.
    public var userRatePerSecond = 20.0
    public var userRateBurst = 40.0
    /// `RATE_LIMIT_PER_IP_PER_SEC` / `RATE_LIMIT_PER_IP_BURST`: messages from one client address over
    /// all its connections (default ten times a connection's).
    public var addressRatePerSecond = 100.0
    public var addressRateBurst = 200.0
    /// `ROOM_CREATE_PER_MIN`: rooms one client address — and, in token mode, one user — may create per
    /// minute (also the burst).
    public var roomCreatesPerMinute = 20
    /// User directory lookups (`GET /api/v1/users…`) per client address per minute (`USER_DIRECTORY_PER_MIN`).
    public var directoryLookupsPerMinute = 120
    /// `MAX_ROOMS_PER_CONNECTION`.
    public var maxRoomsPerConnection = 20
    /// `OUTBOUND_QUEUE_LIMIT`: frames queued for one socket; beyond it the client is too slow and is
    /// disconnected (close code 1008).
    public var outboundQueueLimit = 1024
    /// `ALLOWED_ORIGINS`: comma-separated browser origins allowed to open `/ws` (empty: any).
    public var allowedOrigins: [String] = []
    /// `AUTH_JWT_*`: when set (token mode), `/ws` needs an HS256 JWT (`?token=` or `Authorization: Bearer`)
    /// and REST writes one in `Authorization: Bearer`; nil: username mode.
    public var auth: TokenVerifierConfiguration?
    /// `PING_INTERVAL_MS`: WebSocket ping period; a peer that misses a pong is disconnected.
    public var pingInterval: Duration = .seconds(15)
    /// `REQUEST_TIMEOUT_MS`: how long to wait for the chat-service.
    public var requestTimeout: Duration = .seconds(5)
    /// `HEARTBEAT_INTERVAL_MS`: presence heartbeat to the chat-service.
    public var heartbeatInterval: Duration = .seconds(2)
    /// `PRESENCE_SYNC_INTERVAL_MS`: how often the gateway tells the chat-service which members it holds,
    /// so records it does not hold are removed (0: only after NATS reconnects). See `ServiceAPI.PresenceSync`.
    public var presenceSyncInterval: Duration = .seconds(300)
    /// `PRESENCE_SYNC_MAX_ENTRIES`: users (or rooms) per presence-sync request; a longer statement goes
    /// out in partitions by the ids' leading hex digits (`ServiceAPI.PresenceSync.plan`). Lower it when
    /// the NATS server's `max_payload` is below 1 MB (each id costs ~40 bytes).
    public var presenceSyncMaxEntries = ServiceAPI.PresenceSync.maxEntries
    /// `SHUTDOWN_GRACE_MS`: how long SIGTERM waits for sockets to close after sending 1001.
    public var shutdownGrace: Duration = .seconds(5)
    /// `TYPING_INTERVAL_MS`: at most one typing notice per user per room per interval.
    public var typingInterval: Duration = .seconds(2)
    /// `WEB_ROOT`: directory with the browser UI (served at `/`).
    public var webRoot: String?
    /// `MAX_CONNECTIONS`: WebSockets this gateway holds; more are refused with 503 `server_full`.
    /// Default: the open-file limit less 512.
    public var maxConnections = ConnectionLimiter.defaultMaxConnections()
    /// `MAX_CONNECTIONS_PER_IP`: WebSockets per client address; more get 429 `too_many_connections` (0: no limit).
    /// Behind a proxy, list it in `TRUSTED_PROXIES`, or every client counts as the proxy's address.
    public var maxConnectionsPerIP = 256
    /// `REQUEST_HEAD_TIMEOUT_MS`: a connection whose first request head (and, for `/ws`, the upgrade
    /// decision) is not complete this long after it opened is closed — slow or silent clients cannot
    /// hold sockets that no limit counts.
    public var requestHeadTimeout: Duration = .seconds(10)
    /// `REQUEST_BODY_TIMEOUT_MS`: a REST request body not complete this long after its handler started
    /// reading it gets 408 and the connection is closed (every byte resets the idle timeout, so that
    /// alone would let a trickling client hold the connection).
    public var requestBodyTimeout: Duration = .seconds(10)
    /// `HTTP_IDLE_TIMEOUT_MS`: an HTTP (non-WebSocket) connection idle this long is closed.
    public var httpIdleTimeout: Duration = .seconds(60)
    /// libnats delivery threads the gateway's subscriptions share unless `NATS_DELIVERY_THREADS` says
    /// otherwise (the services keep a thread per subscription: they have a fixed few).
    public static let defaultDeliveryThreads = 4
    /// `TRUSTED_PROXIES`: addresses/CIDR ranges whose `X-Forwarded-For` / `X-Real-IP` name the client.
    public var trustedProxies: [CIDR] = [CIDR("127.0.0.0/8")!, CIDR("::1")!]

    public init(nats: NATSConfiguration) { self.nats = nats }

    public static func fromEnvironment(_ settings: Settings = Settings()) throws -> GatewayConfiguration {
        // A gateway subscribes two subjects per room: without a pool that is two libnats threads per room.
        var c = GatewayConfiguration(
            nats: try settings.nats(
                name: "gateway",
                inboxPrefix: "_INBOX_gateway",
                defaultDeliveryThreads: GatewayConfiguration.defaultDeliveryThreads
            )
        )
        c.host = settings.string("HOST", default: c.host)
        c.port = try settings.int("PORT", default: c.port, range: 0...65535)
        c.gatewayID = settings.string("GATEWAY_ID", default: c.gatewayID)
        guard GatewayID(c.gatewayID) != nil else { throw ConfigurationError("GATEWAY_ID must be 1–64 characters of A-Z a-z 0-9 _ -") }
        c.nats.name = "gateway-" + c.gatewayID
        c.maxFrameBytes = try settings.int("MAX_FRAME_BYTES", default: c.maxFrameBytes, range: 256...(16 * 1024 * 1024))
        c.ratePerSecond = Double(try settings.int("RATE_LIMIT_PER_SEC", default: Int(c.ratePerSecond), range: 1...100_000))
        c.rateBurst = Double(try settings.int("RATE_LIMIT_BURST", default: Int(c.rateBurst), range: 1...100_000))
        // Derived defaults follow a raised per-connection rate (benchmarks raise only that one).
        let perSecond = Int(c.ratePerSecond)
        let burst = Int(c.rateBurst)
        c.userRatePerSecond = Double(try settings.int("RATE_LIMIT_PER_USER_PER_SEC", default: 2 * perSecond, range: 1...1_000_000))
        c.userRateBurst = Double(try settings.int("RATE_LIMIT_PER_USER_BURST", default: 2 * burst, range: 1...1_000_000))
        c.addressRatePerSecond = Double(try settings.int("RATE_LIMIT_PER_IP_PER_SEC", default: 10 * perSecond, range: 1...10_000_000))
        c.addressRateBurst = Double(try settings.int("RATE_LIMIT_PER_IP_BURST", default: 10 * burst, range: 1...10_000_000))
        c.roomCreatesPerMinute = try settings.int("ROOM_CREATE_PER_MIN", default: c.roomCreatesPerMinute, range: 1...1_000_000)
        c.directoryLookupsPerMinute = try settings.int(
            "USER_DIRECTORY_PER_MIN",
            default: c.directoryLookupsPerMinute,
            range: 1...1_000_000
        )
        c.maxRoomsPerConnection = try settings.int("MAX_ROOMS_PER_CONNECTION", default: c.maxRoomsPerConnection, range: 1...10_000)
        c.outboundQueueLimit = try settings.int("OUTBOUND_QUEUE_LIMIT", default: c.outboundQueueLimit, range: 8...1_000_000)
        c.allowedOrigins =
            settings.optional("ALLOWED_ORIGINS").map {
                $0.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            } ?? []
        c.auth = try TokenVerifierConfiguration.fromEnvironment(settings)
        c.pingInterval = try settings.milliseconds("PING_INTERVAL_MS", default: c.pingInterval)
        c.requestTimeout = try settings.milliseconds("REQUEST_TIMEOUT_MS", default: c.requestTimeout)
        c.heartbeatInterval = try settings.milliseconds("HEARTBEAT_INTERVAL_MS", default: c.heartbeatInterval)
        c.shutdownGrace = try settings.milliseconds("SHUTDOWN_GRACE_MS", default: c.shutdownGrace)
        c.presenceSyncInterval = try settings.milliseconds("PRESENCE_SYNC_INTERVAL_MS", default: c.presenceSyncInterval, allowZero: true)
        c.presenceSyncMaxEntries = try settings.int(
            "PRESENCE_SYNC_MAX_ENTRIES",
            default: c.presenceSyncMaxEntries,
            range: 1...ServiceAPI.PresenceSync.maxEntries
        )
        c.typingInterval = try settings.milliseconds("TYPING_INTERVAL_MS", default: c.typingInterval)
        c.webRoot = settings.optional("WEB_ROOT")
        c.maxConnections = try settings.int("MAX_CONNECTIONS", default: c.maxConnections, range: 1...10_000_000)
        c.maxConnectionsPerIP = try settings.int("MAX_CONNECTIONS_PER_IP", default: c.maxConnectionsPerIP, range: 0...10_000_000)
        c.requestHeadTimeout = try settings.milliseconds("REQUEST_HEAD_TIMEOUT_MS", default: c.requestHeadTimeout)
        c.requestBodyTimeout = try settings.milliseconds("REQUEST_BODY_TIMEOUT_MS", default: c.requestBodyTimeout)
        c.httpIdleTimeout = try settings.milliseconds("HTTP_IDLE_TIMEOUT_MS", default: c.httpIdleTimeout)
        if let text = settings.optional("TRUSTED_PROXIES") {
            c.trustedProxies = try text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }.map {
                item in
                guard let range = CIDR(item) else {
                    throw ConfigurationError("TRUSTED_PROXIES: '\(item)' is not an IP address or CIDR range")
                }
                return range
            }
        }
        return c
    }
}
