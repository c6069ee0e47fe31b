import ChatCore
import Foundation
import Logging
import Metrics
import NATS
import ServiceSupport

/// Decodes, validates and answers each `chat.svc.*` request. Every reply is a result or a `ChatError`
/// body with `Nats-Service-Error` (text) and `Nats-Service-Error-Code` (HTTP-style status) headers.
struct ChatHandlers: Sendable {
    let store: ChatStore
    let logger: Logger

    func register(on service: NATSService) {
        add(.createRoom, on: service) { (request: ServiceAPI.CreateRoom) throws(ChatError) in
            guard let name = RoomName(request.name) else {
                throw ChatError(.nameInvalid, "room name must be 1–\(RoomName.maxLength) characters without control characters")
            }
            return try await store.createRoom(name: name)
        }
        add(.listRooms, on: service) { (_: ServiceAPI.ListRooms) throws(ChatError) in
            ServiceAPI.RoomList(rooms: try await store.listRooms())
        }
        add(.getRoom, on: service) { (request: ServiceAPI.RoomRef) throws(ChatError) in
            try await store.room(try Self.room(request.roomID), withMembers: true)
        }
        add(.join, on: service) { (request: ServiceAPI.Join) throws(ChatError) in
            try await store.join(
                room: try Self.room(request.roomID), user: try Self.user(request.userID),
                username: try Self.username(request.username), gateway: try Self.gateway(request.gatewayID)
            )
        }
        add(.leave, on: service) { (request: ServiceAPI.Leave) throws(ChatError) in
            let reason = request.reason == "disconnect" ? "disconnect" : "leave"
            return try await store.leave(room: try Self.room(request.roomID), user: try Self.user(request.userID), reason: reason)
        }
        add(.members, on: service) { (request: ServiceAPI.RoomRef) throws(ChatError) in
            let room = try Self.room(request.roomID)
            return ServiceAPI.MemberList(roomID: room, members: try await store.members(of: room))
        }
        add(.send, on: service) { (request: ServiceAPI.Send) throws(ChatError) in
            var clientMessageID: ClientMessageID?
            if let raw = request.clientMessageID {
                guard let valid = ClientMessageID(raw) else {
                    throw ChatError(.invalidRequest, "client_msg_id must be 1–64 characters of A-Z a-z 0-9 _ -")
                }
                clientMessageID = valid
            }
            let result = try await store.send(
                room: try Self.room(request.roomID), user: try Self.user(request.userID),
                username: try Self.username(request.username), content: request.content, clientMessageID: clientMessageID
            )
            return request.ackOnly == true ? SendReply.ack(ServiceAPI.SendAck(result)) : .result(result)
        }
        add(.history, on: service) { (request: ServiceAPI.History) throws(ChatError) in
            if let limit = request.limit, limit < 1 { throw ChatError(.invalidRequest, "limit must be at least 1") }
            return try await store.history(room: try Self.room(request.roomID), limit: request.limit, before: request.before, after: request.after)
        }
        add(.heartbeat, on: service) { (request: ServiceAPI.Heartbeat) throws(ChatError) in
            let rejoin = try await store.heartbeat(gateway: try Self.gateway(request.gatewayID), connections: max(0, request.connections))
            return ServiceAPI.HeartbeatResult(rejoin: rejoin)
        }
        add(.presenceSync, on: service) { (request: ServiceAPI.PresenceSync) throws(ChatError) in
            guard request.partition == nil else {
                throw ChatError(.invalidRequest, "a partitioned statement goes to \(ChatNames.Endpoint.presenceSyncPartition.subject)")
            }
            return try await Self.syncPresence(request, store: store)
        }
        add(.presenceSyncPartition, on: service) { (request: ServiceAPI.PresenceSync) throws(ChatError) in
            guard request.partition != nil else { throw ChatError(.invalidRequest, "partition is required") }
            return try await Self.syncPresence(request, store: store)
        }
    }

    /// A gateway's statement (`ServiceAPI.PresenceSync`), whole or one partition of it: validated
    /// entirely before any record is touched.
    static func syncPresence(_ request: ServiceAPI.PresenceSync, store: ChatStore) async throws(ChatError) -> ServiceAPI.PresenceSyncResult {
        let gateway = try Self.gateway(request.gatewayID)
        let limit = ServiceAPI.PresenceSync.maxEntries
        var users: Set<UserID> = [], rooms: Set<RoomID> = []
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
        let removed = try await store.syncPresence(
            gateway: gateway, room: room, users: users, rooms: rooms, partition: partition, nowMilliseconds: ChatTime.now().milliseconds - age
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

    private func add<Request: Decodable & Sendable, Response: Encodable & Sendable>(
        _ endpoint: ChatNames.Endpoint, on service: NATSService,
        _ body: @escaping @Sendable (Request) async throws(ChatError) -> Response
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
                return ServiceReply(payload: ChatJSON.encode(try await body(request)))
            } catch {
                Counter(label: "chat_service_errors_total", dimensions: [("endpoint", endpoint.name), ("code", error.code.rawValue)]).increment()
                let level: Logger.Level = error.code == .internal || error.code == .unavailable ? .warning : .debug
                logger.log(level: level, "request failed", metadata: [
                    "endpoint": "\(endpoint.name)", "error_code": "\(error.code.rawValue)", "error": "\(error.error)",
                ])
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
