import ChatCore
import Foundation
import Logging
import Metrics
import NATS
import ServiceSupport

/// Decodes, validates and answers each `chat.svc.*` request. Every reply is a result or a `ChatError`
/// body with `Nats-Service-Error` (text) and `Nats-Service-Error-Code` (HTTP-style status) headers.
struct ChatHandlers: Sendable {
    let rooms: RoomDirectory
    let membership: Membership
    let messages: MessageLog
    let history: MessageHistory
    let presence: PresenceRegistry
    let pageBytes: Int
    let users: UserTokens
    let access: AccessStore
    let directory: UserDirectory
    let admin: RoomAdmin
    /// `CHAT_ALLOW_LEGACY_GATEWAYS`.
    let allowLegacyGateways: Bool
    let logger: Logger

    init(storage: ChatStorage, users: UserTokens, allowLegacyGateways: Bool = false, logger: Logger) {
        self.allowLegacyGateways = allowLegacyGateways
        (rooms, membership, messages) = (storage.rooms, storage.membership, storage.messages)
        (history, presence, pageBytes) = (storage.history, storage.presence, storage.pageBytes)
        (access, directory, admin) = (storage.access, storage.users, storage.admin)
        self.users = users
        self.logger = logger
    }

    func register(on service: NATSService) {
        for endpoint in [ChatNames.Endpoint.createRoom, .createPrivateRoom] {
            add(endpoint, on: service) { (request: ServiceAPI.CreateRoom, caller: Caller) throws(ChatError) in
                try await admin.create(request, by: try await principal(caller))
            }
        }
        add(.listRooms, on: service) { (request: ServiceAPI.ListRooms, caller: Caller) throws(ChatError) in
            let after = try request.after.map { text throws(ChatError) in
                guard let id = RoomID(text) else { throw ChatError(.invalidRequest, "after must be a room id (a UUID)") }
                return id
            }
            // The caller's rosters decide which private rooms exist for them.
            var roles: [RoomID: RoomRole] = [:]
            if let user = try await principal(caller) { roles = try await storage { try await access.roles(of: user.userID) } }
            let page = try await rooms.page(after: after, limit: try PageCut.limit(request.limit), maxBytes: pageBytes) {
                $0.visibility == .public || roles[$0.id] != nil
            }
            let paged = request.limit != nil || request.after != nil
            let views = page.rooms.map { room in
                var view = room
                view.myRole = roles[room.id]
                return view
            }
            return ServiceAPI.RoomList(rooms: views, hasMore: PageCut.hasMore(page.more, paged: paged), next: page.next?.rawValue)
        }
        add(.getRoom, on: service) { (request: ServiceAPI.RoomRef, caller: Caller) throws(ChatError) in
            let (room, standing) = try await visibleRoom(request.roomID, caller, for: .view)
            var counted = try await rooms.room(room.id, withMembers: true)
            counted.myRole = standing.role
            return counted
        }
        add(.join, on: service) { (request: ServiceAPI.Join, caller: Caller) throws(ChatError) in
            let (id, user) = (try Self.room(request.roomID), try Self.user(request.userID))
            var username = try Self.username(request.username)
            // The proven gateway; a legacy one (no credential) is the gateway it names.
            var gateway = try Self.gateway(request.gatewayID)
            if let proven = try await authenticated(caller, claiming: request.gatewayID) { gateway = proven }
            // Token mode: the user's own token says who joins (and under which name).
            let verified = try await acting(as: user, caller)
            if let verified { username = verified.username }
            var room = try await rooms.room(id, fresh: true)
            let standing = try await storage { try await access.standing(in: id, of: verified?.userID, fresh: true) }
            try Self.require(.join, room, standing)
            if room.visibility != .public, !caller.gatewayAppliesRemovals {
                throw ChatError(.unavailable, "this gateway predates private rooms (it would not cut off removed members); upgrade it")
            }
            room.myRole = standing.role
            let joined = try await membership.join(room: id, user: user, username: username, gateway: gateway)
            // A first join through a gateway is also its sign of life (see `PresenceRegistry.joined(via:)`).
            if joined { try await presence.joined(via: gateway) }
            let lastSeq = try await messages.lastSeq(of: id)
            room.memberCount = try await membership.count(of: id)
            return ServiceAPI.JoinResult(room: room, lastSeq: lastSeq, joined: joined, mute: standing.mute)
        }
        add(.leave, on: service) { (request: ServiceAPI.Leave, caller: Caller) throws(ChatError) in
            let (id, user) = (try Self.room(request.roomID), try Self.user(request.userID))
            let gateway = try await authenticated(caller)
            let reason = request.reason == "disconnect" ? "disconnect" : "leave"
            _ = try await rooms.room(id)
            // Only the gateway holding the member's connection removes it.
            let left = try await membership.leave(room: id, user: user, reason: reason, heldBy: gateway)
            return ServiceAPI.LeaveResult(roomID: id, left: left)
        }
        add(.members, on: service) { (request: ServiceAPI.ListMembers, caller: Caller) throws(ChatError) in
            let id = try Self.room(request.roomID)
            let after = try request.after.map { text throws(ChatError) in
                guard let user = UserID(text) else { throw ChatError(.invalidRequest, "after must be a user id (a UUID)") }
                return user
            }
            let limit = try PageCut.limit(request.limit)
            let (room, _) = try await visibleRoom(id.rawValue, caller, for: .members)
            if room.visibility != .public {
                return try await rosterPage(of: room, after: after, limit: limit, paged: request.limit != nil || request.after != nil)
            }
            let page = try await membership.page(of: id, after: after, limit: limit, maxBytes: pageBytes)
            let hasMore = PageCut.hasMore(page.more, paged: request.limit != nil || request.after != nil)
            return ServiceAPI.MemberList(roomID: id, members: page.members, hasMore: hasMore, next: page.next?.rawValue)
        }
        add(.send, on: service) { (request: ServiceAPI.Send, caller: Caller) throws(ChatError) in
            let gateway = try await authenticated(caller)
            var clientMessageID: ClientMessageID?
            if let raw = request.clientMessageID {
                guard let valid = ClientMessageID(raw) else {
                    throw ChatError(.invalidRequest, "client_msg_id must be 1–64 characters of A-Z a-z 0-9 _ -")
                }
                clientMessageID = valid
            }
            let (id, user, username) = (try Self.room(request.roomID), try Self.user(request.userID), try Self.username(request.username))
            try messages.validate(request.content)
            let room = try await rooms.room(id)
            // Token mode: the verified user, through whichever gateway (one user, several devices), and
            // its own namespace of client_msg_ids. Username mode: only a member this gateway holds.
            let verified = try await acting(as: user, caller)
            // Cached standings (`AccessStore.ttl`): no KV read per message.
            try Self.require(.send, room, try await storage { try await access.standing(in: id, of: verified?.userID) })
            try await membership.requireMember(room: id, user: user, heldBy: verified == nil ? gateway : nil)
            let result = try await messages.send(
                room: id,
                user: user,
                username: verified?.username ?? username,
                content: request.content,
                clientMessageID: clientMessageID,
                scope: verified.map { .user($0.userID) } ?? .username(username)
            )
            return request.ackOnly == true ? SendReply.ack(ServiceAPI.SendAck(result)) : .result(result)
        }
        add(.history, on: service) { (request: ServiceAPI.History, caller: Caller) throws(ChatError) in
            if let limit = request.limit, limit < 1 { throw ChatError(.invalidRequest, "limit must be at least 1") }
            let id = try Self.room(request.roomID)
            if caller.gatewayRead {
                try await gatewayMayRead(id, caller)
            } else {
                _ = try await visibleRoom(request.roomID, caller, for: .history)
            }
            return try await history.page(room: id, limit: request.limit, before: request.before, after: request.after)
        }
        add(.heartbeat, on: service) { (request: ServiceAPI.Heartbeat, caller: Caller) throws(ChatError) in
            // The proven gateway; a legacy one (no credential) is the gateway it names.
            var gateway = try Self.gateway(request.gatewayID)
            if let proven = try await authenticated(caller, claiming: request.gatewayID) { gateway = proven }
            let rejoin = try await presence.heartbeat(gateway: gateway, connections: max(0, request.connections))
            return ServiceAPI.HeartbeatResult(rejoin: rejoin)
        }
        add(.presenceSync, on: service) { (request: ServiceAPI.PresenceSync, caller: Caller) throws(ChatError) in
            guard request.partition == nil else {
                throw ChatError(.invalidRequest, "a partitioned statement goes to \(ChatNames.Endpoint.presenceSyncPartition.subject)")
            }
            _ = try await authenticated(caller, claiming: request.gatewayID)
            return try await Self.syncPresence(request, presence: presence)
        }
        add(.presenceSyncPartition, on: service) { (request: ServiceAPI.PresenceSync, caller: Caller) throws(ChatError) in
            guard request.partition != nil else { throw ChatError(.invalidRequest, "partition is required") }
            _ = try await authenticated(caller, claiming: request.gatewayID)
            return try await Self.syncPresence(request, presence: presence)
        }
        registerManagement(on: service)
    }

    /// A gateway's statement (`ServiceAPI.PresenceSync`), whole or one partition of it: validated
    /// entirely before any record is touched.
    static func syncPresence(
        _ request: ServiceAPI.PresenceSync,
        presence: PresenceRegistry
    ) async throws(ChatError) -> ServiceAPI.PresenceSyncResult {
        let gateway = try Self.gateway(request.gatewayID)
        let limit = ServiceAPI.PresenceSync.maxEntries
        var users: Set<UserID> = []
        var rooms: Set<RoomID> = []
        let room: RoomID?
        if let roomID = request.roomID {
            guard let listed = request.users, request.rooms == nil else {
                throw ChatError(.invalidRequest, "with room_id, give users (and no rooms)")
            }
            guard listed.count <= limit else { throw ChatError(.invalidRequest, "at most \(limit) users") }
            room = try Self.room(roomID)
            for text in listed { users.insert(try Self.user(text)) }
        } else {
            guard let listed = request.rooms, request.users == nil else {
                throw ChatError(.invalidRequest, "give room_id and users, or rooms")
            }
            guard listed.count <= limit else { throw ChatError(.invalidRequest, "at most \(limit) rooms") }
            room = nil
            for text in listed { rooms.insert(try Self.room(text)) }
        }
        if let partition = request.partition, !ServiceAPI.PresenceSync.isValidPartition(partition) {
            throw ChatError(.invalidRequest, "partition must be 1 to \(ServiceAPI.PresenceSync.maxPartitionLength) lowercase hex digits")
        }
        let partition = request.partition ?? ""
        guard users.allSatisfy({ $0.rawValue.hasPrefix(partition) }), rooms.allSatisfy({ $0.rawValue.hasPrefix(partition) }) else {
            throw ChatError(.invalidRequest, "every listed id must start with the partition \(partition)")
        }
        let age = request.snapshotAgeMilliseconds ?? 0
        guard (0...ServiceAPI.PresenceSync.maxSnapshotAgeMilliseconds).contains(age) else {
            throw ChatError(.invalidRequest, "snapshot_age_ms must be 0 to \(ServiceAPI.PresenceSync.maxSnapshotAgeMilliseconds)")
        }
        // Judged as of the snapshot: a member who joined after it is not listed, and must stay.
        let removed = try await presence.sync(
            gateway: gateway,
            room: room,
            users: users,
            rooms: rooms,
            partition: partition,
            snapshotAge: .milliseconds(age)
        )
        return ServiceAPI.PresenceSyncResult(removed: removed)
    }

    static func room(_ text: String) throws(ChatError) -> RoomID {
        guard let id = RoomID(text) else { throw ChatError(.invalidRequest, "room_id must be a UUID") }
        return id
    }

    static func user(_ text: String) throws(ChatError) -> UserID {
        guard let id = UserID(text) else { throw ChatError(.invalidRequest, "user_id must be a UUID") }
        return id
    }

    static func username(_ text: String) throws(ChatError) -> Username {
        guard let name = Username(text) else {
            throw ChatError(.usernameInvalid, "username must be 1–\(Username.maxLength) characters without control characters")
        }
        return name
    }

    static func gateway(_ text: String) throws(ChatError) -> GatewayID {
        guard let id = GatewayID(text) else { throw ChatError(.invalidRequest, "gateway_id must be 1–64 characters of A-Z a-z 0-9 _ -") }
        return id
    }

    func add<Request: Decodable & Sendable, Response: Encodable & Sendable>(
        _ endpoint: ChatNames.Endpoint,
        on service: NATSService,
        _ body: @escaping @Sendable (Request) async throws(ChatError) -> Response
    ) {
        add(endpoint, on: service) { (request: Request, _: Caller) throws(ChatError) in try await body(request) }
    }

    func add<Request: Decodable & Sendable, Response: Encodable & Sendable>(
        _ endpoint: ChatNames.Endpoint,
        on service: NATSService,
        _ body: @escaping @Sendable (Request, Caller) async throws(ChatError) -> Response
    ) {
        let logger = self.logger
        let requests = Counter(label: "chat_service_requests_total", dimensions: [("endpoint", endpoint.name)])
        let timer = Metrics.Timer(label: "chat_service_request_duration_seconds", dimensions: [("endpoint", endpoint.name)])
        service.addEndpoint(name: endpoint.name, subject: endpoint.subject, queueGroup: ChatNames.queueGroup) { message in
            let start = ContinuousClock.now
            requests.increment()
            defer { timer.recordInterval(since: start) }
            do throws(ChatError) {
                let request = try ChatJSON.decode(Request.self, from: message.payload.isEmpty ? Array("{}".utf8) : message.payload)
                return ServiceReply(payload: ChatJSON.encode(try await body(request, Caller(headers: message.headers))))
            } catch {
                Counter(label: "chat_service_errors_total", dimensions: [("endpoint", endpoint.name), ("code", error.code.rawValue)])
                    .increment()
                let level: Logger.Level = error.code == .internal || error.code == .unavailable ? .warning : .debug
                logger.log(
                    level: level,
                    "request failed",
                    metadata: [
                        "endpoint": "\(endpoint.name)", "error_code": "\(error.code.rawValue)", "error": "\(error.error)",
                    ]
                )
                var headers = NATSHeaders()
                headers["Chat-Error-Code"] = error.code.rawValue
                return .error(code: error.code.httpStatus, description: error.error, payload: ChatJSON.encode(error), headers: headers)
            }
        }
    }
}

/// The `message.send` reply: the stored message, or only its ids when the request asked for `ack_only`.
private enum SendReply: JSONWritable, Sendable {
    case result(ServiceAPI.SendResult)
    case ack(ServiceAPI.SendAck)

    func write(to writer: inout JSONWriter) {
        switch self {
        case .result(let result): result.write(to: &writer)
        case .ack(let ack): ack.write(to: &writer)
        }
    }

    func encode(to encoder: any Encoder) throws {
        switch self {
        case .result(let result): try result.encode(to: encoder)
        case .ack(let ack): try ack.encode(to: encoder)
        }
    }
}
