// chat-baseline: a single-process, in-memory chat broadcast server on the same stack as the gateway
// (Hummingbird 2 WebSocket, per-connection batched outbound queue + writer task), without NATS,
// JetStream or a chat-service. It is a benchmark fixture, not a product: chat-bench measured against
// it shows what the distributed path (gateway → chat-service → JetStream → broadcaster → gateway)
// costs.
//
// `--direct-writes` replaces the queue + writer task by writes straight to each member's channel on its
// event loop (one task per loop per broadcast, one flush per socket): an experiment for the gateway's
// per-frame write cost (see BENCHMARKS.md), without backpressure (a slow reader grows NIO's buffer).
//
// Protocol subset (the one chat-bench uses): `connected` on upgrade; `join` → `joined` (+ user_joined
// to the room); `message` → `message` to every member including the sender, with a per-room `seq`
// (1, 2, 3 …), plus `ack` when the client sent `client_msg_id`; `leave`; REST POST/GET /api/v1/rooms;
// GET /health. Nothing is stored beyond the process.
//
//   chat-baseline [--host 127.0.0.1] [--port 3100]    (port 0 = any free port; the port is printed)
import Foundation
import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOWebSocket
import Synchronization

// MARK: outbound queue (same design as the gateway's: bounded, batched, one writer task)

final class Outbound: Sendable {
    private struct State {
        var items: [ByteBuffer] = []
        var waiter: CheckedContinuation<Void, Never>?
        var finished = false
    }
    private let state = Mutex(State())
    let limit = 1024

    /// False when the queue is full (slow client) or finished.
    @discardableResult
    func append(_ buffer: ByteBuffer) -> Bool {
        let (ok, waiter): (Bool, CheckedContinuation<Void, Never>?) = state.withLock { s in
            guard !s.finished, s.items.count < limit else { return (false, nil) }
            s.items.append(buffer)
            defer { s.waiter = nil }
            return (true, s.waiter)
        }
        waiter?.resume()
        return ok
    }

    func finish() {
        let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
            s.finished = true
            defer { s.waiter = nil }
            return s.waiter
        }
        waiter?.resume()
    }

    func takeAll() async -> [ByteBuffer]? {
        while true {
            let batch: [ByteBuffer]? = state.withLock { s in
                if !s.items.isEmpty {
                    defer { s.items = [] }
                    return s.items
                }
                return s.finished ? [] : nil
            }
            if let batch { return batch.isEmpty ? nil : batch }
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let ready = state.withLock { s in
                    if !s.items.isEmpty || s.finished { return true }
                    s.waiter = c
                    return false
                }
                if ready { c.resume() }
            }
        }
    }
}

// MARK: rooms

struct RoomInfo: Codable, Sendable {
    var id: String
    var name: String
    var created_at: String
    var member_count: Int
}

final class Member: Sendable {
    let connectionID: Int
    let userID: String
    let username: String
    let outbound: Outbound
    /// Set with --direct-writes: frames go straight to the channel on its event loop.
    let channel: (any Channel)?
    init(connectionID: Int, userID: String, username: String, outbound: Outbound, channel: (any Channel)?) {
        self.connectionID = connectionID
        self.userID = userID
        self.username = username
        self.outbound = outbound
        self.channel = channel
    }

    /// Queues one frame for this member (in order with everything else sent to it).
    func send(_ buffer: ByteBuffer) {
        if let channel {
            channel.eventLoop.execute { channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .text, data: buffer), promise: nil) }
        } else {
            outbound.append(buffer)
        }
    }
}

/// Sends one frame to many members: with --direct-writes one event-loop task per loop writes it to
/// all of that loop's members and flushes each once; otherwise one queue append per member.
func broadcast(_ buffer: ByteBuffer, to members: Dictionary<Int, Member>.Values) {
    guard directWrites else {
        for m in members { m.outbound.append(buffer) }
        return
    }
    var byLoop: [ObjectIdentifier: (any EventLoop, [any Channel])] = [:]
    for m in members {
        guard let channel = m.channel else { continue }
        byLoop[ObjectIdentifier(channel.eventLoop), default: (channel.eventLoop, [])].1.append(channel)
    }
    let frame = WebSocketFrame(fin: true, opcode: .text, data: buffer)
    for (loop, channels) in byLoop.values {
        loop.execute {
            for channel in channels { channel.write(frame, promise: nil) }
            for channel in channels { channel.flush() }
        }
    }
}

final class Room: Sendable {
    struct State {
        var seq: UInt64 = 0
        var members: [Int: Member] = [:]
    }
    let id: String
    let name: String
    let createdAt: String
    let state = Mutex(State())

    init(id: String, name: String, createdAt: String) {
        self.id = id
        self.name = name
        self.createdAt = createdAt
    }

    var info: RoomInfo { RoomInfo(id: id, name: name, created_at: createdAt, member_count: state.withLock { $0.members.count }) }
}

final class Rooms: Sendable {
    private let rooms = Mutex<(byID: [String: Room], byName: [String: Room])>(([:], [:]))

    func create(name: String) -> (Room, created: Bool) {
        rooms.withLock { r in
            if let existing = r.byName[name.lowercased()] { return (existing, false) }
            let room = Room(id: UUID().uuidString.lowercased(), name: name, createdAt: Date().formatted(.iso8601))
            r.byID[room.id] = room
            r.byName[name.lowercased()] = room
            return (room, true)
        }
    }

    func room(_ id: String) -> Room? { rooms.withLock { $0.byID[id] } }
    var all: [Room] { rooms.withLock { Array($0.byID.values) } }
}

// MARK: frames

func encode(_ value: some Encodable) -> ByteBuffer {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return ByteBuffer(bytes: (try? encoder.encode(value)) ?? Data("{}".utf8))
}

struct ClientFrame: Decodable {
    var type: String
    var room_id: String?
    var content: String?
    var client_msg_id: String?
}

struct MessageFrame: Encodable {
    var type = "message"
    var message_id: String
    var room_id: String
    var user_id: String
    var username: String
    var content: String
    var timestamp: String
    var seq: UInt64
    var client_msg_id: String?
}

struct AckFrame: Encodable {
    var type = "ack"
    var client_msg_id: String
    var message_id: String
    var seq: UInt64
    var room_id: String
}

struct ErrorFrame: Encodable {
    var type = "error"
    var error: String
    var code: String
    var client_msg_id: String?
}

func errorFrame(_ code: String, _ text: String, clientMessageID: String? = nil) -> ByteBuffer {
    encode(ErrorFrame(error: text, code: code, client_msg_id: clientMessageID))
}

// MARK: one connection

struct Session {
    let member: Member
    let rooms: Rooms
    var joined: [Room] = []

    mutating func handle(_ text: String) {
        let frame: ClientFrame
        do {
            frame = try JSONDecoder().decode(ClientFrame.self, from: Data(text.utf8))
        } catch {
            member.send(errorFrame("invalid_request", "invalid JSON"))
            return
        }
        switch frame.type {
        case "join":
            guard let id = frame.room_id, let room = rooms.room(id) else {
                member.send(errorFrame("room_not_found", "room not found"))
                return
            }
            if joined.contains(where: { $0 === room }) {
                member.send(encode(Joined(room_id: room.id, room: room.info, last_seq: room.state.withLock { $0.seq })))
                return
            }
            let notice = encode(Presence(type: "user_joined", room_id: room.id, user_id: member.userID, username: member.username))
            let info = room.info
            room.state.withLock { s in
                // Under the room's lock: every message after last_seq reaches this member, in order.
                member.send(
                    encode(
                        Joined(
                            room_id: room.id,
                            room: RoomInfo(id: info.id, name: info.name, created_at: info.created_at, member_count: s.members.count + 1),
                            last_seq: s.seq
                        )
                    )
                )
                s.members[member.connectionID] = member
                broadcast(notice, to: s.members.values)
            }
            joined.append(room)
        case "leave":
            guard let room = target(frame.room_id) else { return }
            leave(room)
            member.send(encode(["type": "left", "room_id": room.id]))
        case "message":
            guard let content = frame.content, !content.isEmpty else {
                member.send(errorFrame("invalid_request", "missing field 'content'", clientMessageID: frame.client_msg_id))
                return
            }
            guard let room = target(frame.room_id) else { return }
            let messageID = UUID().uuidString.lowercased()
            let timestamp = Date().formatted(.iso8601)
            let seq: UInt64 = room.state.withLock { s in
                s.seq += 1
                let bytes = encode(
                    MessageFrame(
                        message_id: messageID,
                        room_id: room.id,
                        user_id: member.userID,
                        username: member.username,
                        content: content,
                        timestamp: timestamp,
                        seq: s.seq,
                        client_msg_id: frame.client_msg_id
                    )
                )
                broadcast(bytes, to: s.members.values)
                return s.seq
            }
            if let id = frame.client_msg_id {
                member.send(encode(AckFrame(client_msg_id: id, message_id: messageID, seq: seq, room_id: room.id)))
            }
        default:
            member.send(errorFrame("invalid_request", "message type '\(frame.type.prefix(32))' is not supported by chat-baseline"))
        }
    }

    func target(_ id: String?) -> Room? {
        if let id {
            if let room = joined.first(where: { $0.id == id }) { return room }
            member.send(errorFrame("not_in_room", "you are not in room \(id.prefix(64)); join it first"))
            return nil
        }
        guard let last = joined.last else {
            member.send(errorFrame("not_in_room", "join a room first"))
            return nil
        }
        return last
    }

    mutating func leave(_ room: Room) {
        joined.removeAll { $0 === room }
        let notice = encode(Presence(type: "user_left", room_id: room.id, user_id: member.userID, username: member.username))
        room.state.withLock { s in
            s.members[member.connectionID] = nil
            broadcast(notice, to: s.members.values)
        }
    }

    mutating func disconnected() {
        for room in joined { leave(room) }
    }
}

struct Joined: Encodable {
    var type = "joined"
    var room_id: String
    var room: RoomInfo
    var last_seq: UInt64
}

struct Presence: Encodable {
    var type: String
    var room_id: String
    var user_id: String
    var username: String
}

// MARK: server

var host = "127.0.0.1"
var port = 3100
nonisolated(unsafe) var directWrites = false
var arguments = CommandLine.arguments.dropFirst().makeIterator()
while let argument = arguments.next() {
    switch argument {
    case "--host": host = arguments.next() ?? host
    case "--port": port = Int(arguments.next() ?? "") ?? port
    case "--direct-writes": directWrites = true
    default:
        FileHandle.standardError.write(Data("usage: chat-baseline [--host 127.0.0.1] [--port 3100] [--direct-writes]\n".utf8))
        exit(2)
    }
}

let rooms = Rooms()
let nextConnection = Atomic<Int>(0)
var logger = Logger(label: "chat-baseline")
logger.logLevel = .warning

/// Request context that keeps the channel (for --direct-writes).
struct BaselineContext: RequestContext, WebSocketRequestContext {
    var coreContext: CoreRequestContextStorage
    let webSocket: WebSocketHandlerReference<Self>
    let channel: any Channel

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        webSocket = .init()
        channel = source.channel
    }
}

let router = Router(context: BaselineContext.self)
router.get("health") { _, _ in
    Response(
        status: .ok,
        headers: [.contentType: "application/json"],
        body: .init(byteBuffer: ByteBuffer(string: "{\"status\":\"ok\",\"service\":\"chat-baseline\"}"))
    )
}
router.get("api/v1/rooms") { _, _ -> Response in
    struct List: Encodable {
        var rooms: [RoomInfo]
        var total: Int
    }
    let all = rooms.all.map(\.info)
    return Response(
        status: .ok,
        headers: [.contentType: "application/json"],
        body: .init(byteBuffer: encode(List(rooms: all, total: all.count)))
    )
}
router.post("api/v1/rooms") { request, context -> Response in
    struct Create: Decodable { var name: String }
    struct Exists: Encodable {
        var error: String
        var code: String
        var room: RoomInfo
    }
    var request = request
    let body = try await request.collectBody(upTo: 16 * 1024)
    guard let create = try? JSONDecoder().decode(Create.self, from: Data(buffer: body)),
        !create.name.trimmingCharacters(in: .whitespaces).isEmpty, create.name.count <= 64
    else {
        return Response(
            status: .badRequest,
            headers: [.contentType: "application/json"],
            body: .init(byteBuffer: errorFrame("name_invalid", "room names are 1-64 characters"))
        )
    }
    let (room, created) = rooms.create(name: create.name)
    if !created {
        return Response(
            status: .conflict,
            headers: [.contentType: "application/json"],
            body: .init(byteBuffer: encode(Exists(error: "a room with that name exists", code: "room_exists", room: room.info)))
        )
    }
    return Response(status: .created, headers: [.contentType: "application/json"], body: .init(byteBuffer: encode(room.info)))
}
router.ws("/ws") { request, _ in
    guard let name = request.uri.queryParameters["username"].map(String.init), !name.isEmpty, name.count <= 32 else { return .dontUpgrade }
    return .upgrade([:])
} onUpgrade: { inbound, outbound, context in
    let username = context.request.uri.queryParameters["username"].map(String.init) ?? "anonymous"
    let member = Member(
        connectionID: nextConnection.add(1, ordering: .relaxed).newValue,
        userID: UUID().uuidString.lowercased(),
        username: username,
        outbound: Outbound(),
        channel: directWrites ? context.requestContext.channel : nil
    )
    member.send(encode(["type": "connected", "user_id": member.userID, "username": username, "gateway_id": "baseline"]))
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask {
            while let batch = await member.outbound.takeAll() {
                for buffer in batch {
                    try await outbound.write(.custom(WebSocketFrame(fin: true, opcode: .text, data: buffer)))
                }
            }
        }
        group.addTask {
            var session = Session(member: member, rooms: rooms)
            defer {
                session.disconnected()
                member.outbound.finish()
            }
            for try await message in inbound.messages(maxSize: 16384) {
                switch message {
                case .text(let text): session.handle(text)
                case .binary: member.send(errorFrame("invalid_request", "binary frames are not supported"))
                }
            }
        }
        try await group.waitForAll()
    }
}

let (listenHost, listenPort) = (host, port)
let app = Application(
    router: router,
    server: .http1WebSocketUpgrade(
        webSocketRouter: router,
        configuration: .init(
            ws: WebSocketServerConfiguration(
                maxFrameSize: 16384,
                autoPing: .enabled(timePeriod: .seconds(15)),
                closeTimeout: .seconds(2),
                validateUTF8: true
            )
        )
    ),
    configuration: .init(address: .hostname(listenHost, port: listenPort), serverName: "chat-baseline"),
    onServerRunning: { channel in
        FileHandle.standardOutput.write(Data("chat-baseline listening on \(listenHost):\(channel.localAddress?.port ?? listenPort)\n".utf8))
    },
    logger: logger
)
try await app.runService()
