// History latency in a small room and in a huge one, through the real chat-service request path.
//
//   swift build -c release --package-path Benchmarks --product chat-history-bench --scratch-path Benchmarks/.build-release
//   Benchmarks/.build-release/release/chat-history-bench [--big 1000000] [--small 100] [--requests 200]
//
// Starts a private nats-server and an in-process chat-service. The big room is filled by pipelined
// JetStream publishes of well-formed messages (the chat-service's own send path would take minutes),
// interleaved with a second busy room so the stream is not one room's messages only.
import ChatCore
import ChatService
import Foundation
import Logging
import NATS
import NATSTesting
import ServiceSupport

func percentile(_ sorted: [Duration], _ p: Double) -> Duration {
    sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
}

func milliseconds(_ d: Duration) -> String {
    String(format: "%.2f ms", Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15)
}

@main
struct HistoryBench {
    static func main() async throws {
        var big = 1_000_000
        var small = 100
        var requests = 200
        var arguments = CommandLine.arguments.dropFirst().makeIterator()
        while let argument = arguments.next() {
            switch argument {
            case "--big": big = Int(arguments.next() ?? "") ?? big
            case "--small": small = Int(arguments.next() ?? "") ?? small
            case "--requests": requests = Int(arguments.next() ?? "") ?? requests
            default:
                print("usage: chat-history-bench [--big N] [--small N] [--requests N]")
                exit(2)
            }
        }
        let server = try NATSServerProcess()
        defer { withExtendedLifetime(server) {} }
        var configuration = ChatServiceConfiguration(nats: NATSConfiguration(url: server.url, name: "chat-service"))
        configuration.retentionPerRoom = big
        var logger = Logger(label: "chat-service")
        logger.logLevel = .warning
        let runner = ChatServiceRunner(configuration: configuration, logger: logger)
        let service = Task { try await runner.run() }
        defer { service.cancel() }
        let client = try await server.connect(name: "bench")
        var bulk = NATSConfiguration(url: server.url, name: "bench-bulk")
        bulk.sendAsap = false
        let loader = try await NATSConnection.connect(bulk, retryUntilConnected: false)
        let chat = ChatServiceClient(connection: client, timeout: .seconds(30))
        try await eventually("chat-service up", timeout: .seconds(30)) {
            (try? await client.request("$SRV.PING.chat", timeout: .milliseconds(500))) != nil
        }

        let smallRoom: Room = try await chat.call(.createRoom, ServiceAPI.CreateRoom(name: "small"))
        let bigRoom: Room = try await chat.call(.createRoom, ServiceAPI.CreateRoom(name: "big"))
        let noise: Room = try await chat.call(.createRoom, ServiceAPI.CreateRoom(name: "noise"))
        let user = UserID.random()

        func fill(_ room: Room, count: Int, interleave: Room?) async throws {
            var seq: UInt64 = 0
            var noiseSeq: UInt64 = 0
            let batch = 8192
            var written = 0
            while written < count {
                var messages: [JetStream.OutgoingMessage] = []
                for _ in 0..<min(batch, count - written) {
                    seq += 1
                    messages.append(outgoing(room.id, seq: seq, user: user))
                    if let interleave, seq % 10 == 0 {
                        noiseSeq += 1
                        messages.append(outgoing(interleave.id, seq: noiseSeq, user: user))
                    }
                }
                for result in await loader.jetStream.publishPipelined(messages, window: 4096, timeout: .seconds(30)) {
                    _ = try result.get()
                }
                written += min(batch, count - written)
                if written % 100_000 < batch { print("  \(room.name): \(written) messages") }
            }
        }
        func outgoing(_ room: RoomID, seq: UInt64, user: UserID) -> JetStream.OutgoingMessage {
            let message = ChatMessage(
                messageID: makeUUID(),
                roomID: room,
                userID: user,
                username: "bench",
                content: "message number \(seq) with a little text",
                timestamp: ChatTime.now().text,
                seq: seq
            )
            var headers = NATSHeaders()
            headers[ChatNames.eventTypeHeader] = ChatEventType.messageSent.rawValue
            headers[ChatNames.roomSeqHeader] = String(seq)
            return JetStream.OutgoingMessage(subject: ChatNames.messageSubject(room), payload: ChatJSON.encode(message), headers: headers)
        }

        let fillStart = ContinuousClock.now
        try await fill(smallRoom, count: small, interleave: nil)
        try await fill(bigRoom, count: big, interleave: noise)
        print("filled \(small) + \(big) (+\(big / 10) interleaved) messages in \(ContinuousClock.now - fillStart)")

        func measure(_ name: String, _ room: Room, before: UInt64?) async throws -> Duration {
            var samples: [Duration] = []
            for _ in 0..<requests {
                let start = ContinuousClock.now
                let page: ServiceAPI.HistoryResult = try await chat.call(
                    .history,
                    ServiceAPI.History(roomID: room.id.rawValue, limit: 50, before: before)
                )
                samples.append(ContinuousClock.now - start)
                guard page.messages.count == 50 || page.messages.count == min(50, Int(before.map { $0 - 1 } ?? UInt64(small))) else {
                    throw TestServerError("\(name): page of \(page.messages.count)")
                }
            }
            samples.sort()
            let p50 = percentile(samples, 0.5)
            print(
                String(
                    format: "%-44@ p50 %10@  p99 %10@",
                    name as NSString,
                    milliseconds(p50) as NSString,
                    milliseconds(percentile(samples, 0.99)) as NSString
                )
            )
            return p50
        }
        print("\nhistory, limit 50, \(requests) requests each (sequential):")
        let smallNewest = try await measure("room of \(small): newest page", smallRoom, before: nil)
        let bigNewest = try await measure("room of \(big): newest page", bigRoom, before: nil)
        let bigDeep = try await measure("room of \(big): deep page (before=1001)", bigRoom, before: 1001)
        let bigMiddle = try await measure("room of \(big): middle page (before=\(big / 2))", bigRoom, before: UInt64(big / 2))
        func ratio(_ a: Duration, _ b: Duration) -> String {
            String(
                format: "%.2f",
                Double(a.components.attoseconds + a.components.seconds * 1_000_000_000_000_000_000)
                    / Double(b.components.attoseconds + b.components.seconds * 1_000_000_000_000_000_000)
            )
        }
        print(
            "\np50 ratios vs the small room's newest page: newest \(ratio(bigNewest, smallNewest)), "
                + "deep \(ratio(bigDeep, smallNewest)), middle \(ratio(bigMiddle, smallNewest))"
        )
    }
}
