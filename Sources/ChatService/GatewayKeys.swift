import ChatCore
import Crypto
import Foundation
import NATS
import Synchronization

/// Proves that a request comes from the gateway it names (`GatewayCredential`): the first request of
/// a presence id fixes its key digest in the gateway's `chat_gateways` record (create-if-absent, so of
/// two racing claimants one wins); every later one must present the same key. A record written without
/// a digest (by a chat-service older than keys) is adopted by compare-and-set.
final class GatewayKeys: Sendable {
    let gateways: KeyValue
    /// Each gateway's key digest once read or fixed: it never changes for a presence id.
    private let digests = Mutex<[GatewayID: String]>([:])
    /// The key that matched each gateway's digest here, so a request from it costs a comparison, not a hash.
    private let proven = Mutex<[GatewayID: [UInt8]]>([:])

    init(gateways: KeyValue) {
        self.gateways = gateways
    }

    /// The digest this replica knows for `gateway`, carried into every record it writes for it.
    func digest(of gateway: GatewayID) -> String? { digests.withLock { $0[gateway] } }

    func authenticate(_ credential: GatewayCredential) async throws(ChatError) {
        let gateway = credential.gatewayID
        let presented = Array(credential.key.utf8)
        if let key = proven.withLock({ $0[gateway] }), Self.equalInConstantTime(key, presented) { return }
        let digest = Self.digest(credential.key)
        if let known = digests.withLock({ $0[gateway] }) {
            guard known == digest else { throw Self.wrongKey(gateway) }
            remember(gateway, key: presented)
            return
        }
        do {
            let key = ChatNames.gatewayKey(gateway)
            var stored: String?
            for _ in 0..<5 where stored == nil {
                if let entry = try await gateways.value(key) {
                    var record =
                        (try? JSONDecoder().decode(PresenceRegistry.GatewayRecord.self, from: Data(entry.value)))
                        ?? PresenceRegistry.GatewayRecord(
                            gatewayID: gateway.rawValue,
                            lastSeenMilliseconds: ChatTime.now().milliseconds,
                            connections: -1
                        )
                    if let fixed = record.keySHA256 {
                        stored = fixed
                    } else {
                        record.keySHA256 = digest
                        if try await gateways.updateIfRevision(key, try PresenceRegistry.encoded(record), revision: entry.revision) != nil {
                            stored = digest
                        }
                    }
                } else {
                    let record = PresenceRegistry.GatewayRecord(
                        gatewayID: gateway.rawValue,
                        lastSeenMilliseconds: ChatTime.now().milliseconds,
                        connections: -1,
                        keySHA256: digest
                    )
                    if try await gateways.createIfAbsent(key, try PresenceRegistry.encoded(record)) != nil { stored = digest }
                }
            }
            guard let stored else { throw ChatError(.unavailable, "the record of gateway \(gateway) kept changing; try again") }
            digests.withLock { digests in
                if digests.count >= 100_000 { digests.removeAll(keepingCapacity: true) }
                digests[gateway] = stored
            }
            guard stored == digest else { throw Self.wrongKey(gateway) }
            remember(gateway, key: presented)
        } catch {
            throw ChatStorage.chatError(error)
        }
    }

    private func remember(_ gateway: GatewayID, key: [UInt8]) {
        proven.withLock { proven in
            if proven.count >= 100_000 { proven.removeAll(keepingCapacity: true) }
            proven[gateway] = key
        }
    }

    static func equalInConstantTime(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for index in a.indices { difference |= a[index] ^ b[index] }
        return difference == 0
    }

    /// Lowercase hex of SHA-256: on every request from a gateway, so no `String(format:)` per byte.
    static func digest(_ key: String) -> String {
        let hex = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(64)
        for byte in SHA256.hash(data: Array(key.utf8)) {
            out.append(hex[Int(byte >> 4)])
            out.append(hex[Int(byte & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static func wrongKey(_ gateway: GatewayID) -> ChatError {
        ChatError(.forbidden, "the gateway key does not match the one gateway \(gateway) registered")
    }
}
