import ChatCore
import Foundation
import Logging

/// Verifies user tokens: compact JWTs (RFC 7519) signed with `AUTH_JWT_SECRET` (HS256) or with a key
/// of a JWKS (`AUTH_JWKS_FILE` / `AUTH_JWKS_URL`: RS256, ES256, EdDSA). The header and the claims are
/// checked here, rule by rule, so each refusal can say which check failed; the signature is jwt-kit's:
///
/// - size: at most `maxTokenBytes`;
/// - header: `alg` one of `VerificationKey.algorithms` (`none`, `HS512`, … are refused whatever the
///   signature), no `crit` (no extension is understood), `typ` absent or `JWT`;
/// - the key: with a `kid`, the JWKS key of that `kid` (the set is loaded again, rate-limited, when it
///   has none), else the one key for the token's `alg`; HS256 always means the secret. The token's `alg`
///   must be the key's own (`VerificationKey`): an HS256 token naming an RSA key's `kid` is refused;
/// - the signature, before any claim is read;
/// - claims: `exp` required, `nbf` and `iat` with the leeway, `iss` and `aud` when configured, `exp` at
///   most the maximum lifetime after `iat` (or after now without `iat`), `sub` required.
///
/// Every error is `ChatError(.unauthorized)`; the token itself is never echoed.
public struct TokenVerifier: Sendable {
    /// Tokens are a few hundred bytes; a larger one is refused before it is decoded.
    public static let maxTokenBytes = 8192

    public let configuration: TokenVerifierConfiguration
    let keys: TokenKeys

    /// Makes the keys: the secret's, and the JWKS (read, or fetched until it answers: `KeySetSource`).
    /// Throws `ConfigurationError` for a key set file that cannot be used.
    public static func start(configuration: TokenVerifierConfiguration, logger: Logger) async throws -> TokenVerifier {
        let secret = try await configuration.secret.asyncMap { try await VerificationKey.hmac(secret: $0) }
        var set = KeySet()
        if let source = configuration.keySet {
            set = try await source.loadAtStart(logger: logger)
            logger.info(
                "token key set loaded",
                metadata: [
                    "source": "\(source)", "kids": "\(set.kids)", "without_kid": "\(set.withoutKID.count)", "skipped": "\(set.skipped)",
                ]
            )
        }
        let keys = TokenKeys(
            secret: secret,
            source: configuration.keySet,
            set: set,
            refetchInterval: configuration.keySetRefetchInterval,
            logger: logger
        )
        return TokenVerifier(configuration: configuration, keys: keys)
    }

    init(configuration: TokenVerifierConfiguration, keys: TokenKeys) {
        self.configuration = configuration
        self.keys = keys
    }

    public func verify(_ token: String) async throws(ChatError) -> VerifiedToken {
        try await verify(token, now: Date())
    }

    public func verify(_ token: String, now: Date) async throws(ChatError) -> VerifiedToken {
        guard token.utf8.count <= Self.maxTokenBytes else {
            throw Self.refused("the token is \(token.utf8.count) bytes (at most \(Self.maxTokenBytes))")
        }
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3 else { throw Self.refused("not a JWT (expected header.claims.signature)") }
        let header = try Self.object(parts[0], "header")
        guard case .string(let algorithm)? = header["alg"] else { throw Self.refused("the header has no alg") }
        guard VerificationKey.algorithms.contains(algorithm) else {
            throw Self.refused("alg \(algorithm.prefix(20)) is not accepted (accepted: \(accepted))")
        }
        if header["crit"] != nil { throw Self.refused("the header's crit extensions are not supported") }
        if let type = header["typ"] {
            guard case .string(let text) = type, text.uppercased() == "JWT" else { throw Self.refused("typ must be JWT") }
        }
        var kid: String?
        if let value = header["kid"] {
            guard case .string(let text) = value, !text.isEmpty else { throw Self.refused("kid must be a non-empty string") }
            kid = text
        }
        let key = try await key(algorithm: algorithm, kid: kid)
        guard let signature = Self.base64URL(parts[2]), key.verifies(signature, of: Array("\(parts[0]).\(parts[1])".utf8)) else {
            throw Self.refused("bad signature")
        }
        let claims = try Self.object(parts[1], "claims")
        return try check(claims, now: now.timeIntervalSince1970)
    }

    /// The algorithms this configuration has keys for, for refusals.
    private var accepted: String {
        var names = configuration.secret == nil ? [] : ["HS256"]
        if configuration.keySet != nil { names += ["RS256", "ES256", "EdDSA"] }
        return names.joined(separator: ", ")
    }

    /// The key a token selects, pinned to the token's `alg`.
    private func key(algorithm: String, kid: String?) async throws(ChatError) -> VerificationKey {
        if algorithm == "HS256" {
            if let kid, let named = keys.set.byKID[kid] {
                throw Self.refused("alg HS256 does not match kid \(kid.prefix(64))'s key (\(named.algorithm))")
            }
            guard let secret = keys.secret else { throw Self.refused("alg HS256 is not accepted (accepted: \(accepted))") }
            return secret
        }
        guard configuration.keySet != nil else { throw Self.refused("alg \(algorithm) is not accepted (accepted: \(accepted))") }
        guard let kid else {
            let set = keys.set
            let candidates: [VerificationKey] = (set.withoutKID + Array(set.byKID.values)).filter { $0.algorithm == algorithm }
            guard candidates.count == 1 else {
                throw Self.refused("the token has no kid and the key set has \(candidates.count) \(algorithm) keys (a kid is needed)")
            }
            return candidates[0]
        }
        guard let key = await keys.key(kid: kid) else {
            throw Self.refused("unknown kid \(kid.prefix(64)) (not in the key set, also after reloading it at most every \(keysInterval))")
        }
        guard key.algorithm == algorithm else {
            throw Self.refused("alg \(algorithm) does not match kid \(kid.prefix(64))'s key (\(key.algorithm))")
        }
        return key
    }

    private var keysInterval: String { "\(configuration.keySetRefetchInterval.components.seconds) s" }

    private func check(_ claims: JSONObject, now: Double) throws(ChatError) -> VerifiedToken {
        let leeway = Double(configuration.leewaySeconds)
        guard let expiry = try Self.date(claims, "exp") else { throw Self.refused("the token has no exp") }
        guard now < expiry else { throw Self.refused("the token has expired") }
        if let notBefore = try Self.date(claims, "nbf"), notBefore > now + leeway { throw Self.refused("the token is not valid yet (nbf)") }
        let issuedAt = try Self.date(claims, "iat")
        if let issuedAt, issuedAt > now + leeway { throw Self.refused("the token was issued in the future (iat)") }
        guard expiry - (issuedAt ?? now) <= Double(configuration.maxLifetimeSeconds) else {
            throw Self.refused(
                "the token's lifetime exceeds \(configuration.maxLifetimeSeconds) s (exp too far after \(issuedAt == nil ? "now" : "iat"))"
            )
        }
        if let issuer = configuration.issuer {
            guard case .string(issuer)? = claims["iss"] else { throw Self.refused("wrong or missing iss") }
        }
        if let audience = configuration.audience {
            let matches: Bool
            switch claims["aud"] {
            case .string(let text)?: matches = text == audience
            case .array(let items)?: matches = items.contains(.string(audience))
            default: matches = false
            }
            guard matches else { throw Self.refused("wrong or missing aud") }
        }
        guard case .string(let subject)? = claims["sub"], !subject.isEmpty else { throw Self.refused("the token has no sub") }
        var name = subject
        for key in ["username", "name"] {
            guard let value = claims[key], value != .null else { continue }
            guard case .string(let text) = value else { throw Self.refused("the \(key) claim must be a string") }
            name = text
            break
        }
        guard let username = Username(name) else { throw Self.refused("the token has no valid username claim") }
        return VerifiedToken(
            subject: subject,
            userID: VerifiedToken.userID(forSubject: subject),
            username: username,
            expiresAt: Date(timeIntervalSince1970: expiry)
        )
    }

    /// A NumericDate claim (seconds since 1970, maybe fractional); nil when absent.
    private static func date(_ claims: JSONObject, _ key: String) throws(ChatError) -> Double? {
        guard let value = claims[key] else { return nil }
        guard case .number(let text) = value, let seconds = Double(text), seconds.isFinite else {
            throw refused("\(key) must be a number of seconds")
        }
        return seconds
    }

    private static func object(_ part: Substring, _ what: String) throws(ChatError) -> JSONObject {
        guard let bytes = base64URL(part) else { throw refused("the \(what) is not base64url") }
        let value: JSONValue
        do throws(ChatError) {
            value = try JSONReader.parse(bytes)
        } catch {
            throw refused("the \(what) is not valid JSON (\(error.error))")
        }
        guard case .object(let object) = value else { throw refused("the \(what) is not a JSON object") }
        return object
    }

    /// base64url without padding (RFC 7515 §2); nil for anything else.
    static func base64URL(_ text: Substring) -> [UInt8]? {
        guard
            text.utf8.allSatisfy({ byte in
                switch byte {
                case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                    UInt8(ascii: "-"), UInt8(ascii: "_"):
                    true
                default: false
                }
            }), text.utf8.count % 4 != 1
        else { return nil }
        var standard = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        standard += String(repeating: "=", count: (4 - standard.utf8.count % 4) % 4)
        return Data(base64Encoded: standard).map(Array.init)
    }

    private static func refused(_ reason: String) -> ChatError { ChatError(.unauthorized, "invalid token: \(reason)") }
}

extension Optional {
    fileprivate func asyncMap<T>(_ transform: (Wrapped) async throws -> T) async rethrows -> T? {
        guard let self else { return nil }
        return try await transform(self)
    }
}
