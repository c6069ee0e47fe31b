import ChatCore
import Foundation
import Logging
import NATS

/// All chat state lives in JetStream and KV; these parts are the only code that writes it:
///
/// - `RoomDirectory`: KV `chat_rooms` (`id.<room>` → room, `name.<hex(lowercased name)>` → room id).
/// - `Membership`: KV `chat_members` (`<room>.<user>` → member with the gateway that holds the connection),
///   with the UserJoined / UserLeft events on `chat.room.<room>.presence`.
/// - `MessageLog`: stream `CHAT_EVENTS`, subject `chat.room.<room>.msg`, one MessageSent.v1 per message;
///   `MessageHistory` reads pages of it.
/// - `IdempotencyRecords`: KV `chat_idempotency`, the `client_msg_id` of each send.
/// - `AccessStore`: KV `chat_access`, rosters, bans and mutes; `UserDirectory`: KV `chat_users`; `RoomAdmin`
///   changes them (and rooms) with the MemberAdded … RoomDeleted events on `chat.room.<room>.presence`.
/// - `PresenceRegistry`: KV `chat_gateways`, the gateways' signs of life, and the removal of members of
///   gateways that are gone.
///
/// Each part keeps its own small cache; none trusts another's. `ChatHandlers` wires them together.
public struct ChatStorage: Sendable {
    public let rooms: RoomDirectory
    public let membership: Membership
    public let messages: MessageLog
    let history: MessageHistory
    public let idempotency: IdempotencyRecords
    public let presence: PresenceRegistry
    public let leases: KeyValue
    public let access: AccessStore
    public let users: UserDirectory
    public let admin: RoomAdmin
    /// The byte budget of a list page on this connection (`PageCut.budget`).
    let pageBytes: Int

    /// The event stream's configuration; also used by the broadcaster's tests.
    public static func eventStreamConfiguration(_ configuration: ChatServiceConfiguration) -> StreamConfiguration {
        var stream = StreamConfiguration(name: ChatNames.eventStream, subjects: ChatNames.eventStreamSubjects)
        stream.description = "nats-chat messages (MessageSent.v1, the history) and room events"
        stream.maxMessagesPerSubject = Int64(configuration.retentionPerRoom)
        stream.duplicateWindow = configuration.duplicateWindow.inNanoseconds
        stream.replicas = configuration.replicas
        stream.allowDirect = true
        stream.maxMessageSize = Int32(configuration.maxContentBytes * 2 + 4096)
        // At the limit the oldest events of all rooms go first (discard old): sends keep working.
        stream.maxBytes = configuration.eventsMaxBytes
        return stream
    }

    /// Creates (or updates) the stream and buckets, then returns the parts.
    public static func open(
        connection: NATSConnection,
        configuration: ChatServiceConfiguration,
        logger: Logger
    ) async throws(NATSError) -> ChatStorage {
        let js = connection.jetStream
        let events = try await js.createOrUpdateStream(eventStreamConfiguration(configuration))
        func bucket(_ name: String, history: Int = 1, ttl: Duration? = nil) async throws(NATSError) -> KeyValue {
            var config = KeyValueConfiguration(bucket: name, history: history, ttl: ttl)
            config.replicas = configuration.replicas
            config.maxBytes = configuration.bucketMaxBytes
            return try await connection.keyValue(config)
        }
        let idempotencyBucket = try await bucket(ChatNames.idempotencyBucket, ttl: configuration.idempotencyTTL)
        // The idempotency filter works with the settings the stream and bucket actually have (an existing
        // bucket keeps its TTL; another replica may have set another duplicate window).
        let bucketTTL = try await js.streamInfo("KV_" + ChatNames.idempotencyBucket).config.maxAge
        let duplicateWindow = Duration.nanoseconds(min(events.config.duplicateWindow, configuration.duplicateWindow.inNanoseconds))
        let idempotency = IdempotencyRecords(
            bucket: idempotencyBucket,
            connection: connection,
            enabled: configuration.idempotencyFilter,
            bucketTTL: .nanoseconds(bucketTTL),
            configuredTTL: configuration.idempotencyTTL,
            duplicateWindow: duplicateWindow,
            logger: logger
        )
        let members = try await bucket(ChatNames.membersBucket)
        let roomEvents = PresenceEvents(js: js, duplicateWindow: duplicateWindow)
        let membership = Membership(members: members, events: roomEvents)
        let rooms = RoomDirectory(
            rooms: try await bucket(ChatNames.roomsBucket),
            members: members,
            js: js,
            maxRooms: configuration.maxRooms,
            logger: logger
        )
        let access = AccessStore(bucket: try await bucket(ChatNames.accessBucket))
        let users = UserDirectory(bucket: try await bucket(ChatNames.usersBucket))
        return ChatStorage(
            rooms: rooms,
            membership: membership,
            messages: MessageLog(js: js, configuration: configuration, idempotency: idempotency, logger: logger),
            history: MessageHistory(
                js: js,
                defaultLimit: configuration.historyDefaultLimit,
                maxLimit: configuration.historyMaxLimit,
                maxBytes: PageCut.budget(maxPayload: connection.maxPayload)
            ),
            idempotency: idempotency,
            presence: PresenceRegistry(
                gateways: try await bucket(ChatNames.gatewaysBucket, ttl: .seconds(3600)),
                membership: membership,
                configuration: configuration,
                logger: logger
            ),
            leases: try await bucket(ChatNames.leasesBucket),
            access: access,
            users: users,
            admin: RoomAdmin(
                rooms: rooms,
                access: access,
                membership: membership,
                users: users,
                events: roomEvents,
                js: js,
                memberRecords: members,
                idempotencyRecords: idempotencyBucket,
                configuration: configuration,
                logger: logger
            ),
            pageBytes: PageCut.budget(maxPayload: connection.maxPayload)
        )
    }

    /// Errors leaving the storage parts are ChatErrors; storage failures become `unavailable`.
    static func chatError(_ error: any Error) -> ChatError {
        switch error {
        case let error as ChatError: error
        case let error as NATSError: ChatError(.unavailable, "chat storage unavailable (\(error.kind.rawValue))")
        default: ChatError(.internal, "internal error")
        }
    }
}
