/// How a gateway proves, on every request, that it is the gateway it names: a presence id and a random
/// key made when the process starts. The chat-service keeps the key's SHA-256 with the gateway's record
/// from the first request on (`PresenceRegistry.authenticate`), so a holder of the shared gateway NATS
/// credential cannot speak for a gateway that is running — neither sync its presence away nor send or
/// leave for the members it holds (docs/security.md). Only the chat-service subscribes to `chat.svc.>`,
/// so no other NATS user sees the key.
public struct GatewayCredential: Sendable, Equatable {
    public let gatewayID: GatewayID
    /// 64 lowercase hex digits (256 random bits).
    public let key: String

    public init(gatewayID: GatewayID, key: String) {
        self.gatewayID = gatewayID
        self.key = key
    }

    public static func random(gatewayID: GatewayID) -> GatewayCredential {
        GatewayCredential(gatewayID: gatewayID, key: randomKey())
    }

    public static func randomKey() -> String {
        var generator = SystemRandomNumberGenerator()
        let digits = Array("0123456789abcdef".utf8)
        return String(decoding: (0..<64).map { _ in digits[Int(generator.next() % 16)] }, as: UTF8.self)
    }

    /// A key as it may appear in the header: 32–128 characters of `[A-Za-z0-9_-]`.
    public static func isValidKey(_ key: String) -> Bool {
        key.utf8.count >= 32 && isToken(key, maxLength: 128)
    }
}
