import Foundation

/// How user tokens (JWTs) are verified, from `AUTH_JWT_*` and `AUTH_JWKS_*` (docs/configuration.md).
/// Shared by every process that verifies tokens, so they cannot disagree on the rules.
public struct TokenVerifierConfiguration: Sendable {
    /// HMAC keys shorter than the hash output are brute-forceable; RFC 7518 §3.2 asks for at least 256 bits.
    public static let minimumSecretBytes = 32

    /// `AUTH_JWT_SECRET`, at least `minimumSecretBytes` bytes: the HS256 key.
    public var secret: [UInt8]?
    /// `AUTH_JWKS_FILE` or `AUTH_JWKS_URL`: the RS256, ES256 and EdDSA keys.
    public var keySet: KeySetSource?
    /// `AUTH_JWKS_REFETCH_SECONDS`: the key set is loaded again for an unknown `kid` at most this often.
    public var keySetRefetchInterval = Duration.seconds(30)
    /// `AUTH_JWT_LEEWAY_SECONDS`: clock skew allowed for `nbf` and `iat`.
    public var leewaySeconds = 30
    /// `AUTH_JWT_ISSUER`: when set, `iss` must equal it.
    public var issuer: String?
    /// `AUTH_JWT_AUDIENCE`: when set, `aud` (a string or an array of strings) must contain it.
    public var audience: String?
    /// `AUTH_JWT_MAX_LIFETIME_SECONDS`: how far `exp` may lie beyond `iat` (or beyond now without `iat`).
    public var maxLifetimeSeconds = 86_400

    public init(secret: [UInt8]?, keySet: KeySetSource? = nil) {
        self.secret = secret
        self.keySet = keySet
    }

    /// The token settings, or nil for username mode (no `AUTH_JWT_SECRET` and no JWKS at all). A secret
    /// that is present but empty or short, a malformed JWKS URL, or both JWKS settings fail start-up
    /// instead of quietly switching authentication off, and so do the other settings without a key
    /// (they would be ignored).
    public static func fromEnvironment(_ settings: Settings) throws -> TokenVerifierConfiguration? {
        let related = [
            "AUTH_JWT_LEEWAY_SECONDS", "AUTH_JWT_ISSUER", "AUTH_JWT_AUDIENCE", "AUTH_JWT_MAX_LIFETIME_SECONDS", "AUTH_JWKS_REFETCH_SECONDS",
        ]
        let secret = try Self.secret(settings)
        let keySet = try Self.keySet(settings)
        guard secret != nil || keySet != nil else {
            if let stray = related.first(where: { settings.optional($0) != nil }) {
                throw ConfigurationError(
                    "\(stray) is set but none of AUTH_JWT_SECRET, AUTH_JWKS_FILE and AUTH_JWKS_URL is: set a key, or unset \(stray)"
                )
            }
            return nil
        }
        if keySet == nil, settings.optional("AUTH_JWKS_REFETCH_SECONDS") != nil {
            throw ConfigurationError("AUTH_JWKS_REFETCH_SECONDS is set but no JWKS is (AUTH_JWKS_FILE or AUTH_JWKS_URL)")
        }
        var c = TokenVerifierConfiguration(secret: secret, keySet: keySet)
        c.keySetRefetchInterval = .seconds(try settings.int("AUTH_JWKS_REFETCH_SECONDS", default: 30, range: 1...86_400))
        c.leewaySeconds = try settings.int("AUTH_JWT_LEEWAY_SECONDS", default: c.leewaySeconds, range: 0...3600)
        c.maxLifetimeSeconds = try settings.int("AUTH_JWT_MAX_LIFETIME_SECONDS", default: c.maxLifetimeSeconds, range: 60...31_536_000)
        c.issuer = settings.optional("AUTH_JWT_ISSUER")
        c.audience = settings.optional("AUTH_JWT_AUDIENCE")
        return c
    }

    private static func secret(_ settings: Settings) throws -> [UInt8]? {
        guard let secret = settings.values["AUTH_JWT_SECRET"] else { return nil }
        guard !secret.isEmpty else {
            throw ConfigurationError(
                "AUTH_JWT_SECRET is set but empty: unset it (username mode, or JWKS only), or give at least \(minimumSecretBytes) bytes"
            )
        }
        guard secret.utf8.count >= minimumSecretBytes else {
            throw ConfigurationError("AUTH_JWT_SECRET is \(secret.utf8.count) bytes: an HS256 secret needs at least \(minimumSecretBytes)")
        }
        return Array(secret.utf8)
    }

    private static func keySet(_ settings: Settings) throws -> KeySetSource? {
        for key in ["AUTH_JWKS_FILE", "AUTH_JWKS_URL"] where settings.values[key] == "" {
            throw ConfigurationError("\(key) is set but empty: unset it, or name the key set")
        }
        switch (settings.optional("AUTH_JWKS_FILE"), settings.optional("AUTH_JWKS_URL")) {
        case (nil, nil):
            return nil
        case (.some, .some):
            throw ConfigurationError("AUTH_JWKS_FILE and AUTH_JWKS_URL are both set: the key set comes from one of them")
        case (let path?, nil):
            return .file(path)
        case (nil, let text?):
            guard let url = URL(string: text), let scheme = url.scheme?.lowercased(), ["http", "https"].contains(scheme),
                url.host?.isEmpty == false
            else {
                throw ConfigurationError("AUTH_JWKS_URL=\(text) must be an http:// or https:// URL with a host")
            }
            return .url(url)
        }
    }

    /// The keys, for the start-up log: "HS256 secret", "JWKS from AUTH_JWKS_URL …", or both.
    var keysSummary: String {
        [secret.map { _ in "HS256 secret" }, keySet.map { "JWKS from \($0)" }].compactMap { $0 }.joined(separator: " + ")
    }

    /// One line for the start-up log: "token (HS256 secret, issuer …, audience …)".
    public var summary: String {
        "token (\(keysSummary), issuer \(issuer.map { "'\($0)'" } ?? "not checked"), "
            + "audience \(audience.map { "'\($0)'" } ?? "not checked"), leeway \(leewaySeconds) s, max lifetime \(maxLifetimeSeconds) s)"
    }
}
