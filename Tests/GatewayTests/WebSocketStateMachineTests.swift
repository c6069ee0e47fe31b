import NIOCore
import NIOWebSocket
import Testing

@testable import Gateway

@Suite("WebSocket protocol state machine (no I/O)")
struct WebSocketStateMachineTests {
    func frame(_ opcode: WebSocketOpcode, _ text: String = "", fin: Bool = true, mask: Bool = true) -> WebSocketFrame {
        var data = ByteBuffer(string: text)
        let key: WebSocketMaskingKey? = mask ? WebSocketMaskingKey([1, 2, 3, 4]) : nil
        if let key { data.webSocketMask(key) }  // clients mask their frames
        return WebSocketFrame(fin: fin, opcode: opcode, maskKey: key, data: data)
    }

    func closeFrame(code: UInt16?, reason: [UInt8] = []) -> WebSocketFrame {
        var data = ByteBuffer()
        if let code { data.writeInteger(code) }
        data.writeBytes(reason)
        return WebSocketFrame(fin: true, opcode: .connectionClose, data: data)
    }

    @Test func textIsUnmaskedAndDelivered() {
        var machine = WebSocketStateMachine(maxMessageBytes: 100)
        #expect(machine.received(frame(.text, #"{"type":"ping"}"#)) == .deliverText(ByteBuffer(string: #"{"type":"ping"}"#)))
        #expect(machine.received(frame(.binary, "xy")) == .deliverBinary)
        #expect(machine.state == .open)
    }

    @Test func fragmentsAreCollectedUpToTheLimit() {
        // 6 + 3 + 2 = 11 bytes > 10: the message is too large.
        var machine = WebSocketStateMachine(maxMessageBytes: 10)
        #expect(machine.received(frame(.text, "hello ", fin: false)) == .none)
        #expect(machine.received(frame(.continuation, "wor", fin: false)) == .none)
        #expect(machine.received(frame(.continuation, "ld")) == .sendClose(.messageTooLarge, reason: nil, thenClose: false))
        #expect(machine.state == .closing)

        var fits = WebSocketStateMachine(maxMessageBytes: 11)
        _ = fits.received(frame(.text, "hello ", fin: false))
        _ = fits.received(frame(.continuation, "wor", fin: false))
        #expect(fits.received(frame(.continuation, "ld")) == .deliverText(ByteBuffer(string: "hello world")))
        #expect(fits.received(frame(.text, "next")) == .deliverText(ByteBuffer(string: "next")), "the collected message is gone")
    }

    @Test func protocolViolationsClose1002() {
        for bad in [
            [frame(.continuation, "x")],  // continuation without a start
            [frame(.text, "a", fin: false), frame(.text, "b")],  // a new message inside a fragmented one
            [WebSocketFrame(fin: true, rsv1: true, opcode: .text, data: ByteBuffer(string: "x"))],  // reserved bit
            [frame(WebSocketOpcode(encodedWebSocketOpcode: 0x3)!, "x")],  // reserved opcode
            [frame(.ping, "x", fin: false)],
        ] {
            var machine = WebSocketStateMachine(maxMessageBytes: 100)
            var last = WebSocketStateMachine.Action.none
            for frame in bad { last = machine.received(frame) }
            #expect(last == .sendClose(.protocolError, reason: nil, thenClose: false), "\(bad)")
            #expect(machine.state == .closing)
        }
    }

    @Test func invalidUTF8Closes1007() {
        var machine = WebSocketStateMachine(maxMessageBytes: 100)
        let bytes = WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(bytes: [0x7B, 0xC3, 0x28, 0x7D]))
        #expect(machine.received(bytes) == .sendClose(.dataInconsistentWithMessage, reason: nil, thenClose: false))
    }

    @Test func utf8CheckAgreesWithTheStandardLibrary() {
        let cases: [[UInt8]] = [
            [], Array("plain ascii".utf8), Array("héllo 👋 世界".utf8),
            [0xC3, 0x28], [0xE2, 0x82], [0xF0, 0x9F, 0x91],  // invalid continuation, truncated
            [0xC0, 0xAF], [0xE0, 0x80, 0xAF],  // overlong
            [0xED, 0xA0, 0x80],  // UTF-16 surrogate
            [0xF4, 0x90, 0x80, 0x80], [0xFF],  // beyond U+10FFFF, never valid
        ]
        var generator = SystemRandomNumberGenerator()
        let random = (0..<500).map { _ in
            (0..<Int.random(in: 0...12, using: &generator)).map { _ in UInt8.random(in: 0x7F...0xF5, using: &generator) }
        }
        for bytes in cases + random {
            #expect(ByteBuffer(bytes: bytes).isValidUTF8 == (String(validating: bytes, as: UTF8.self) != nil), "\(bytes)")
        }
        var offset = ByteBuffer(bytes: [0xFF] + Array("ok".utf8))
        offset.moveReaderIndex(forwardBy: 1)
        #expect(offset.isValidUTF8, "only the readable bytes are checked")
    }

    @Test func pingIsAnsweredAndAClosingConnectionIgnoresData() {
        var machine = WebSocketStateMachine(maxMessageBytes: 100)
        #expect(machine.received(frame(.ping, "abc")) == .sendPong(ByteBuffer(string: "abc")))
        #expect(machine.close(.goingAway, reason: "bye") == .sendClose(.goingAway, reason: "bye", thenClose: false))
        #expect(machine.close(.goingAway) == .none, "closing twice sends one close frame")
        #expect(machine.received(frame(.text, "late")) == .none)
        #expect(machine.received(frame(.ping, "p")) == .none)
        #expect(machine.received(closeFrame(code: 1000)) == .closeSocket, "the peer's close reply ends it")
        #expect(machine.state == .closed)
    }

    @Test func theClientsCloseIsAnswered() {
        func reply(_ frame: WebSocketFrame) -> WebSocketStateMachine.Action {
            var machine = WebSocketStateMachine(maxMessageBytes: 100)
            defer { #expect(machine.state == .closed) }
            return machine.received(frame)
        }
        #expect(reply(closeFrame(code: nil)) == .sendClose(.normalClosure, reason: nil, thenClose: true))
        #expect(reply(closeFrame(code: 1000, reason: Array("done".utf8))) == .sendClose(.normalClosure, reason: nil, thenClose: true))
        #expect(reply(closeFrame(code: 4001)) == .sendClose(.normalClosure, reason: nil, thenClose: true), "private-use codes are valid")
        #expect(reply(closeFrame(code: 1234)) == .sendClose(.protocolError, reason: nil, thenClose: true))
        #expect(reply(closeFrame(code: 1000, reason: [0xFF, 0xFE])) == .sendClose(.protocolError, reason: nil, thenClose: true))
    }

    @Test func anUnansweredPingEndsTheConnectionAtTheNextTick() {
        var machine = WebSocketStateMachine(maxMessageBytes: 100)
        let payload = ByteBuffer(bytes: Array(0..<16))
        #expect(machine.pingTick { payload } == .sendPing(payload))
        // A pong with other data does not count.
        #expect(machine.received(frame(.pong, "other")) == .none)
        #expect(machine.pingTick { payload } == .sendClose(.goingAway, reason: "Ping timeout", thenClose: true))
        #expect(machine.state == .closing)

        var answered = WebSocketStateMachine(maxMessageBytes: 100)
        _ = answered.pingTick { payload }
        var pong = ByteBuffer(bytes: Array(0..<16))
        let key = WebSocketMaskingKey([9, 9, 9, 9])!
        pong.webSocketMask(key)
        _ = answered.received(WebSocketFrame(fin: true, opcode: .pong, maskKey: key, data: pong))
        #expect(answered.pingTick { payload } == .sendPing(payload), "answered: the next tick pings again")
    }

    @Test func anExpiredTokenClosesWith4001OnceAndOnlyWhileOpen() {
        var machine = WebSocketStateMachine(maxMessageBytes: 100)
        #expect(machine.tokenExpired() == .sendClose(WebSocketErrorCode(codeNumber: 4001), reason: "token expired", thenClose: false))
        #expect(machine.state == .closing)
        #expect(machine.tokenExpired() == .none)
        var closed = WebSocketStateMachine(maxMessageBytes: 100)
        closed.closed()
        #expect(closed.tokenExpired() == .none)
    }
}
