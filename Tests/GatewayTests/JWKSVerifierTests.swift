import ChatCore
import Foundation
import Logging
import Testing

@testable import ServiceSupport

@Suite("TokenVerifier with a JWKS: RS256, ES256 and EdDSA keys, kid selection, reloading, hostile tokens")
struct JWKSVerifierTests {
    let now = Date()
    let directory: URL

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("jwks-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    func claims(sub: String = "user-1", _ extra: String = "", iat: Double? = nil, exp: Double? = nil, iss: String = "iss-1") -> String {
        let t = now.timeIntervalSince1970
        return #"{"sub":"\#(sub)","iss":"\#(iss)","aud":"aud-1","iat":\#(Int(iat ?? t)),"exp":\#(Int(exp ?? t + 600))\#(extra)}"#
    }

    /// A verifier over a key set file (rewritten by `write`), with the secret when given.
    func verifier(
        _ keys: [TestSigningKey],
        secret: String? = nil,
        refetch: Duration = .seconds(3600),
        file: String = "jwks.json"
    ) async throws -> TokenVerifier {
        let path = directory.appendingPathComponent(file)
        try write(TestSigningKey.keySet(keys), to: file)
        var configuration = TokenVerifierConfiguration(secret: secret.map { Array($0.utf8) }, keySet: .file(path.path))
        configuration.issuer = "iss-1"
        configuration.audience = "aud-1"
        configuration.maxLifetimeSeconds = 3600
        configuration.keySetRefetchInterval = refetch
        return try await TokenVerifier.start(configuration: configuration, logger: Logger(label: "test"))
    }

    func write(_ text: String, to file: String = "jwks.json") throws {
        try Data(text.utf8).write(to: directory.appendingPathComponent(file), options: .atomic)
    }

    func expectRefusal(
        _ verifier: TokenVerifier,
        _ token: String,
        _ reason: String,
        sourceLocation: SourceLocation = #_sourceLocation
    ) async {
        do {
            _ = try await verifier.verify(token, now: now)
            Issue.record("accepted; expected a refusal for \(reason)", sourceLocation: sourceLocation)
        } catch {
            #expect(error.code == .unauthorized, sourceLocation: sourceLocation)
            #expect(error.error.contains(reason), "\(error.error) should name \(reason)", sourceLocation: sourceLocation)
        }
    }

    @Test func eachAlgorithmVerifiesWithItsKey() async throws {
        let keys = [
            try await TestSigningKey.rsa(kid: "r1"), try await TestSigningKey.ecdsa(kid: "e1"), try await TestSigningKey.eddsa(kid: "d1"),
        ]
        let verifier = try await verifier(keys, secret: TokenVerifierTests.secret)
        for key in keys {
            let verified = try await verifier.verify(
                try key.token(claims: claims(sub: "sub-\(key.algorithm)", #","username":"U""#)),
                now: now
            )
            #expect(verified.subject == "sub-\(key.algorithm)" && verified.username.rawValue == "U")
            #expect(verified.userID == VerifiedToken.userID(forSubject: "sub-\(key.algorithm)"))
        }
        // the secret works beside the key set
        let hs256 = TokenVerifierTests.token(claims: claims())
        #expect(try await verifier.verify(hs256, now: now).subject == "user-1")
        #expect(verifier.configuration.summary.hasPrefix("token (HS256 secret + JWKS from AUTH_JWKS_FILE"))
    }

    @Test func theKidSelectsTheKeyAndATokenWithoutKidNeedsAnUnambiguousAlg() async throws {
        let first = try await TestSigningKey.ecdsa(kid: "e1")
        let second = try await TestSigningKey.ecdsa(kid: "e2")
        let edwards = try await TestSigningKey.eddsa(kid: "d1")
        let verifier = try await verifier([first, second, edwards])
        #expect(try await verifier.verify(try second.token(claims: claims()), now: now).subject == "user-1")
        // signed by e2, naming e1: e1's key checks it
        await expectRefusal(verifier, try second.token(header: #"{"alg":"ES256","kid":"e1"}"#, claims: claims()), "bad signature")
        await expectRefusal(verifier, try second.token(header: #"{"alg":"ES256"}"#, claims: claims()), "has 2 ES256 keys")
        _ = try await verifier.verify(try edwards.token(header: #"{"alg":"EdDSA"}"#, claims: claims()), now: now)
        await expectRefusal(verifier, try first.token(header: #"{"alg":"ES256","kid":""}"#, claims: claims()), "kid must be")
        await expectRefusal(verifier, try first.token(header: #"{"alg":"ES256","kid":7}"#, claims: claims()), "kid must be")
    }

    @Test func anUnknownKidReloadsTheKeySet() async throws {
        let old = try await TestSigningKey.rsa(kid: "old")
        let new = try await TestSigningKey.eddsa(kid: "new")
        let verifier = try await verifier([old], refetch: .zero)
        await expectRefusal(verifier, try new.token(claims: claims()), "unknown kid new")
        try write(TestSigningKey.keySet([old, new]))
        #expect(try await verifier.verify(try new.token(claims: claims()), now: now).subject == "user-1")
        // the old key left the set: gone after the next reload
        let newer = try await TestSigningKey.ecdsa(kid: "newer")
        try write(TestSigningKey.keySet([new, newer]))
        _ = try await verifier.verify(try newer.token(claims: claims()), now: now)
        await expectRefusal(verifier, try old.token(claims: claims()), "unknown kid old")
        // a set that cannot be read now keeps the current keys
        try write("{not json")
        await expectRefusal(verifier, try old.token(claims: claims()), "unknown kid old")
        _ = try await verifier.verify(try new.token(claims: claims()), now: now)
    }

    @Test func reloadsAreRateLimited() async throws {
        let old = try await TestSigningKey.ecdsa(kid: "old")
        let new = try await TestSigningKey.ecdsa(kid: "new")
        let verifier = try await verifier([old], refetch: .seconds(3600))
        try write(TestSigningKey.keySet([old, new]))
        // loaded at start, less than the interval ago: no reload, whatever kids tokens name
        for bogus in ["a", "b", "new"] {
            await expectRefusal(verifier, try new.token(header: #"{"alg":"ES256","kid":"\#(bogus)"}"#, claims: claims()), "unknown kid")
        }
        var gate = RefetchGate(interval: .seconds(30), lastFetch: nil)
        let start = ContinuousClock.now
        let admitted = [0, 29, 30, 31, 59, 61].map { gate.admit(now: start + .seconds($0)) }
        #expect(admitted == [true, false, true, false, false, true])
    }

    @Test func hostileTokensAreRefused() async throws {
        let rsa = try await TestSigningKey.rsa(kid: "r1")
        let ecdsa = try await TestSigningKey.ecdsa(kid: "e1")
        let stranger = try await TestSigningKey.rsa(kid: "r1")  // same kid, another key
        let verifier = try await verifier([rsa, ecdsa])
        let t = now.timeIntervalSince1970
        func b64(_ text: String) -> String { TestSigningKey.b64(Data(text.utf8)) }
        let cases: [(String, String)] = [
            (b64(#"{"alg":"none","kid":"r1"}"#) + "." + b64(claims()) + ".", "alg none"),
            (try rsa.token(header: #"{"alg":"RS512","kid":"r1"}"#, claims: claims()), "alg RS512"),
            (try stranger.token(claims: claims()), "bad signature"),
            (try rsa.token(header: #"{"alg":"ES256","kid":"r1"}"#, claims: claims()), "alg ES256 does not match kid r1"),
            (try ecdsa.token(header: #"{"alg":"ES256","kid":"nope"}"#, claims: claims()), "unknown kid nope"),
            (try rsa.token(header: #"{"alg":"RS256","kid":"r1","crit":["exp"]}"#, claims: claims()), "crit"),
            (try rsa.token(claims: claims(exp: t - 1)), "expired"),
            (try rsa.token(claims: claims(#","nbf":\#(Int(t) + 120)"#)), "nbf"),
            (try rsa.token(claims: claims(iat: t + 120, exp: t + 600)), "iat"),
            (try ecdsa.token(claims: claims(iss: "other")), "iss"),
            (try ecdsa.token(claims: #"{"sub":"s","iss":"iss-1","aud":"other","exp":\#(Int(t) + 60)}"#), "aud"),
            (try ecdsa.token(claims: claims(exp: t + 3601)), "lifetime"),
            (try ecdsa.token(claims: #"{"iss":"iss-1","aud":"aud-1","exp":\#(Int(t) + 60)}"#), "no sub"),
            (try ecdsa.token(claims: claims(#","pad":"\#(String(repeating: "x", count: 9000))""#)), "at most 8192"),
        ]
        for (token, reason) in cases { await expectRefusal(verifier, token, reason) }
    }

    /// The classic confusion: an HS256 token whose HMAC key is the RSA public key (the JWK text, or the
    /// modulus) — refused for naming the RSA key's kid, and without a kid because no secret is set;
    /// with a secret set, the secret (not the RSA key) checks it.
    @Test func anRSAPublicKeyIsNeverAnHMACSecret() async throws {
        let rsa = try await TestSigningKey.rsa(kid: "r1")
        let withoutSecret = try await verifier([rsa])
        let withSecret = try await verifier([rsa], secret: TokenVerifierTests.secret, file: "second.json")
        for secret in [rsa.jwk, TestSigningKey.keySet([rsa])] {
            let named = TokenVerifierTests.token(header: #"{"alg":"HS256","kid":"r1"}"#, claims: claims(), secret: secret)
            let bare = TokenVerifierTests.token(header: #"{"alg":"HS256"}"#, claims: claims(), secret: secret)
            await expectRefusal(withoutSecret, named, "alg HS256 does not match kid r1's key (RS256)")
            await expectRefusal(withoutSecret, bare, "alg HS256 is not accepted (accepted: RS256, ES256, EdDSA)")
            await expectRefusal(withSecret, named, "alg HS256 does not match kid r1's key (RS256)")
            await expectRefusal(withSecret, bare, "bad signature")
        }
    }

    @Test func keysThatCannotBeUsedAreSkippedAndAnUnusableSetFailsStartUp() async throws {
        let good = try await TestSigningKey.ecdsa(kid: "good")
        let rsa = try await TestSigningKey.rsa(kid: "r")
        let foreign = [
            #"{"kty":"oct","kid":"h","k":"c2VjcmV0"}"#,
            #"{"kty":"EC","crv":"P-384","kid":"p384","x":"AA","y":"AA"}"#,
            rsa.jwk.replacingOccurrences(of: #""use":"sig""#, with: #""use":"enc""#),
            rsa.jwk.replacingOccurrences(of: #""kid":"r""#, with: #""kid":"r2","alg":"ES256""#),
            rsa.jwk.replacingOccurrences(of: #""kid":"r""#, with: #""kid":"r3","d":"AQAB""#),
            good.jwk,
            #""text""#,
        ]
        let set = try await KeySet.parse(Data(#"{"keys":[\#(good.jwk),\#(foreign.joined(separator: ","))]}"#.utf8))
        #expect(set.kids == ["good"])
        let reasons = set.skipped.joined(separator: "\n")
        for reason in [
            "kty oct", "P-384", "use is not sig", "alg ES256 is not accepted for kty RSA", "private key", "appears twice",
            "not a JSON object",
        ] {
            #expect(reasons.contains(reason), "\(reasons) should name \(reason)")
        }
        for text in [#"{"keys":[]}"#, #"{"keys":[\#(foreign[0])]}"#, "[1]", #"{"keys":"x"}"#, "not json"] {
            try write(text, to: "bad.json")
            var configuration = TokenVerifierConfiguration(secret: nil, keySet: .file(directory.appendingPathComponent("bad.json").path))
            configuration.issuer = nil
            await #expect(throws: ConfigurationError.self, "\(text)") {
                _ = try await TokenVerifier.start(configuration: configuration, logger: Logger(label: "test"))
            }
        }
        let missing = TokenVerifierConfiguration(secret: nil, keySet: .file(directory.appendingPathComponent("missing.json").path))
        do {
            _ = try await TokenVerifier.start(configuration: missing, logger: Logger(label: "test"))
            Issue.record("a missing key set file was accepted")
        } catch let error as ConfigurationError {
            #expect(error.description.contains("AUTH_JWKS_FILE") && error.description.contains("missing.json"), "\(error)")
        }
    }

    @Test func theKeySetSettingsAreChecked() throws {
        let jwks = try #require(
            try TokenVerifierConfiguration.fromEnvironment(Settings(["AUTH_JWKS_URL": "https://idp.example/jwks.json"]))
        )
        #expect(jwks.secret == nil && jwks.keySet == .url(URL(string: "https://idp.example/jwks.json")!))
        #expect(jwks.keySetRefetchInterval == .seconds(30))
        let file = try #require(
            try TokenVerifierConfiguration.fromEnvironment(
                Settings([
                    "AUTH_JWKS_FILE": "/etc/jwks.json", "AUTH_JWT_SECRET": TokenVerifierTests.secret, "AUTH_JWKS_REFETCH_SECONDS": "5",
                ])
            )
        )
        #expect(file.keySet == .file("/etc/jwks.json") && file.secret != nil && file.keySetRefetchInterval == .seconds(5))
        let refused: [[String: String]] = [
            ["AUTH_JWKS_URL": "ftp://idp.example/jwks"], ["AUTH_JWKS_URL": "not a url"], ["AUTH_JWKS_URL": "https://"],
            ["AUTH_JWKS_URL": "https://a.example/k", "AUTH_JWKS_FILE": "/k"], ["AUTH_JWKS_FILE": ""],
            ["AUTH_JWKS_REFETCH_SECONDS": "5"], ["AUTH_JWT_SECRET": TokenVerifierTests.secret, "AUTH_JWKS_REFETCH_SECONDS": "5"],
            ["AUTH_JWKS_FILE": "/k", "AUTH_JWKS_REFETCH_SECONDS": "0"],
        ]
        for environment in refused {
            #expect(throws: ConfigurationError.self, "\(environment)") {
                try TokenVerifierConfiguration.fromEnvironment(Settings(environment))
            }
        }
    }
}
