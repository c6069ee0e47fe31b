import HTTPTypes
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import Gateway

/// The fast path must never take a head that NIO's HTTP/1 decoder (the full pipeline's parser) would
/// refuse or read differently. Random mutations of a clean upgrade (seeded, so a failure reproduces)
/// are given to both; whatever the fast path takes, NIO must parse into the same request.
@Suite("The /ws fast path agrees with NIO's HTTP decoder on every head it takes")
struct WebSocketFastUpgradeDifferentialTests {
    /// SplitMix64: a fixed seed gives the same mutations on every run and machine.
    struct SeededGenerator: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    static let interesting: [UInt8] = Array("\r\n \t:,;=?/%#aAzZ09-_.~\"'".utf8) + [0, 0x7F, 0x80, 0xC3, 0xFF, 0x0B, 0x0C]

    static func mutate(_ base: [UInt8], _ random: inout SeededGenerator) -> [UInt8] {
        var bytes = base
        for _ in 0..<Int.random(in: 1...3, using: &random) {
            guard !bytes.isEmpty else { break }
            let at = Int.random(in: 0..<bytes.count, using: &random)
            switch Int.random(in: 0..<6, using: &random) {
            case 0: bytes.insert(interesting.randomElement(using: &random)!, at: at)
            case 1: bytes[at] = interesting.randomElement(using: &random)!
            case 2: bytes.removeSubrange(at..<min(bytes.count, at + Int.random(in: 1...4, using: &random)))
            case 3:
                // Flip the case of a letter.
                if (65...90).contains(bytes[at]) || (97...122).contains(bytes[at]) { bytes[at] ^= 0x20 }
            case 4:
                // Repeat a header line.
                let lines = String(decoding: bytes, as: UTF8.self).components(separatedBy: "\r\n")
                guard lines.count > 3 else { break }
                let line = lines[Int.random(in: 1..<(lines.count - 2), using: &random)]
                let insertAt = (bytes.firstRange(of: Array("\r\n".utf8))?.upperBound) ?? 0
                bytes.insert(contentsOf: Array((line + "\r\n").utf8), at: insertAt)
            default: bytes.insert(contentsOf: Array(" ".utf8), at: at)
            }
        }
        return bytes
    }

    /// What NIO's decoder makes of `bytes`: the head, and whether the request ended right after it.
    static func decodeWithNIO(_ bytes: [UInt8]) -> (head: HTTPRequestHead, ended: Bool)? {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes)))
        defer { _ = try? channel.finish() }
        guard (try? channel.writeInbound(ByteBuffer(bytes: bytes))) != nil else { return nil }
        guard case .head(let head)? = try? channel.readInbound(as: HTTPServerRequestPart.self) else { return nil }
        let ended: Bool
        if case .end? = try? channel.readInbound(as: HTTPServerRequestPart.self) { ended = true } else { ended = false }
        return (head, ended)
    }

    @Test func everyMutatedHeadTheFastPathTakesNIOReadsTheSame() throws {
        let base = Array(WebSocketFastUpgradeTests.clean.utf8)
        var random = SeededGenerator(state: 0x5EED_6A7E_3A1D)
        var taken = 0
        for round in 0..<20_000 {
            let bytes = Self.mutate(base, &random)
            guard case .upgrade(let fast, let length) = WebSocketFastUpgrade.scan(ByteBuffer(bytes: bytes)) else { continue }
            taken += 1
            let head = Array(bytes[0..<length])
            let context = "round \(round): \(String(decoding: head, as: UTF8.self).debugDescription)"
            guard let nio = Self.decodeWithNIO(head) else {
                Issue.record("NIO refuses a head the fast path took, \(context)")
                continue
            }
            #expect(nio.ended, "NIO expects a body, \(context)")
            #expect(nio.head.method == .GET && nio.head.version == .http1_1, "\(context)")
            #expect(nio.head.uri == fast.request.head.path, "\(context)")
            // The same fields in the same order; NIO keeps Host as a field, the fast path makes it the authority.
            let nioFields = nio.head.headers.filter { $0.name.lowercased() != "host" }.map { "\($0.name.lowercased()): \($0.value)" }
            let fastFields = fast.request.headers.map { "\($0.name.canonicalName): \($0.value)" }
            #expect(nioFields == fastFields, "\(context)")
            #expect(nio.head.headers["host"] == (fast.request.head.authority.map { [$0] } ?? []), "\(context)")
            #expect(nio.head.headers["sec-websocket-key"] == [fast.key], "\(context)")
        }
        // Enough mutations keep the head clean (an added header, a case flip) for the check to bite.
        #expect(taken > 500, "\(taken) taken")
    }
}
