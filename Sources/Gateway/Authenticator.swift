import ChatCore
import Foundation
import HTTPTypes
import Hummingbird
import JWTKit
import NIOCore

/// Who a WebSocket client is, decided before the upgrade.
struct Identity: Sendable {
    var userID: UserID
    var username: Username
}

/// Claims accepted in a gateway JWT (HS256): `sub` (a UUID becomes the user id), `username` or
/// `name`, and `exp`, which is required.
struct ChatClaims: JWTPayload {
    var sub: SubjectClaim?
    var exp: ExpirationClaim
    var username: String?
    var name: String?

    func verify(using algorithm: some JWTAlgorithm) async throws {
        try exp.verifyNotExpired()
    }
}

/// Origin check and optional JWT authentication for `/ws`.
struct Authenticator: Sendable {
    let allowedOrigins: Set<String>
    let keys: JWTKeyCollection?

    static func make(configuration: GatewayConfiguration) async -> Authenticator {
        var keys: JWTKeyCollection?
        if let secret = configuration.jwtSecret {
            let collection = JWTKeyCollection()
            await collection.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
            keys = collection
        }
        return Authenticator(allowedOrigins: Set(configuration.allowedOrigins), keys: keys)
    }

    /// Whether identifying a client needs a token check (which suspends); without one the decision
    /// is `identifyByUsername`, taken on the event loop during a connect storm.
    var requiresToken: Bool { keys != nil }

    /// Throws the HTTP error to answer instead of upgrading.
    func identify(_ request: Request) async throws(GatewayHTTPError) -> Identity {
        guard let keys else { return try identifyByUsername(request) }
        try checkOrigin(request)
        // Form decoding: `+` is a space (`?username=a+b` is "a b"); broken percent-encoding is refused.
        let query = FormQuery.parse(request.uri.query ?? "")
        var token = query["token"].map { $0 ?? "" }
        if token == nil, let header = request.headers[.authorization], header.lowercased().hasPrefix("bearer ") {
            token = String(header.dropFirst(7)).trimmingCharacters(in: .whitespaces)
        }
        guard let token, !token.isEmpty else {
            throw GatewayHTTPError(.unauthorized, ChatError(.unauthorized, "a token is required (?token= or Authorization: Bearer)"))
        }
        let claims: ChatClaims
        do {
            claims = try await keys.verify(token, as: ChatClaims.self)
        } catch {
            throw GatewayHTTPError(.unauthorized, ChatError(.unauthorized, "invalid or expired token"))
        }
        guard let username = Username(claims.username ?? claims.name ?? claims.sub?.value ?? "") else {
            throw GatewayHTTPError(.unauthorized, ChatError(.unauthorized, "the token has no valid username claim"))
        }
        return Identity(userID: claims.sub.flatMap { UserID($0.value) } ?? UserID.random(), username: username)
    }

    /// The identity of a client without JWT authentication (`?username=`): no suspension.
    func identifyByUsername(_ request: Request) throws(GatewayHTTPError) -> Identity {
        precondition(keys == nil, "with JWT_SECRET set, clients identify with a token")
        try checkOrigin(request)
        // Form decoding: `+` is a space (`?username=a+b` is "a b"); broken percent-encoding is refused.
        let query = FormQuery.parse(request.uri.query ?? "")
        guard let raw = query["username"] else {
            throw GatewayHTTPError(.badRequest, ChatError(.usernameInvalid, "the username query parameter is required: /ws?username=NAME"))
        }
        guard let raw, let username = Username(raw) else {
            throw GatewayHTTPError(
                .badRequest,
                ChatError(.usernameInvalid, "username must be 1–\(Username.maxLength) characters without control characters")
            )
        }
        return Identity(userID: UserID.random(), username: username)
    }

    private func checkOrigin(_ request: Request) throws(GatewayHTTPError) {
        if !allowedOrigins.isEmpty, let origin = request.headers[.origin], !allowedOrigins.contains(origin) {
            throw GatewayHTTPError(.forbidden, ChatError(.forbidden, "origin \(origin.prefix(100)) is not allowed"))
        }
    }
}
