import HTTPTypes
import NIOCore
import Testing

@testable import Gateway

/// The start of most heads below.
private let upgradeHead = "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"

@Suite("The /ws fast path takes only clean upgrade requests (the rest goes to the full HTTP pipeline)")
struct WebSocketFastUpgradeTests {
    static let clean =
        "GET /ws?username=ann+b HTTP/1.1\r\nHost: chat.example:3000\r\nUpgrade: websocket\r\n"
        + "Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        + "Origin: https://chat.example\r\nX-Forwarded-For: 10.0.0.7\r\n\r\n"

    func scan(_ text: String) -> WebSocketFastUpgrade.Scan { WebSocketFastUpgrade.scan(ByteBuffer(string: text)) }

    @Test func aCleanUpgradeIsTakenWithTheRequestTheDecisionNeeds() throws {
        guard case .upgrade(let head, let length) = scan(Self.clean + "\u{81}\u{80}") else {
            Issue.record("not taken")
            return
        }
        #expect(length == Self.clean.utf8.count, "the head only: what follows is WebSocket frames")
        #expect(head.key == "dGhlIHNhbXBsZSBub25jZQ==")
        #expect(head.request.uri.path == "/ws")
        #expect(head.request.uri.query == "username=ann+b")
        #expect(head.request.head.authority == "chat.example:3000")
        #expect(head.request.headers[.origin] == "https://chat.example")
        #expect(head.request.headers[HTTPField.Name("X-Forwarded-For")!] == "10.0.0.7")
        #expect(head.request.headers[HTTPField.Name("Host")!] == nil, "Host becomes the authority, as in NIOHTTPTypesHTTP1's conversion")
    }

    @Test func theAcceptValueIsRFC6455s() {
        #expect(WebSocketFastUpgrade.acceptValue(key: "dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    }

    @Test func anIncompleteHeadWaitsForMore() {
        for cut in [1, 5, 7, 8, 40, Self.clean.utf8.count - 1] {
            let part = ByteBuffer(bytes: Array(Self.clean.utf8.prefix(cut)))
            guard case .needMore = WebSocketFastUpgrade.scan(part) else {
                Issue.record("cut at \(cut)")
                continue
            }
        }
    }

    @Test(arguments: [
        "GET /api/v1/rooms HTTP/1.1\r\nHost: x\r\n\r\n",  // not /ws
        "GET /wsx HTTP/1.1\r\n",
        "POST /ws HTTP/1.1\r\n",
        "get /ws HTTP/1.1\r\n",
        "GET /ws HTTP/1.0\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\n\r\n",
        "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",  // no key
        upgradeHead + "Sec-WebSocket-Key: k\r\nSec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\n\r\n",
        "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Key: k\r\nSec-WebSocket-Version: 12\r\n\r\n",
        "GET /ws HTTP/1.1\r\nUpgrade: h2c\r\nConnection: upgrade\r\nSec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\n\r\n",
        "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: keep-alive\r\nSec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\n\r\n",
        upgradeHead + "Sec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\nTransfer-Encoding: chunked\r\n\r\n",
        upgradeHead + "Sec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\nContent-Length: 5\r\n\r\n",
        upgradeHead + "Sec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\nX-Name: caf\u{e9}\r\n\r\n",
        upgradeHead + "Sec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\nBad Name: x\r\n\r\n",
        upgradeHead + "Sec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\n folded: x\r\n\r\n",
        "GET /ws?a=\u{1} HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"
            + "Sec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\n\r\n",
        upgradeHead + "Sec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\nNoColon\r\n\r\n",
        // Found by the differential test: NIO keeps trailing whitespace; two Hosts.
        "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Key: k \r\nSec-WebSocket-Version: 13\r\n\r\n",
        "GET /ws HTTP/1.1\r\nHost: a\r\nHost: b\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"
            + "Sec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\n\r\n",
    ])
    func anythingElseGoesToTheFullPipeline(_ text: String) {
        guard case .other = scan(text) else {
            Issue.record("taken or waiting: \(text.debugDescription)")
            return
        }
    }

    @Test func anOversizedHeadGoesToTheFullPipeline() {
        let big = "GET /ws HTTP/1.1\r\nX-Pad: " + String(repeating: "a", count: WebSocketFastUpgrade.maxHeadBytes) + "\r\n"
        guard case .other = scan(big) else {
            Issue.record("an unfinished head over the limit must not be buffered further")
            return
        }
        let many =
            "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\n"
            + String(repeating: "X-A: b\r\n", count: WebSocketFastUpgrade.maxHeaderCount) + "\r\n"
        guard case .other = scan(many) else {
            Issue.record("too many header fields")
            return
        }
    }
}
