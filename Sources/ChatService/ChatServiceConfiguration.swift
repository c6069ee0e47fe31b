import ChatCore
import NATS
import ServiceSupport

/// Settings of the chat-service, from environment variables (documented in docs/configuration.md).
public struct ChatServiceConfiguration: Sendable {
    public var nats: NATSConfiguration
    /// Host and port of the /health + /metrics HTTP server (`HTTP_HOST`, `HTTP_PORT`; 0 picks a free port).
    public var httpHost = "0.0.0.0"
    public var httpPort = 3001
    /// `CHAT_EVENTS_MAX_BYTES`: the size limit of the CHAT_EVENTS stream; beyond it the oldest events
    /// (of any room) are discarded.
    public var eventsMaxBytes: Int64 = 4 << 30
    /// `CHAT_KV_MAX_BYTES`: the size limit of each chat_* KV bucket; at it, writes fail (`unavailable`).
    public var bucketMaxBytes: Int64 = 1 << 30
    /// Messages kept per room (`CHAT_RETENTION_PER_ROOM`).
    public var retentionPerRoom = 10_000
    /// Max message size in UTF-8 bytes (`CHAT_MAX_CONTENT_BYTES`).
    public var maxContentBytes = 4096
    /// Rooms the system may hold (`CHAT_MAX_ROOMS`, 0 = no limit); `room.create` then answers `room_limit_reached`.
    public var maxRooms = 10_000
    /// Users one private room's roster may hold (`CHAT_MAX_ROSTER`); invites then answer `roster_full`.
    public var maxRoster = 10_000
    /// Rooms one user may own (`CHAT_MAX_OWNED_ROOMS`); creating more answers `owned_room_limit`.
    public var maxOwnedRooms = 100
    /// Invitations one user may send per minute on one replica (`CHAT_INVITES_PER_MIN`); then `rate_limited`.
    public var invitesPerMinute = 60
    /// `CHAT_ALLOW_LEGACY_GATEWAYS`: accept member requests from gateways that send no gateway
    /// credential (releases before the credential, e.g. a5fbf68), for a rolling upgrade only. Their
    /// joins, sends and leaves are then taken on their word, as those releases did (docs/access.md).
    public var allowLegacyGateways = false
    public var historyDefaultLimit = 50
    public var historyMaxLimit = 200
    /// How long a `client_msg_id` is remembered (`CHAT_IDEMPOTENCY_TTL_MS`, default 24 h).
    public var idempotencyTTL: Duration = .seconds(24 * 3600)
    /// Skip the idempotency read of sends whose `client_msg_id` cannot have a record
    /// (`CHAT_IDEMPOTENCY_FILTER`, default on; see `IdempotencyFilter`). Off: every such send reads the bucket.
    public var idempotencyFilter = true
    /// JetStream duplicate window of the event stream (`CHAT_DUPLICATE_WINDOW_MS`, default 2 min).
    public var duplicateWindow: Duration = .seconds(120)
    /// A gateway that has not sent a heartbeat for this long is dead; its members are removed
    /// (`CHAT_PRESENCE_TIMEOUT_MS`, default 6 s; gateways beat every 2 s).
    public var presenceTimeout: Duration = .seconds(6)
    public var presenceSweepInterval: Duration = .seconds(1)
    /// A gateway's presence sync (`gateway.presence_sync`) removes only member records older than this
    /// (`CHAT_PRESENCE_SYNC_GRACE_MS`, default 10 s): a join whose reply has not reached the gateway
    /// yet is not in its statement. Must exceed the gateways' `REQUEST_TIMEOUT_MS`.
    public var presenceSyncGrace: Duration = .seconds(10)
    /// How often the presence leader also checks every member against the gateway records
    /// (`CHAT_PRESENCE_RECONCILE_MS`, default 30 s; also right after a NATS reconnect and on becoming
    /// leader): members of a gateway declared dead that came back (a lost delete) are removed again.
    public var presenceReconcileInterval: Duration = .seconds(30)
    /// Stream and bucket replicas (`CHAT_REPLICAS`; 3 on a 3-node cluster).
    public var replicas = 1
    /// `AUTH_JWT_*` (token mode): joins and sends must carry the user's token, verified here. Set the
    /// same values as on the gateways. nil: username mode.
    public var auth: TokenVerifierConfiguration?
    /// A unique name of this instance (`INSTANCE_ID`, default random).
    public var instanceID = "chat-" + String(makeUUID().prefix(8))

    public init(nats: NATSConfiguration) { self.nats = nats }

    public static func fromEnvironment(_ settings: Settings = Settings()) throws -> ChatServiceConfiguration {
        var configuration = ChatServiceConfiguration(nats: try settings.nats(name: "chat-service", inboxPrefix: "_INBOX_chat"))
        configuration.httpHost = settings.string("HTTP_HOST", default: configuration.httpHost)
        configuration.httpPort = try settings.int("HTTP_PORT", default: configuration.httpPort, range: 0...65535)
        configuration.retentionPerRoom = try settings.int(
            "CHAT_RETENTION_PER_ROOM",
            default: configuration.retentionPerRoom,
            range: 1...100_000_000
        )
        configuration.eventsMaxBytes = Int64(
            try settings.int("CHAT_EVENTS_MAX_BYTES", default: Int(configuration.eventsMaxBytes), range: (1 << 20)...(1 << 50))
        )
        configuration.bucketMaxBytes = Int64(
            try settings.int("CHAT_KV_MAX_BYTES", default: Int(configuration.bucketMaxBytes), range: (1 << 20)...(1 << 50))
        )
        configuration.maxContentBytes = try settings.int(
            "CHAT_MAX_CONTENT_BYTES",
            default: configuration.maxContentBytes,
            range: 1...512 * 1024
        )
        configuration.historyDefaultLimit = try settings.int(
            "CHAT_HISTORY_DEFAULT_LIMIT",
            default: configuration.historyDefaultLimit,
            range: 1...10_000
        )
        configuration.historyMaxLimit = try settings.int(
            "CHAT_HISTORY_MAX_LIMIT",
            default: configuration.historyMaxLimit,
            range: 1...10_000
        )
        configuration.idempotencyTTL = try settings.milliseconds("CHAT_IDEMPOTENCY_TTL_MS", default: configuration.idempotencyTTL)
        configuration.idempotencyFilter = try settings.bool("CHAT_IDEMPOTENCY_FILTER", default: configuration.idempotencyFilter)
        configuration.duplicateWindow = try settings.milliseconds("CHAT_DUPLICATE_WINDOW_MS", default: configuration.duplicateWindow)
        configuration.presenceTimeout = try settings.milliseconds("CHAT_PRESENCE_TIMEOUT_MS", default: configuration.presenceTimeout)
        configuration.maxRooms = try settings.int("CHAT_MAX_ROOMS", default: configuration.maxRooms, range: 0...10_000_000)
        configuration.allowLegacyGateways = try settings.bool("CHAT_ALLOW_LEGACY_GATEWAYS", default: configuration.allowLegacyGateways)
        configuration.maxRoster = try settings.int("CHAT_MAX_ROSTER", default: configuration.maxRoster, range: 2...100_000)
        configuration.maxOwnedRooms = try settings.int("CHAT_MAX_OWNED_ROOMS", default: configuration.maxOwnedRooms, range: 1...1_000_000)
        configuration.invitesPerMinute = try settings.int(
            "CHAT_INVITES_PER_MIN",
            default: configuration.invitesPerMinute,
            range: 1...100_000
        )
        configuration.presenceSweepInterval = try settings.milliseconds(
            "CHAT_PRESENCE_SWEEP_MS",
            default: configuration.presenceSweepInterval
        )
        configuration.presenceSyncGrace = try settings.milliseconds(
            "CHAT_PRESENCE_SYNC_GRACE_MS",
            default: configuration.presenceSyncGrace,
            allowZero: true
        )
        configuration.presenceReconcileInterval = try settings.milliseconds(
            "CHAT_PRESENCE_RECONCILE_MS",
            default: configuration.presenceReconcileInterval
        )
        configuration.replicas = try settings.int("CHAT_REPLICAS", default: configuration.replicas, range: 1...5)
        configuration.instanceID = settings.string("INSTANCE_ID", default: configuration.instanceID)
        configuration.auth = try TokenVerifierConfiguration.fromEnvironment(settings)
        return configuration
    }
}
