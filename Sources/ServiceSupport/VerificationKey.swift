import Foundation
import JWTKit

/// One key a user token may be signed with, pinned to exactly one algorithm: a token that selects it
/// must name that `alg`, so an RSA public key is never used as an HMAC secret (alg confusion) and no
/// token chooses how its own signature is checked. The signature check itself is jwt-kit's.
struct VerificationKey: Sendable {
    /// The algorithms a token may name: HS256 for `AUTH_JWT_SECRET`, the others for keys of a JWKS.
    static let algorithms = ["HS256", "RS256", "ES256", "EdDSA"]

    /// The `kid` of a JWKS key; nil for the secret, and for JWKS keys published without one.
    let kid: String?
    /// `HS256`, `RS256`, `ES256` or `EdDSA`.
    let algorithm: String
    private let signer: any JWTAlgorithm

    private init(kid: String?, algorithm: String, signer: any JWTAlgorithm) {
        self.kid = kid
        self.algorithm = algorithm
        self.signer = signer
    }

    /// Whether `signature` is this key's signature of `input` (a malformed signature is simply not).
    func verifies(_ signature: [UInt8], of input: [UInt8]) -> Bool {
        (try? signer.verify(signature, signs: input)) ?? false
    }

    /// The HMAC-SHA256 key of `AUTH_JWT_SECRET`.
    static func hmac(secret: [UInt8]) async throws -> VerificationKey {
        let keys = await JWTKeyCollection().add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
        return VerificationKey(kid: nil, algorithm: "HS256", signer: try await keys.getKey())
    }

    /// A public key of a JWKS, pinned to `algorithm` (checked against its `kty` and `crv` by
    /// `KeySet`). `placeholder` names a key without `kid` inside jwt-kit's collection only.
    static func jwk(_ jwk: JWK, kid: String?, algorithm: String, placeholder: String) async throws -> VerificationKey {
        var jwk = jwk
        guard let pinned = JWK.Algorithm(rawValue: algorithm) else { throw KeySetError("alg \(algorithm) is not supported") }
        jwk.algorithm = pinned
        let identifier = JWKIdentifier(string: kid ?? placeholder)
        jwk.keyIdentifier = identifier
        let keys = try await JWTKeyCollection().add(jwk: jwk)
        let signer = try await keys.getKey(for: identifier, alg: algorithm)
        guard signer.name == algorithm else { throw KeySetError("jwt-kit made a \(signer.name) key of an \(algorithm) JWK") }
        return VerificationKey(kid: kid, algorithm: algorithm, signer: signer)
    }
}
