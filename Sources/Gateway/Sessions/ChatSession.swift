import ChatCore
import Foundation
import Logging
import NATS
import NIOCore
import NIOWebSocket
import ServiceSupport

/// One WebSocket connection's protocol handling: reads client frames in order, answers each one, and
/// keeps the connection's room memberships. Driven by the connection's `SessionInbox`, one message at
/// a time.
struct ChatSession {
    let connection: ClientConnection
    let gateway: GatewayCore
    var logger: Logger
    var rooms: [RoomID] = []  // in join order; the last is the default room
    var workers: [RoomID: RoomWorker] = [:]
    var bucket: TokenBucket
    var lastTyping: [RoomID: ContinuousClock.Instant] = [:]

    init(connection: ClientConnection, gateway: GatewayCore) {
        self.connection = connection
        self.gateway = gateway
        self.logger = connection.logger
        self.bucket = TokenBucket(rate: gateway.configuration.ratePerSecond, burst: gateway.configuration.rateBurst)
    }

    var chat: ChatServiceClient { gateway.chat }

    /// Whose sends share a budget: the verified user in token mode; in username mode the name (what
    /// is all there is of a user there — a client using several names is held by its address's limit).
    var rateKey: String {
        gateway.auth.requiresToken ? "u:" + connection.userID.rawValue : "n:" + connection.username.rawValue
    }

    func send(_ bytes: [UInt8]) { connection.send(bytes) }

    func sendError(_ error: ChatError, clientMessageID: String? = nil, retryAfterMilliseconds: Int? = nil, roomID: String? = nil) {
        gateway.metrics.error(error.code).increment()
        send(
            ServerFrame.error(
                error,
                clientMessageID: clientMessageID,
                retryAfterMilliseconds: retryAfterMilliseconds,
                roomID: roomID.map { String($0.prefix(64)) }
            )
        )
    }

    /// A binary message: the protocol is JSON text.
    func handleBinary() {
        gateway.metrics.framesIn("binary").increment()
        sendError(ChatError(.invalidRequest, "binary frames are not supported; send JSON text frames"))
    }

    /// Handles one inbound text message (UTF-8, validated by the WebSocket layer).
    mutating func handle(text: ByteBuffer) async {
        await forgetRevokedRooms()
        let bytes = Array(text.readableBytesView)
        let frame: ClientFrame
        do {
            frame = try ClientFrame.parse(bytes)
        } catch {
            gateway.metrics.framesIn("invalid").increment()
            sendError(error)
            return
        }
        gateway.metrics.framesIn(frame.type).increment()
        do throws(ChatError) {
            try await handle(frame)
        } catch {
            var clientMessageID: String?
            if case .message(_, _, let id) = frame { clientMessageID = id }
            if error.code == .internal || error.code == .unavailable {
                logger.warning(
                    "request failed",
                    metadata: ["type": "\(frame.type)", LogKey.errorCode: "\(error.code.rawValue)", LogKey.error: "\(error.error)"]
                )
            }
            sendError(error, clientMessageID: clientMessageID, roomID: frame.roomID)
        }
    }

    private func roomID(_ text: String) throws(ChatError) -> RoomID {
        guard let id = RoomID(text) else { throw ChatError(.roomNotFound, "room \(text.prefix(64)) does not exist (room ids are UUIDs)") }
        return id
    }

    private func joinedRoom(_ text: String?) throws(ChatError) -> RoomID {
        if let text {
            let id = try roomID(text)
            guard rooms.contains(id) else { throw ChatError(.notInRoom, "you are not in room \(id); join it first") }
            return id
        }
        guard let last = rooms.last else { throw ChatError(.notInRoom, "join a room first") }
        return last
    }

    private mutating func handle(_ frame: ClientFrame) async throws(ChatError) {
        switch frame {
        case .join(let text, let since):
            try await join(try roomID(text), since: since)

        case .leave(let text):
            let room = try joinedRoom(text)
            let _: ServiceAPI.LeaveResult = try await chat.call(
                .leave,
                ServiceAPI.Leave(roomID: room.rawValue, userID: connection.userID.rawValue, reason: "leave")
            )
            detach(room)
            send(ServerFrame.left(roomID: room))

        case .message(let content, let text, let clientMessageID):
            let room = try joinedRoom(text)
            let now = ContinuousClock.now
            var decision = bucket.take(now: now)
            if case .allowed = decision { decision = gateway.limits.send(user: rateKey, address: connection.address, now: now) }
            if case .limited(let retryAfter) = decision {
                gateway.metrics.error(.rateLimited).increment()
                send(
                    ServerFrame.error(
                        ChatError(.rateLimited, "too many messages; slow down"),
                        clientMessageID: clientMessageID,
                        retryAfterMilliseconds: retryAfter
                    )
                )
                return
            }
            let start = ContinuousClock.now
            let ack: ServiceAPI.SendAck = try await chat.call(
                .send,
                ServiceAPI.Send(
                    roomID: room.rawValue,
                    userID: connection.userID.rawValue,
                    username: connection.username.rawValue,
                    content: content,
                    clientMessageID: clientMessageID,
                    ackOnly: true
                ),
                userToken: connection.token
            )
            gateway.metrics.sendLatency.recordInterval(since: start)
            if let clientMessageID { send(ServerFrame.ack(clientMessageID: clientMessageID, ack)) }

        case .history(let text, let limit, let before):
            let room = try roomID(text)
            if let limit, limit < 1 { throw ChatError(.invalidRequest, "limit must be at least 1") }
            let result: ServiceAPI.HistoryResult = try await chat.call(
                .history,
                ServiceAPI.History(roomID: room.rawValue, limit: limit, before: before),
                userToken: connection.token
            )
            send(ServerFrame.history(result))

        case .members(let text, let limit, let after):
            let room = try roomID(text)
            let request = ServiceAPI.ListMembers(roomID: room.rawValue, limit: limit, after: after)
            let list: ServiceAPI.MemberList = try await chat.call(.members, request, userToken: connection.token)
            send(ServerFrame.members(list))

        case .roomList(let limit, let after):
            let list: ServiceAPI.RoomList = try await chat.call(
                .listRooms,
                ServiceAPI.ListRooms(limit: limit, after: after),
                userToken: connection.token
            )
            send(ServerFrame.roomList(list))

        case .typing(let text):
            let room = try joinedRoom(text)
            // A muted user's notices go nowhere (quietly: typing is best effort).
            if connection.isMuted(in: room, atMilliseconds: ChatTime.now().milliseconds) { return }
            let now = ContinuousClock.now
            if let last = lastTyping[room], now - last < gateway.configuration.typingInterval { return }
            lastTyping[room] = now
            let notice = TypingNotice(userID: connection.userID, username: connection.username)
            do {
                try gateway.connection.publish(ChatNames.typingSubject(room), payload: notice.encoded(room: room))
            } catch {
                throw ChatError(.unavailable, "could not send typing notice")
            }

        case .auth(let token):
            try await refresh(token)
        }
    }

    /// An `auth` frame: a fresh token for the socket. A valid one of the same user replaces the
    /// socket's token and expiry; one of another user ends the socket (4003: an identity never changes
    /// on an open socket, since rooms and presence are keyed on it); an invalid one is answered with
    /// the error and changes nothing.
    private func refresh(_ token: String) async throws(ChatError) {
        guard let verified = try await gateway.auth.verifyRefresh(token) else {
            throw ChatError(.authNotEnabled, "auth frames are for token mode; this gateway identifies clients by username")
        }
        guard verified.userID == connection.userID else {
            sendError(ChatError(.forbidden, "the token is for another user; open a new connection with it"))
            connection.close(WebSocketStateMachine.otherUserCode, reason: "token for another user")
            return
        }
        connection.refresh(token: token, expiresAt: verified.expiresAt)
        send(ServerFrame.authenticated(expiresAt: verified.expiresAt))
    }

    /// The join at the chat-service: idempotent (`joined: false` when already a member), it reports the
    /// room's current last seq.
    private func joinAtService(_ room: RoomID) async throws(ChatError) -> ServiceAPI.JoinResult {
        try await chat.call(
            .join,
            ServiceAPI.Join(
                roomID: room.rawValue,
                userID: connection.userID.rawValue,
                username: connection.username.rawValue,
                gatewayID: gateway.configuration.presenceID
            ),
            userToken: connection.token
        )
    }

    private mutating func join(_ room: RoomID, since: UInt64?) async throws(ChatError) {
        if rooms.contains(room) {
            // Already joined: answer again so a client can re-sync, but change nothing.
            let result = try await joinAtService(room)
            send(ServerFrame.joined(room: result.room, lastSeq: result.lastSeq))
            return
        }
        guard rooms.count < gateway.configuration.maxRoomsPerConnection else {
            throw ChatError(.tooManyRooms, "a connection may join at most \(gateway.configuration.maxRoomsPerConnection) rooms")
        }
        let worker: RoomWorker
        do {
            worker = try await gateway.hub.retain(room)
        } catch {
            throw ChatError(.unavailable, "could not subscribe to the room")
        }
        let result: ServiceAPI.JoinResult
        do {
            result = try await joinAtService(room)
        } catch {
            gateway.hub.release(room)
            throw error
        }
        rooms.append(room)
        workers[room] = worker
        connection.setMute(room, untilMilliseconds: result.muted == true ? .some(result.mutedUntilMilliseconds) : .none)
        send(ServerFrame.joined(room: result.room, lastSeq: result.lastSeq))
        await worker.add(connection, since: since, joinSeq: result.lastSeq, restricted: result.room.visibility != .public)
    }

    /// Rooms a room worker took this connection out of (`ClientConnection.revoke`); a leave is sent only
    /// where the chat-service still has the member (not after a removal, ban or deletion).
    private mutating func forgetRevokedRooms() async {
        for (room, leave) in connection.takeRevoked() where rooms.contains(room) {
            detach(room)
            if leave {
                let request = ServiceAPI.Leave(roomID: room.rawValue, userID: connection.userID.rawValue, reason: "leave")
                let _: ServiceAPI.LeaveResult? = try? await chat.call(.leave, request)
            }
        }
    }

    private mutating func detach(_ room: RoomID) {
        rooms.removeAll { $0 == room }
        lastTyping[room] = nil
        workers.removeValue(forKey: room)?.remove(connection.id)
        gateway.hub.release(room)
    }

    /// The socket closed: stop delivering and leave every room (members see user_left). The leaves go
    /// out together and share one deadline: one unreachable room must not hold up the others.
    mutating func disconnected() async {
        await forgetRevokedRooms()
        let joined = rooms
        for room in joined { detach(room) }
        let deadline = ContinuousClock.now + Self.leaveDeadline
        await withDiscardingTaskGroup { group in
            for room in joined {
                group.addTask { [self] in await leaveAfterDisconnect(room, deadline: deadline) }
            }
        }
    }

    /// How long the leaves after a disconnect are retried in all.
    static let leaveDeadline = Duration.seconds(30)

    /// A leave that cannot reach the chat-service (a replica restarting, NATS reconnecting) is retried
    /// until `deadline`: this gateway stays alive, so presence expiry would never remove the member.
    private func leaveAfterDisconnect(_ room: RoomID, deadline: ContinuousClock.Instant) async {
        let request = ServiceAPI.Leave(roomID: room.rawValue, userID: connection.userID.rawValue, reason: "disconnect")
        var delay = Duration.milliseconds(200)
        while true {
            do {
                let _: ServiceAPI.LeaveResult = try await chat.call(.leave, request)
                return
            } catch {
                guard Self.worthRetrying(error), !Task.isCancelled, ContinuousClock.now + delay < deadline else {
                    logger.warning("could not leave after disconnect", metadata: ["room_id": "\(room)", "error": "\(error)"])
                    return
                }
                gateway.metrics.leaveRetries.increment()
            }
            try? await Task.sleep(for: delay)
            delay = min(delay * 2, .seconds(3))
        }
    }

    private static func worthRetrying(_ error: ChatError) -> Bool {
        error.code == .unavailable || error.code == .internal
    }
}
