import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOWebSocket
import ServiceSupport

/// The first handler of every gateway connection. A plain, well-formed WebSocket upgrade to `/ws`
/// that is accepted at once (a username client under its limits) is answered here: its request
/// head is read with a byte scan and the `101` written directly. Everything else — REST, the UI,
/// JWT clients, refused or unusual upgrades — goes to the full HTTP pipeline (Hummingbird's, with
/// NIO's upgrade handler), which gets the bytes read so far, so its behaviour is unchanged.
///
/// Why: in a connect storm NIO's HTTP decoder, typed upgrade handler and the removal of the HTTP
/// handlers afterwards were ~45 % of the gateway's event-loop time per connection.
///
/// The fast path takes a strict subset of what the full pipeline accepts, with the same meaning:
/// `GET /ws[?query] HTTP/1.1`, header names of token characters, values of visible ASCII, exactly
/// one `Sec-WebSocket-Key` and `Sec-WebSocket-Version: 13`, `Upgrade: websocket`, a `Connection`
/// with the `upgrade` token, at most one `Host`, no trailing whitespace in values, no body, at most
/// `maxHeadBytes` and `maxHeaderCount`. A seeded differential test holds it to NIO's decoder.
final class WebSocketFastUpgrade: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer

    static let maxHeadBytes = 8 * 1024
    static let maxHeaderCount = 64

    private let decide: GatewayHTTPChannel.Decide
    private let maxFrameSize: Int
    private let logger: Logger
    /// Installs the full HTTP pipeline behind this handler; its result completes `result`. The
    /// argument is the decision already taken here (a refusal), so it is not taken twice (limits
    /// count their refusals).
    typealias Fallback = (any Channel, GatewayHTTPChannel.Upgrade?) throws -> EventLoopFuture<GatewayHTTPChannel.UpgradeResult>
    private let fallback: Fallback
    private let result: EventLoopPromise<GatewayHTTPChannel.UpgradeResult>
    private var buffered: ByteBuffer?
    private var done = false

    init(
        decide: @escaping GatewayHTTPChannel.Decide,
        maxFrameSize: Int,
        logger: Logger,
        result: EventLoopPromise<GatewayHTTPChannel.UpgradeResult>,
        fallback: @escaping Fallback
    ) {
        self.decide = decide
        self.maxFrameSize = maxFrameSize
        self.logger = logger
        self.result = result
        self.fallback = fallback
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        guard !done else { return context.fireChannelRead(data) }
        if var earlier = buffered {
            earlier.writeBuffer(&bytes)
            bytes = earlier
        }
        switch Self.scan(bytes) {
        case .needMore:
            buffered = bytes
        case .other:
            handOver(bytes, decided: nil, context: context)
        case .upgrade(let head, let length):
            switch decide(head.request, context.channel, logger) {
            case .now(.accept(let install)):
                bytes.moveReaderIndex(forwardBy: length)
                accept(key: head.key, install: install, rest: bytes, context: context)
            case .now(let refusal):
                handOver(bytes, decided: refusal, context: context)  // the full path answers it
            case .later:
                handOver(bytes, decided: nil, context: context)  // a token to check: the full path decides
            }
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // Shutting down before a request arrived: nothing to finish (the HTTP pipeline does the same).
        if !done, event is ChannelShouldQuiesceEvent, buffered == nil {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !done {
            done = true
            result.fail(ChannelError.inputClosed)
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !done {
            done = true
            result.fail(error)
            context.close(promise: nil)
            return
        }
        context.fireErrorCaught(error)
    }

    /// The full HTTP pipeline takes over, starting with the bytes read so far.
    private func handOver(_ bytes: ByteBuffer, decided: GatewayHTTPChannel.Upgrade?, context: ChannelHandlerContext) {
        done = true
        buffered = nil
        do {
            result.completeWith(try fallback(context.channel, decided))
        } catch {
            result.fail(error)
            context.close(promise: nil)
            return
        }
        context.fireChannelRead(wrapInboundOut(bytes))
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    private func accept(key: String, install: (any Channel) throws -> Void, rest: ByteBuffer, context: ChannelHandlerContext) {
        done = true
        buffered = nil
        let response =
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n"
            + "sec-websocket-accept: \(Self.acceptValue(key: key))\r\nconnection: upgrade\r\n\r\n"
        // Flushed after this event-loop turn: the `connected` frame `install` queues goes in the same write.
        context.write(wrapOutboundOut(ByteBuffer(string: response)), promise: nil)
        let channel = context.channel
        context.eventLoop.execute { channel.flush() }
        do {
            try context.pipeline.syncOperations.addHandlers(
                [ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: maxFrameSize)), WebSocketFrameEncoder()],
                position: .after(self)
            )
            try install(context.channel)
        } catch {
            logger.debug("WebSocket upgrade failed", metadata: [LogKey.error: "\(error)"])
            result.fail(error)
            context.close(promise: nil)
            return
        }
        result.succeed(.websocket)
        if rest.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(rest)) }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    // MARK: The request head scan (no I/O)

    /// RFC 6455 §4.2.2: base64(SHA-1(key + the protocol's GUID)).
    static func acceptValue<Key: StringProtocol>(key: Key) -> String {
        Data(Insecure.SHA1.hash(data: Array((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").utf8))).base64EncodedString()
    }

    struct UpgradeHead {
        var request: Request
        var key: String
    }

    enum Scan {
        case needMore
        /// Not for the fast path: everything else goes to the full pipeline.
        case other
        /// A clean upgrade request to `/ws` whose head is `length` bytes.
        case upgrade(UpgradeHead, length: Int)
    }

    static func scan(_ bytes: ByteBuffer) -> Scan {
        bytes.withUnsafeReadableBytes { raw in
            let prefix: StaticString = "GET /ws"
            let checked = min(raw.count, prefix.utf8CodeUnitCount)
            guard let base = raw.baseAddress, !raw.isEmpty else { return .needMore }
            guard memcmp(base, prefix.utf8Start, checked) == 0 else { return .other }
            if raw.count > prefix.utf8CodeUnitCount {
                let next = raw[prefix.utf8CodeUnitCount]
                guard next == UInt8(ascii: "?") || next == UInt8(ascii: " ") else { return .other }
            }
            // A bare LF can never end a clean head: hand it over now, so the full parser answers 400 at
            // once instead of this scan waiting for a CRLF CRLF that may never come.
            guard let end = headEnd(raw) else { return raw.count >= maxHeadBytes || hasBareLF(raw) ? .other : .needMore }
            guard end <= maxHeadBytes, let head = parse(UnsafeRawBufferPointer(rebasing: raw[0..<(end - 2)])) else { return .other }
            return .upgrade(head, length: end)
        }
    }

    /// Offset just past the blank line ending the head.
    private static func headEnd(_ raw: UnsafeRawBufferPointer) -> Int? {
        guard raw.count >= 4 else { return nil }
        for index in 0...(raw.count - 4) where raw[index] == 13 && raw[index + 1] == 10 && raw[index + 2] == 13 && raw[index + 3] == 10 {
            return index + 4
        }
        return nil
    }

    private static func hasBareLF(_ raw: UnsafeRawBufferPointer) -> Bool {
        raw.indices.contains { raw[$0] == 10 && ($0 == 0 || raw[$0 - 1] != 13) }
    }

    private static let tokenCharacters: [Bool] = (0..<256).map { byte in
        let c = UInt8(byte)
        switch c {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        default: return Array("!#$%&'*+-.^_`|~".utf8).contains(c)
        }
    }

    /// ASCII case-insensitive equality with a lowercase name.
    private static func equalsLowercased(_ bytes: UnsafeRawBufferPointer, _ lowercase: StaticString) -> Bool {
        guard bytes.count == lowercase.utf8CodeUnitCount else { return false }
        let expected = UnsafeRawBufferPointer(start: lowercase.utf8Start, count: lowercase.utf8CodeUnitCount)
        for index in 0..<bytes.count where bytes[index] | 0x20 != expected[index] { return false }
        return true
    }

    /// Whether a comma-separated value holds the token `upgrade` (any case).
    private static func hasUpgradeToken(_ value: UnsafeRawBufferPointer) -> Bool {
        var start = 0
        while start <= value.count {
            var end = start
            while end < value.count, value[end] != UInt8(ascii: ",") { end += 1 }
            var (from, to) = (start, end)
            while from < to, value[from] == 32 || value[from] == 9 { from += 1 }
            while to > from, value[to - 1] == 32 || value[to - 1] == 9 { to -= 1 }
            if equalsLowercased(UnsafeRawBufferPointer(rebasing: value[from..<to]), "upgrade") { return true }
            start = end + 1
        }
        return false
    }

    /// The head up to and including its last header line's CRLF (the blank line excluded).
    static func parse(_ head: UnsafeRawBufferPointer) -> UpgradeHead? {
        // Request line: "GET " target " HTTP/1.1" CRLF.
        guard let lineEnd = nextLineEnd(head, from: 0) else { return nil }
        let suffix: StaticString = " HTTP/1.1"
        guard lineEnd > 4 + suffix.utf8CodeUnitCount,
            memcmp(head.baseAddress! + lineEnd - suffix.utf8CodeUnitCount, suffix.utf8Start, suffix.utf8CodeUnitCount) == 0
        else { return nil }
        let targetBytes = UnsafeRawBufferPointer(rebasing: head[4..<(lineEnd - suffix.utf8CodeUnitCount)])
        guard targetBytes.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else { return nil }
        var fields = HTTPFields()
        var host: String?
        var key: String?
        var versionOK = false
        var upgradeOK = false
        var connectionOK = false
        var keys = 0
        var versions = 0
        var upgrades = 0
        var count = 0
        var position = lineEnd + 2
        while position < head.count {
            guard let end = nextLineEnd(head, from: position) else { return nil }
            count += 1
            guard count <= maxHeaderCount else { return nil }
            let line = UnsafeRawBufferPointer(rebasing: head[position..<end])
            position = end + 2
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")), colon > 0 else { return nil }
            let name = UnsafeRawBufferPointer(rebasing: line[0..<colon])
            guard name.allSatisfy({ tokenCharacters[Int($0)] }) else { return nil }
            var from = colon + 1
            while from < line.count, line[from] == 32 || line[from] == 9 { from += 1 }
            // NIO's decoder keeps trailing whitespace in a value (a key would get another accept value).
            guard from == line.count || (line[line.count - 1] != 32 && line[line.count - 1] != 9) else { return nil }
            let value = UnsafeRawBufferPointer(rebasing: line[from..<line.count])
            guard value.allSatisfy({ ($0 >= 0x20 && $0 < 0x7F) || $0 == 9 }) else { return nil }
            let valueText = String(decoding: value, as: UTF8.self)
            if equalsLowercased(name, "host") {
                guard host == nil else { return nil }  // two Hosts: the full pipeline answers that
                host = valueText  // the authority, not a field (as NIOHTTPTypesHTTP1 converts a head)
                continue
            }
            if equalsLowercased(name, "sec-websocket-key") {
                key = valueText
                keys += 1
            } else if equalsLowercased(name, "sec-websocket-version") {
                versionOK = valueText == "13"
                versions += 1
            } else if equalsLowercased(name, "upgrade") {
                upgradeOK = equalsLowercased(value, "websocket")
                upgrades += 1
            } else if equalsLowercased(name, "connection") {
                connectionOK = connectionOK || hasUpgradeToken(value)
            } else if equalsLowercased(name, "transfer-encoding") {
                return nil
            } else if equalsLowercased(name, "content-length"), valueText != "0" {
                return nil
            }
            guard let fieldName = HTTPField.Name(String(decoding: name, as: UTF8.self)) else { return nil }
            fields.append(HTTPField(name: fieldName, value: valueText))
        }
        guard keys == 1, versions == 1, upgrades == 1, let key, !key.isEmpty, versionOK, upgradeOK, connectionOK else { return nil }
        let target = String(decoding: targetBytes, as: UTF8.self)
        let request = HTTPRequest(method: .get, scheme: "http", authority: host, path: target, headerFields: fields)
        return UpgradeHead(request: Request(head: request, body: .init(buffer: ByteBuffer())), key: key)
    }

    /// Index of the CR of the next CRLF at or after `from`; a bare CR or LF makes the head unclean.
    private static func nextLineEnd(_ head: UnsafeRawBufferPointer, from: Int) -> Int? {
        var index = from
        while index < head.count {
            switch head[index] {
            case 13: return index + 1 < head.count && head[index + 1] == 10 ? index : nil
            case 10: return nil
            default: index += 1
            }
        }
        return nil
    }
}
