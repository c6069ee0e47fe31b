import Foundation

/// How user tokens (HS256 JWTs) are verified, from `AUTH_JWT_*` (docs/configuration.md). Shared by every
/// process that verifies tokens, so they cannot disagree on the rules.
public struct TokenVerifierConfiguration: Sendable {
    /// HMAC keys shorter than the hash output are brute-forceable; RFC 7518 §3.2 asks for at least 256 bits.
    public static let minimumSecretBytes = 32

    /// `AUTH_JWT_SECRET`, at least `minimumSecretBytes` bytes.
    public var secret: [UInt8]
    /// `AUTH_JWT_LEEWAY_SECONDS`: clock skew allowed for `nbf` and `iat`.
    public var leewaySeconds = 30
    /// `AUTH_JWT_ISSUER`: when set, `iss` must equal it.
    public var issuer: String?
    /// `AUTH_JWT_AUDIENCE`: when set, `aud` (a string or an array of strings) must contain it.
    public var audience: String?
    /// `AUTH_JWT_MAX_LIFETIME_SECONDS`: how far `exp` may lie beyond `iat` (or beyond now without `iat`).
    public var maxLifetimeSeconds = 86_400

    public init(secret: [UInt8]) { self.secret = secret }

    /// The token settings, or nil for username mode (no `AUTH_JWT_SECRET` at all). A secret that is
    /// present but empty or short fails start-up instead of quietly switching authentication off, and
    /// so do the other `AUTH_JWT_*` settings without a secret (they would be ignored).
    public static func fromEnvironment(_ settings: Settings) throws -> TokenVerifierConfiguration? {
        let related = ["AUTH_JWT_LEEWAY_SECONDS", "AUTH_JWT_ISSUER", "AUTH_JWT_AUDIENCE", "AUTH_JWT_MAX_LIFETIME_SECONDS"]
        guard let secret = settings.values["AUTH_JWT_SECRET"] else {
            if let stray = related.first(where: { settings.optional($0) != nil }) {
                throw ConfigurationError("\(stray) is set but AUTH_JWT_SECRET is not: set the secret, or unset \(stray)")
            }
            return nil
        }
        guard !secret.isEmpty else {
            throw ConfigurationError(
                "AUTH_JWT_SECRET is set but empty: unset it for username mode, or give at least \(minimumSecretBytes) bytes"
            )
        }
        guard secret.utf8.count >= minimumSecretBytes else {
            throw ConfigurationError("AUTH_JWT_SECRET is \(secret.utf8.count) bytes: an HS256 secret needs at least \(minimumSecretBytes)")
        }
        var c = TokenVerifierConfiguration(secret: Array(secret.utf8))
        c.leewaySeconds = try settings.int("AUTH_JWT_LEEWAY_SECONDS", default: c.leewaySeconds, range: 0...3600)
        c.maxLifetimeSeconds = try settings.int("AUTH_JWT_MAX_LIFETIME_SECONDS", default: c.maxLifetimeSeconds, range: 60...31_536_000)
        c.issuer = settings.optional("AUTH_JWT_ISSUER")
        c.audience = settings.optional("AUTH_JWT_AUDIENCE")
        return c
    }

    /// One line for the start-up log: "token (HS256, issuer …, audience …)".
    public var summary: String {
        "token (HS256, issuer \(issuer.map { "'\($0)'" } ?? "not checked"), audience \(audience.map { "'\($0)'" } ?? "not checked"), "
            + "leeway \(leewaySeconds) s, max lifetime \(maxLifetimeSeconds) s)"
    }
}
