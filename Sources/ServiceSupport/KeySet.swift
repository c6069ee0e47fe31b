import Foundation
import JWTKit

/// Why a key set, or one key of it, cannot be used.
struct KeySetError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// The usable keys of a JWKS document (RFC 7517), each pinned to one algorithm. A set from an
/// identity provider often carries keys this service has no use for (encryption keys, other
/// algorithms): those are skipped with a reason, so one foreign key does not make the whole set
/// unusable; a set with no usable key at all is an error.
struct KeySet: Sendable {
    /// Pinned keys, by `kid`.
    var byKID: [String: VerificationKey] = [:]
    /// Keys published without a `kid`: a token without `kid` may select one by its `alg`.
    var withoutKID: [VerificationKey] = []
    /// One line per key that was left out, for the log.
    var skipped: [String] = []

    /// A key set larger than this is refused before it is parsed.
    static let maxBytes = 1 << 20
    /// At most this many keys are read from one set.
    static let maxKeys = 100

    var count: Int { byKID.count + withoutKID.count }

    var kids: [String] { byKID.keys.sorted() }

    static func parse(_ data: Data) async throws(KeySetError) -> KeySet {
        guard data.count <= maxBytes else { throw KeySetError("the key set is \(data.count) bytes (at most \(maxBytes))") }
        guard let document = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw KeySetError("the key set is not a JSON object")
        }
        guard let entries = document["keys"] as? [Any] else { throw KeySetError("the key set has no \"keys\" array") }
        var set = KeySet()
        for (index, entry) in entries.prefix(maxKeys).enumerated() {
            do throws(KeySetError) {
                let key = try await Self.key(entry, index: index)
                if let kid = key.kid {
                    guard set.byKID[kid] == nil else { throw KeySetError("kid \(kid.prefix(64)) appears twice; the first one is used") }
                    set.byKID[kid] = key
                } else {
                    set.withoutKID.append(key)
                }
            } catch {
                set.skipped.append("key \(index): \(error.description)")
            }
        }
        if entries.count > maxKeys { set.skipped.append("keys after the first \(maxKeys) are ignored") }
        guard set.count > 0 else {
            let reasons = set.skipped.isEmpty ? "it is empty" : set.skipped.joined(separator: "; ")
            throw KeySetError("the key set has no usable key (\(reasons))")
        }
        return set
    }

    /// The algorithm of a key: its `alg` when given (it must fit `kty`/`crv`), else the only one this
    /// service accepts for that key type.
    static func algorithm(kty: String?, crv: String?, alg: String?) throws(KeySetError) -> String {
        let inferred: String
        switch (kty, crv) {
        case ("RSA"?, _): inferred = "RS256"
        case ("EC"?, "P-256"?): inferred = "ES256"
        case ("OKP"?, "Ed25519"?): inferred = "EdDSA"
        case ("oct"?, _): throw KeySetError("kty oct (a symmetric key) is not accepted in a key set; use AUTH_JWT_SECRET")
        default: throw KeySetError("kty \(kty?.prefix(16) ?? "(none)") crv \(crv?.prefix(16) ?? "(none)") is not supported")
        }
        if let alg, alg != inferred {
            throw KeySetError("alg \(alg.prefix(16)) is not accepted for kty \(kty ?? "") (accepted: \(inferred))")
        }
        return inferred
    }

    private static func key(_ entry: Any, index: Int) async throws(KeySetError) -> VerificationKey {
        guard let object = entry as? [String: Any] else { throw KeySetError("not a JSON object") }
        if let use = object["use"] { guard use as? String == "sig" else { throw KeySetError("use is not sig") } }
        if object["d"] != nil { throw KeySetError("it holds a private key (d): publish public keys only") }
        if let kid = object["kid"], !(kid is String) { throw KeySetError("kid is not a string") }
        let kid = object["kid"] as? String
        let algorithm = try algorithm(kty: object["kty"] as? String, crv: object["crv"] as? String, alg: object["alg"] as? String)
        do {
            let jwk = try JSONDecoder().decode(JWK.self, from: JSONSerialization.data(withJSONObject: object))
            return try await VerificationKey.jwk(jwk, kid: kid, algorithm: algorithm, placeholder: "#\(index)")
        } catch let error as KeySetError {
            throw error
        } catch {
            throw KeySetError("not a valid \(algorithm) key (\(error))")
        }
    }
}
