import ChatCore
import Crypto
import Foundation

/// Verifies user tokens: compact HS256 JWTs (RFC 7519) signed with `AUTH_JWT_SECRET`. Written against
/// the RFC with swift-crypto's HMAC rather than through a JWT library, so every rule below is explicit
/// and each refusal can say which check failed:
///
/// - header: `alg` exactly `HS256` (the key is an HMAC key; `none`, `RS256`, … are refused whatever the
///   signature), no `crit` (no extension is understood), `typ` absent or `JWT`;
/// - the signature (constant-time comparison), before any claim is read;
/// - claims: `exp` required, `nbf` and `iat` with the leeway, `iss` and `aud` when configured, `exp` at
///   most the maximum lifetime after `iat` (or after now without `iat`), `sub` required.
///
/// Every error is `ChatError(.unauthorized)`; the token itself is never echoed.
public struct TokenVerifier: Sendable {
    public let configuration: TokenVerifierConfiguration
    private let key: SymmetricKey

    public init(configuration: TokenVerifierConfiguration) {
        self.configuration = configuration
        self.key = SymmetricKey(data: configuration.secret)
    }

    /// Async so a later key source (rotation, a key set fetched over the network) fits the same call.
    public func verify(_ token: String) async throws(ChatError) -> VerifiedToken {
        try verify(token, now: Date())
    }

    public func verify(_ token: String, now: Date) throws(ChatError) -> VerifiedToken {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3 else { throw Self.refused("not a JWT (expected header.claims.signature)") }
        let header = try Self.object(parts[0], "header")
        guard case .string(let algorithm)? = header["alg"] else { throw Self.refused("the header has no alg") }
        guard algorithm == "HS256" else { throw Self.refused("alg \(algorithm.prefix(20)) is not accepted (only HS256)") }
        if header["crit"] != nil { throw Self.refused("the header's crit extensions are not supported") }
        if let type = header["typ"] {
            guard case .string(let text) = type, text.uppercased() == "JWT" else { throw Self.refused("typ must be JWT") }
        }
        let signed = Array("\(parts[0]).\(parts[1])".utf8)
        guard let signature = Self.base64URL(parts[2]),
            HMAC<SHA256>.isValidAuthenticationCode(signature, authenticating: signed, using: key)
        else { throw Self.refused("bad signature") }
        let claims = try Self.object(parts[1], "claims")
        return try check(claims, now: now.timeIntervalSince1970)
    }

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
