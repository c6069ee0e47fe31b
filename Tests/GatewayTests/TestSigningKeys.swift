import CryptoExtras
import Foundation
import JWTKit

/// A private key made in the test, with its public JWK and a signer for hand-made tokens (any header,
/// any claims), so hostile tokens can be signed as well as good ones.
struct TestSigningKey: Sendable {
    let kid: String?
    let algorithm: String
    /// The public key as a JWK object (JSON text).
    let jwk: String
    private let signer: any JWTAlgorithm

    static func rsa(kid: String?) async throws -> TestSigningKey {
        let key = try Insecure.RSA.PrivateKey(backing: _RSA.Signing.PrivateKey(keySize: .bits2048))
        let (n, e) = try key.publicKey.getKeyPrimitives()
        let keys = await JWTKeyCollection().add(rsa: key, digestAlgorithm: .sha256, kid: kid.map { JWKIdentifier(string: $0) })
        return TestSigningKey(
            kid: kid,
            algorithm: "RS256",
            jwk: Self.object(["kty": "RSA", "use": "sig", "n": Self.b64(n), "e": Self.b64(e)], kid: kid),
            signer: try await keys.getKey(for: kid.map { JWKIdentifier(string: $0) })
        )
    }

    static func ecdsa(kid: String?) async throws -> TestSigningKey {
        let key = ES256PrivateKey()
        let (x, y) = key.publicKey.parameters!
        let keys = await JWTKeyCollection().add(ecdsa: key, kid: kid.map { JWKIdentifier(string: $0) })
        return TestSigningKey(
            kid: kid,
            algorithm: "ES256",
            jwk: Self.object(["kty": "EC", "crv": "P-256", "x": x, "y": y], kid: kid),
            signer: try await keys.getKey(for: kid.map { JWKIdentifier(string: $0) })
        )
    }

    static func eddsa(kid: String?) async throws -> TestSigningKey {
        let key = try EdDSA.PrivateKey()
        let keys = await JWTKeyCollection().add(eddsa: key, kid: kid.map { JWKIdentifier(string: $0) })
        return TestSigningKey(
            kid: kid,
            algorithm: "EdDSA",
            jwk: Self.object(["kty": "OKP", "crv": "Ed25519", "x": Self.b64(key.publicKey.rawRepresentation)], kid: kid),
            signer: try await keys.getKey(for: kid.map { JWKIdentifier(string: $0) })
        )
    }

    /// A token with this header (JSON text; by default `alg` and `kid` of this key) and claims, signed by this key.
    func token(header: String? = nil, claims: String) throws -> String {
        let header = header ?? (kid.map { #"{"alg":"\#(algorithm)","kid":"\#($0)","typ":"JWT"}"# } ?? #"{"alg":"\#(algorithm)"}"#)
        let input = Self.b64(Data(header.utf8)) + "." + Self.b64(Data(claims.utf8))
        return input + "." + Self.b64(Data(try signer.sign(Array(input.utf8))))
    }

    static func keySet(_ keys: [TestSigningKey]) -> String { #"{"keys":[\#(keys.map(\.jwk).joined(separator: ","))]}"# }

    static func b64(_ data: some DataProtocol) -> String {
        Data(data).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    private static func object(_ fields: [String: String], kid: String?) -> String {
        var fields = fields
        if let kid { fields["kid"] = kid }
        let data = try! JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }
}
