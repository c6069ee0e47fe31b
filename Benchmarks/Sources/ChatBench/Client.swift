import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// Where chat-bench connects: the WebSocket endpoint and the REST base (for room creation).
public struct Target: Sendable {
    public var host: String
    public var port: Int
    public var path: String
    public var apiHost: String
    public var apiPort: Int

    /// Parses `ws://host:port/path` and `http://host:port`.
    public init(url: String, api: String?) throws {
        func split(_ text: String, scheme: String, defaultPort: Int) throws -> (String, Int, String) {
            guard text.hasPrefix(scheme + "://") else { throw BenchError("\(text): expected a \(scheme):// URL") }
            let rest = text.dropFirst(scheme.count + 3)
            let authority = rest.prefix { $0 != "/" }
            let path = rest.dropFirst(authority.count)
            var host = String(authority)
            var port = defaultPort
            if let colon = authority.lastIndex(of: ":") {
                host = String(authority[..<colon])
                guard let value = Int(authority[authority.index(after: colon)...]) else { throw BenchError("\(text): bad port") }
                port = value
            }
            return (host, port, path.isEmpty ? "/" : String(path))
        }
        (host, port, path) = try split(url, scheme: "ws", defaultPort: 80)
        if let api {
            (apiHost, apiPort, _) = try split(api, scheme: "http", defaultPort: 80)
        } else {
            (apiHost, apiPort) = (host, port)
        }
    }
}

/// Connects WebSocket clients (plain NIO: TCP → HTTP/1.1 upgrade → frame handler) and speaks REST.
final class Connector: Sendable {
    let target: Target
    let shards: [Shard]
    let sources: [SocketAddress]
    let group: MultiThreadedEventLoopGroup

    init(target: Target, shards: [Shard], sources: [SocketAddress], group: MultiThreadedEventLoopGroup) {
        self.target = target
        self.shards = shards
        self.sources = sources
        self.group = group
    }

    /// Opens connection `index` and returns once the server's `connected` frame arrived.
    func connect(index: Int, username: String, timeout: TimeAmount = .seconds(15)) async throws -> BenchConnection {
        let shard = shards[index % shards.count]
        let connection = BenchConnection(index: index, username: username, shard: shard)
        let target = self.target
        let uri = target.path + "?username=" + username
        let request = WebSocketHandshake.request(path: uri, host: "\(target.host):\(target.port)")
        var bootstrap = ClientBootstrap(group: shard.loop)
            .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(timeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(WebSocketHandshake(request: request, connection: connection))
                }
            }
        if !sources.isEmpty { bootstrap = bootstrap.bind(to: sources[index % sources.count]) }
        do {
            let channel = try await bootstrap.connect(host: target.host, port: target.port).get()
            let promise = connection.connected
            let timer = shard.loop.scheduleTask(in: timeout) {
                promise.fail(BenchError("no connected frame within \(timeout)"))
                channel.close(promise: nil)
            }
            promise.futureResult.whenComplete { _ in timer.cancel() }
            try await connection.connected.futureResult.get()
            return connection
        } catch {
            shard.loop.execute { connection.closedOnLoop(error: BenchError("\(error)")) }
            throw error
        }
    }

    /// One HTTP/1.1 request on its own connection: (status, body).
    func http(_ method: HTTPMethod, _ path: String, body: [UInt8] = [], timeout: TimeAmount = .seconds(30)) async throws -> (Int, [UInt8]) {
        let loop = group.next()
        let promise = loop.makePromise(of: (Int, [UInt8]).self)
        let target = self.target
        let channel = try await ClientBootstrap(group: loop)
            .connectTimeout(timeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(HTTPCollector(promise: promise))
                }
            }
            .connect(host: target.apiHost, port: target.apiPort).get()
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: "\(target.apiHost):\(target.apiPort)")
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: "\(body.count)")
        headers.add(name: "Connection", value: "close")
        let head = HTTPRequestHead(version: .http1_1, method: method, uri: path, headers: headers)
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        if !body.isEmpty { channel.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(bytes: body))), promise: nil) }
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        let timer = loop.scheduleTask(in: timeout) {
            promise.fail(BenchError("\(method) \(path): no answer within \(timeout)"))
            channel.close(promise: nil)
        }
        promise.futureResult.whenComplete { _ in timer.cancel() }
        return try await promise.futureResult.get()
    }

    /// POST /api/v1/rooms; a 409 (the name exists) returns the existing room's id.
    func createRoom(name: String) async throws -> String {
        let (status, body) = try await http(.POST, "/api/v1/rooms", body: Array("{\"name\":\"\(name)\"}".utf8))
        guard status == 201 || status == 200 || status == 409 else {
            throw BenchError("POST /api/v1/rooms: HTTP \(status) \(String(decoding: body, as: UTF8.self))")
        }
        let id: String? = body.withUnsafeBytes { bytes in
            guard let start = Scan.value(bytes, "\"id\":", startingWith: "\""), let range = Scan.stringValue(bytes, at: start) else {
                return nil
            }
            return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[range]), as: UTF8.self)
        }
        guard let id else { throw BenchError("POST /api/v1/rooms: no room id in \(String(decoding: body, as: UTF8.self))") }
        return id
    }
}

private final class HTTPCollector: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPClientResponsePart
    let promise: EventLoopPromise<(Int, [UInt8])>
    var status = 0
    var body: [UInt8] = []

    init(promise: EventLoopPromise<(Int, [UInt8])>) { self.promise = promise }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): status = Int(head.status.code)
        case .body(let buffer): body += buffer.readableBytesView
        case .end:
            promise.succeed((status, body))
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.fail(BenchError("connection closed before the response ended"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.fail(error)
        context.close(promise: nil)
    }
}

/// The client side of the HTTP/1.1 upgrade, by hand: one prebuilt request, and a scan of the response
/// head for the `101` status and `Sec-WebSocket-Accept`, instead of NIO's HTTP codec and typed upgrade
/// handlers. chat-bench shares the machine's two cores with the server, and in a connect storm the
/// handshake machinery was most of its CPU.
final class WebSocketHandshake: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// RFC 6455's example nonce, for every connection, and its accept value (§1.3): the server derives
    /// the accept from whatever key it gets, which is what this checks; fresh nonces protect browsers
    /// from caching proxies, not a load generator.
    static let key = "dGhlIHNhbXBsZSBub25jZQ=="
    static let expectedAccept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    static let maxHeadBytes = 16 * 1024

    static func request(path: String, host: String) -> ByteBuffer {
        ByteBuffer(
            string: "GET \(path) HTTP/1.1\r\nHost: \(host)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                + "Sec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n"
        )
    }

    private let request: ByteBuffer
    private let connection: BenchConnection
    private var received: ByteBuffer?

    init(request: ByteBuffer, connection: BenchConnection) {
        self.request = request
        self.connection = connection
    }

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(request), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if var earlier = received {
            earlier.writeBuffer(&bytes)
            bytes = earlier
        }
        guard let headLength = Self.headLength(bytes) else {
            guard bytes.readableBytes < Self.maxHeadBytes else {
                return fail("response head longer than \(Self.maxHeadBytes) bytes", context: context)
            }
            received = bytes
            return
        }
        received = nil
        let head = bytes.readString(length: headLength) ?? ""
        let lines = head.split(separator: "\r\n")
        guard let status = lines.first, status.hasPrefix("HTTP/1.1 101") else {
            return fail("WebSocket upgrade refused: \(lines.first ?? "no status line")", context: context)
        }
        let accept = lines.dropFirst().first { $0.lowercased().hasPrefix("sec-websocket-accept:") }
            .map { String($0.dropFirst("sec-websocket-accept:".count).filter { $0 != " " && $0 != "\t" }) }
        guard accept == Self.expectedAccept else {
            return fail("Sec-WebSocket-Accept \(accept ?? "missing"), expected \(Self.expectedAccept)", context: context)
        }
        do {
            try context.pipeline.syncOperations.addHandlers(
                [ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: 1 << 22)), WebSocketFrameEncoder(), connection],
                position: .after(self)
            )
        } catch {
            return fail("\(error)", context: context)
        }
        // The server's first frame often arrives in the same read as the 101 response.
        if bytes.readableBytes > 0 { context.fireChannelRead(NIOAny(bytes)) }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        connection.closedOnLoop(error: BenchError("connection closed during the WebSocket upgrade"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail("\(error)", context: context)
    }

    private func fail(_ message: String, context: ChannelHandlerContext) {
        connection.closedOnLoop(error: BenchError(message))
        context.close(promise: nil)
    }

    /// Length of the response head including its blank line, once it is all here.
    static func headLength(_ bytes: ByteBuffer) -> Int? {
        let view = bytes.readableBytesView
        guard view.count >= 4 else { return nil }
        var index = view.startIndex
        while index <= view.endIndex - 4 {
            if view[index] == 13, view[index + 1] == 10, view[index + 2] == 13, view[index + 3] == 10 {
                return index - view.startIndex + 4
            }
            index += 1
        }
        return nil
    }
}
