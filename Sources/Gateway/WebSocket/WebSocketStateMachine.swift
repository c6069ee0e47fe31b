import NIOCore
import NIOWebSocket

/// The WebSocket protocol (RFC 6455) of one server-side connection, without I/O: frames, ping ticks
/// and close requests go in, actions come out (`WebSocketConnectionHandler` performs them). Same rules
/// as hummingbird-websocket, whose handler the gateway used before: fragments are collected up to
/// `maxMessageBytes` (1009 beyond), text must be UTF-8 (1007), reserved bits and opcodes, pings with
/// FIN unset and continuation frames out of place are protocol errors (1002), a ping not answered by
/// the next tick closes with 1001 "Ping timeout", and a received close is answered with 1000 (1002 for
/// a close code outside the allowed ranges or a reason that is not UTF-8). In token mode the socket is
/// closed with 4001 when its token expires.
struct WebSocketStateMachine {
    enum State: Equatable {
        case open
        /// We sent a close frame and wait for the peer's.
        case closing
        case closed
    }

    enum Action: Equatable {
        case none
        case deliverText(ByteBuffer)
        case deliverBinary
        case sendPong(ByteBuffer)
        case sendPing(ByteBuffer)
        /// Write a close frame; `thenClose`: close the socket once it is written (else wait for the
        /// peer's close frame, bounded by the connection's close timeout).
        case sendClose(WebSocketErrorCode, reason: String?, thenClose: Bool)
        case closeSocket
    }

    private(set) var state = State.open
    let maxMessageBytes: Int
    /// A fragmented message being collected.
    private var fragments: (opcode: WebSocketOpcode, data: ByteBuffer)?
    /// The payload of the ping sent last, until its pong arrives.
    private var unansweredPing: ByteBuffer?

    init(maxMessageBytes: Int) {
        self.maxMessageBytes = maxMessageBytes
    }

    mutating func received(_ frame: WebSocketFrame) -> Action {
        switch state {
        case .closed:
            return .none
        case .closing:
            // Only the peer's close frame matters now.
            guard frame.opcode == .connectionClose else { return .none }
            state = .closed
            return .closeSocket
        case .open:
            break
        }
        guard frame.reservedBits.isEmpty else { return fail(.protocolError) }
        switch frame.opcode {
        case .connectionClose:
            return receivedClose(frame.unmaskedData)
        case .ping:
            guard frame.fin else { return fail(.protocolError) }
            let payload = frame.unmaskedData
            guard payload.readableBytes < 126 else { return fail(.protocolError) }
            return .sendPong(payload)
        case .pong:
            if frame.fin, let ping = unansweredPing, frame.unmaskedData == ping { unansweredPing = nil }
            return .none
        case .text, .binary:
            guard fragments == nil else { return fail(.protocolError) }
            let data = frame.unmaskedData
            guard data.readableBytes <= maxMessageBytes else { return fail(.messageTooLarge) }
            if frame.fin { return complete(frame.opcode, data) }
            fragments = (frame.opcode, data)
            return .none
        case .continuation:
            guard var message = fragments else { return fail(.protocolError) }
            var data = frame.unmaskedData
            guard message.data.readableBytes + data.readableBytes <= maxMessageBytes else { return fail(.messageTooLarge) }
            fragments = nil  // keeps `message.data` uniquely referenced while it grows
            message.data.writeBuffer(&data)
            if frame.fin { return complete(message.opcode, message.data) }
            fragments = message
            return .none
        default:
            return fail(.protocolError)
        }
    }

    private mutating func complete(_ opcode: WebSocketOpcode, _ data: ByteBuffer) -> Action {
        guard opcode == .text else { return .deliverBinary }
        guard data.isValidUTF8 else { return fail(.dataInconsistentWithMessage) }
        return .deliverText(data)
    }

    private mutating func receivedClose(_ payload: ByteBuffer) -> Action {
        var payload = payload
        let size = payload.readableBytes
        let code = payload.readWebSocketErrorCode()
        state = .closed
        if payload.readableBytes > 0, !payload.isValidUTF8 {
            return .sendClose(.protocolError, reason: nil, thenClose: true)
        }
        let reply: WebSocketErrorCode
        if size == 0 {
            reply = .normalClosure
        } else if let code {
            // 3000–3999 (libraries) and 4000–4999 (private use) are valid; other unknown codes are not.
            if case .unknown(let raw) = code, raw < 3000 || raw > 4999 { reply = .protocolError } else { reply = .normalClosure }
        } else {
            reply = .protocolError  // a one-byte payload
        }
        return .sendClose(reply, reason: nil, thenClose: true)
    }

    /// Our side ends the connection (errors, shutdown, slow client).
    mutating func close(_ code: WebSocketErrorCode, reason: String? = nil) -> Action {
        guard state == .open else { return .none }
        state = .closing
        fragments = nil
        return .sendClose(code, reason: reason, thenClose: false)
    }

    private mutating func fail(_ code: WebSocketErrorCode) -> Action { close(code) }

    /// The ping timer fired: a ping still unanswered from the last tick ends the connection.
    mutating func pingTick(payload: () -> ByteBuffer) -> Action {
        guard state == .open else { return .none }
        if unansweredPing != nil {
            state = .closing
            return .sendClose(.goingAway, reason: "Ping timeout", thenClose: true)
        }
        let ping = payload()
        unansweredPing = ping
        return .sendPing(ping)
    }

    /// Private-use close code: the token the socket was opened with has expired.
    static let tokenExpiredCode = WebSocketErrorCode(codeNumber: 4001)

    /// Private-use close code: an `auth` frame brought a token of another user.
    static let otherUserCode = WebSocketErrorCode(codeNumber: 4003)

    /// The expiry timer of a token-mode connection fired: the socket ends like any close of ours,
    /// with 4001 "token expired" (the client needs a new token to reconnect).
    mutating func tokenExpired() -> Action {
        close(Self.tokenExpiredCode, reason: "token expired")
    }

    /// The socket closed.
    mutating func closed() {
        state = .closed
        fragments = nil
    }
}

extension ByteBuffer {
    /// Whether the readable bytes are valid UTF-8, checked in place (`String(validating:)` would
    /// allocate a string per inbound message only to discard it).
    var isValidUTF8: Bool {
        withUnsafeReadableBytes { raw in
            (try? UTF8Span(validating: Span(_unsafeElements: raw.assumingMemoryBound(to: UInt8.self)))) != nil
        }
    }
}
