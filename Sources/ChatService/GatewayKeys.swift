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
    /// What this replica knows of a gateway: the digest fixed in its record (it never changes for a
    /// presence id) and the key that matched it here, so a request costs a comparison, not a hash.
    private struct Known {
        var digest: String
        var key: [UInt8]?
    }

    let gateways: KeyValue
    private let known = Mutex<[GatewayID: Known]>([:])

    init(gateways: KeyValue) {
        self.gateways = gateways
    }

    /// The digest this replica knows for `gateway`, carried into every record it writes for it.
    func digest(of gateway: GatewayID) -> String? { known.withLock { $0[gateway]?.digest } }

    func authenticate(_ credential: GatewayCredential) async throws(ChatError) {
        let gateway = credential.gatewayID
        let presented = Array(credential.key.utf8)
        let remembered = known.withLock { $0[gateway] }
        if let key = remembered?.key, Self.equalInConstantTime(key, presented) { return }
        let digest = Self.digest(credential.key)
        if let remembered {
            guard remembered.digest == digest else { throw Self.wrongKey(gateway) }
            remember(gateway, Known(digest: digest, key: presented))
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
            remember(gateway, Known(digest: stored, key: stored == digest ? presented : nil))
            guard stored == digest else { throw Self.wrongKey(gateway) }
        } catch {
            throw ChatStorage.chatError(error)
        }
    }

    private func remember(_ gateway: GatewayID, _ entry: Known) {
        known.withLock { known in
            if known.count >= 100_000 { known.removeAll(keepingCapacity: true) }
            known[gateway] = entry
        }
    }

    static func equalInConstantTime(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for index in a.indices { difference |= a[index] ^ b[index] }
        return difference == 0
    }

    /// Lowercase hex of the key's SHA-256, as the gateway record keeps it.
    static func digest(_ key: String) -> String { ChatNames.hex(bytes: SHA256.hash(data: Array(key.utf8))) }

    private static func wrongKey(_ gateway: GatewayID) -> ChatError {
        ChatError(.forbidden, "the gateway key does not match the one gateway \(gateway) registered")
    }
}
