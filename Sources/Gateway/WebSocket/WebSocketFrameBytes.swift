import NIOCore
import NIOWebSocket

/// Server-to-client WebSocket frames, encoded once into the bytes that go on the wire.
///
/// Server frames are not masked, so a message fanned out to a room is the same bytes for every
/// member: encoding it once and writing that buffer to each socket saves, per delivery, the header
/// buffer NIO's `WebSocketFrameEncoder` would allocate and the existential box a `WebSocketFrame`
/// needs to pass through the pipeline. They are written past NIO's encoder (`WebSocketFrameOutput`).
enum WebSocketFrameBytes {
    static func text(_ payload: some Collection<UInt8>) -> ByteBuffer {
        frame(.text, payload)
    }

    static func text(_ payload: ByteBuffer) -> ByteBuffer {
        frame(.text, payload.readableBytesView)
    }

    static func frame(_ opcode: WebSocketOpcode, _ payload: some Collection<UInt8>) -> ByteBuffer {
        let length = payload.count
        var buffer = ByteBuffer()
        buffer.reserveCapacity(length + 10)
        buffer.writeInteger(UInt8(0x80) | UInt8(webSocketOpcode: opcode))  // FIN, no extensions
        if length < 126 {
            buffer.writeInteger(UInt8(length))
        } else if length <= Int(UInt16.max) {
            buffer.writeInteger(UInt8(126))
            buffer.writeInteger(UInt16(length))
        } else {
            buffer.writeInteger(UInt8(127))
            buffer.writeInteger(UInt64(length))
        }
        buffer.writeBytes(payload)
        return buffer
    }

    static func close(_ code: WebSocketErrorCode, reason: String?) -> ByteBuffer {
        var payload = ByteBuffer()
        payload.write(webSocketErrorCode: code)
        if let reason, !reason.isEmpty {
            // A control frame's payload is at most 125 bytes: 2 for the code, 123 for the reason.
            payload.writeString(String(decoding: reason.utf8.prefix(123), as: UTF8.self))
        }
        return frame(.connectionClose, payload.readableBytesView)
    }
}

/// Where a connection's encoded frames are written: the context of NIO's `WebSocketFrameEncoder`, so
/// writes enter the pipeline past it, next to the socket. (The upgrader always adds the encoder, and
/// it cannot be removed; it only ever sees nothing.) Use on the channel's event loop only.
struct WebSocketFrameOutput: Sendable {
    private let context: NIOLoopBound<ChannelHandlerContext>

    init(channel: any Channel) throws {
        let context = try channel.pipeline.syncOperations.context(handlerType: WebSocketFrameEncoder.self)
        self.context = NIOLoopBound(context, eventLoop: channel.eventLoop)
    }

    func write(_ frame: ByteBuffer, promise: EventLoopPromise<Void>?) {
        context.value.write(NIOAny(frame), promise: promise)
    }

    func writeAndFlush(_ frame: ByteBuffer, promise: EventLoopPromise<Void>?) {
        context.value.writeAndFlush(NIOAny(frame), promise: promise)
    }
}
