import ChatCore
import Crypto
import Foundation
import Logging
import ServiceSupport
import Testing

@Suite("TokenVerifier: HS256 JWTs checked against RFC 7519 and the AUTH_JWT_* settings")
struct TokenVerifierTests {
    static let secret = "token-verifier-tests-secret-of-32+-bytes"
    let now = Date(timeIntervalSince1970: 1_800_000_000)

    var verifier: TokenVerifier {
        get async throws {
            var configuration = TokenVerifierConfiguration(secret: Array(Self.secret.utf8))
            configuration.issuer = "iss-1"
            configuration.audience = "aud-1"
            configuration.maxLifetimeSeconds = 3600
            return try await TokenVerifier.start(configuration: configuration, logger: Logger(label: "test"))
        }
    }

    static func b64(_ bytes: some Sequence<UInt8>) -> String {
        Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func token(header: String = #"{"alg":"HS256","typ":"JWT"}"#, claims: String, secret: String = secret) -> String {
        let signed = b64(Array(header.utf8)) + "." + b64(Array(claims.utf8))
        let mac = HMAC<SHA256>.authenticationCode(for: Array(signed.utf8), using: SymmetricKey(data: Array(secret.utf8)))
        return signed + "." + b64(mac)
    }

    func claims(_ extra: String = "", sub: String = "user-1", exp: Double? = nil) -> String {
        let t = now.timeIntervalSince1970
        return #"{"sub":"\#(sub)","iss":"iss-1","aud":"aud-1","iat":\#(Int(t)),"exp":\#(Int(exp ?? t + 600))\#(extra)}"#
    }

    @Test func aValidTokenGivesTheSubjectUsernameExpiryAndStableID() async throws {
        let verifier = try await verifier
        let verified = try await verifier.verify(Self.token(claims: claims(#","username":"Ann""#)), now: now)
        #expect(verified.subject == "user-1" && verified.username.rawValue == "Ann")
        #expect(verified.expiresAt == now.addingTimeInterval(600))
        #expect(verified.userID == VerifiedToken.userID(forSubject: "user-1"))
        let again = try await verifier.verify(Self.token(claims: claims(#","name":"Other""#)), now: now)
        #expect(again.userID == verified.userID && again.username.rawValue == "Other")
    }

    @Test func userIDsAreTheUUIDSubOrAVersion8NameBasedUUID() {
        let uuid = "6F9619FF-8B86-D011-B42D-00C04FC964FF"
        #expect(VerifiedToken.userID(forSubject: uuid).rawValue == uuid.lowercased())
        let derived = VerifiedToken.userID(forSubject: "alice@example").rawValue
        #expect(derived == VerifiedToken.userID(forSubject: "alice@example").rawValue)
        #expect(derived != VerifiedToken.userID(forSubject: "alice@example.").rawValue)
        let characters = Array(derived)
        #expect(characters[14] == "8", "version 8: \(derived)")
        #expect("89ab".contains(characters[19]), "variant 10: \(derived)")
    }

    @Test(arguments: [
        (#"{"alg":"RS256","typ":"JWT"}"#, "alg RS256"), (#"{"alg":"none"}"#, "alg none"), (#"{"typ":"JWT"}"#, "no alg"),
        (#"{"alg":"HS256","crit":["x"]}"#, "crit"), (#"{"alg":"HS256","typ":"JOSE"}"#, "typ"),
        (#"{"alg":"HS256","alg":"HS256"}"#, "duplicate"),
        (#"["HS256"]"#, "not a JSON object"),
    ])
    func headersAreChecked(_ header: String, _ reason: String) async throws {
        try await expectRefusal(Self.token(header: header, claims: claims()), reason)
    }

    @Test func claimsAreChecked() async throws {
        let t = now.timeIntervalSince1970
        let cases: [(String, String)] = [
            (claims(exp: t), "expired"),
            (claims(exp: t - 1), "expired"),
            (#"{"sub":"s","iss":"iss-1","aud":"aud-1"}"#, "no exp"),
            (#"{"sub":"s","iss":"iss-1","aud":"aud-1","exp":"\#(Int(t) + 60)"}"#, "exp must be a number"),
            (#"{"sub":"s","iss":"iss-1","aud":"aud-1","exp":1e308}"#, "lifetime"),
            (#"{"sub":"s","iss":"iss-1","aud":"aud-1","exp":1e999}"#, "exp must be a number"),
            (#"{"sub":"s","iss":"iss-1","aud":"aud-1","exp":\#(Int(t) + 3601)}"#, "lifetime"),
            (claims(exp: t + 3601), "lifetime"),
            (claims(#","nbf":\#(Int(t) + 31)"#), "nbf"),
            (#"{"sub":"s","iss":"iss-1","aud":"aud-1","iat":\#(Int(t) + 31),"exp":\#(Int(t) + 60)}"#, "iat"),
            (#"{"sub":"s","iss":"other","aud":"aud-1","exp":\#(Int(t) + 60)}"#, "iss"),
            (#"{"sub":"s","aud":"aud-1","exp":\#(Int(t) + 60)}"#, "iss"),
            (#"{"sub":"s","iss":"iss-1","aud":["a","b"],"exp":\#(Int(t) + 60)}"#, "aud"),
            (#"{"sub":"s","iss":"iss-1","exp":\#(Int(t) + 60)}"#, "aud"),
            (#"{"iss":"iss-1","aud":"aud-1","exp":\#(Int(t) + 60)}"#, "no sub"),
            (#"{"sub":"","iss":"iss-1","aud":"aud-1","exp":\#(Int(t) + 60)}"#, "no sub"),
            (claims(#","username":7"#), "username claim must be a string"),
            (claims(#","username":"bad\u0000name""#), "no valid username"),
        ]
        for (text, reason) in cases { try await expectRefusal(Self.token(claims: text), reason) }
    }

    @Test func leewayAndAudienceArraysAreAccepted() async throws {
        let t = Int(now.timeIntervalSince1970)
        let verifier = try await verifier
        _ = try await verifier.verify(Self.token(claims: claims(#","nbf":\#(t + 30)"#)), now: now)
        _ = try await verifier.verify(Self.token(claims: #"{"sub":"s","iss":"iss-1","aud":["x","aud-1"],"exp":\#(t + 60)}"#), now: now)
        _ = try await verifier.verify(Self.token(header: #"{"alg":"HS256"}"#, claims: claims()), now: now)
        // a kid on an HS256 token names no JWKS key here: the secret checks it
        _ = try await verifier.verify(Self.token(header: #"{"alg":"HS256","kid":"any"}"#, claims: claims()), now: now)
    }

    @Test func theSignatureAndTheFormAreChecked() async throws {
        let good = Self.token(claims: claims())
        try await expectRefusal(Self.token(claims: claims(), secret: Self.secret + "x"), "bad signature")
        try await expectRefusal(good + "=", "bad signature")
        try await expectRefusal(String(good.dropLast(2)) + "AA", "bad signature")
        try await expectRefusal(good.split(separator: ".").prefix(2).joined(separator: "."), "not a JWT")
        try await expectRefusal("aaaa.bbbb.cccc.dddd", "not a JWT")
        try await expectRefusal("!!.e30.x", "not base64url")
        let padding = String(repeating: "a", count: TokenVerifier.maxTokenBytes)
        try await expectRefusal(Self.token(claims: claims(#","pad":"\#(padding)""#)), "bytes (at most \(TokenVerifier.maxTokenBytes))")
    }

    func expectRefusal(_ token: String, _ reason: String, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let verifier = try await verifier
        do {
            _ = try await verifier.verify(token, now: now)
            Issue.record("accepted; expected a refusal for \(reason)", sourceLocation: sourceLocation)
        } catch {
            #expect(error.code == .unauthorized, sourceLocation: sourceLocation)
            #expect(error.error.contains(reason), "\(error.error) should name \(reason)", sourceLocation: sourceLocation)
            #expect(!error.error.contains(token.split(separator: ".").last ?? "-"), sourceLocation: sourceLocation)
        }
    }

    @Test func configurationCannotBeHalfOn() throws {
        #expect(try TokenVerifierConfiguration.fromEnvironment(Settings([:])) == nil)
        let environments: [[String: String]] = [
            ["AUTH_JWT_SECRET": ""], ["AUTH_JWT_SECRET": "x"], ["AUTH_JWT_SECRET": String(repeating: "a", count: 31)],
            ["AUTH_JWT_ISSUER": "i"], ["AUTH_JWT_LEEWAY_SECONDS": "5"],
            ["AUTH_JWT_SECRET": Self.secret, "AUTH_JWT_LEEWAY_SECONDS": "soon"],
            ["AUTH_JWT_SECRET": Self.secret, "AUTH_JWT_MAX_LIFETIME_SECONDS": "0"],
        ]
        for environment in environments {
            #expect(throws: ConfigurationError.self, "\(environment)") {
                try TokenVerifierConfiguration.fromEnvironment(Settings(environment))
            }
        }
        let read = try #require(
            try TokenVerifierConfiguration.fromEnvironment(
                Settings(["AUTH_JWT_SECRET": Self.secret, "AUTH_JWT_ISSUER": "i", "AUTH_JWT_AUDIENCE": "a", "AUTH_JWT_LEEWAY_SECONDS": "5"])
            )
        )
        #expect(read.secret == Array(Self.secret.utf8) && read.issuer == "i" && read.audience == "a")
        #expect(read.leewaySeconds == 5 && read.maxLifetimeSeconds == 86_400)
        #expect(read.summary.hasPrefix("token (HS256 secret, issuer 'i', audience 'a'"))
    }
}
