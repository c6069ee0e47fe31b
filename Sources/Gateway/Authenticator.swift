import ChatCore
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import ServiceSupport

/// Who a WebSocket client is, decided before the upgrade.
struct Identity: Sendable {
    var userID: UserID
    var username: Username
    /// The token's `exp` in token mode: the socket is closed (4001) when it passes.
    var expiresAt: Date?
    /// The token itself (token mode): the chat-service verifies it again on every join and send.
    var token: String?
}

/// Origin check and, in token mode, token verification (`TokenVerifier`, shared with the chat-service)
/// for `/ws` and REST writes.
struct Authenticator: Sendable {
    let origins: OriginPolicy
    let verifier: TokenVerifier?

    /// `verifier`: `TokenVerifier.start` with `configuration.auth` (token mode), or nil (username mode).
    init(configuration: GatewayConfiguration, verifier: TokenVerifier?) {
        origins = OriginPolicy(allowed: Set(configuration.allowedOrigins))
        self.verifier = verifier
    }

    /// For the start-up log: operators see at once whether clients are authenticated.
    var modeDescription: String {
        verifier.map { "auth mode: \($0.configuration.summary)" } ?? "auth mode: username (no AUTH_JWT_SECRET or AUTH_JWKS_*)"
    }

    /// Whether identifying a client needs a token check (which suspends); without one the decision
    /// is `identifyByUsername`, taken on the event loop during a connect storm.
    var requiresToken: Bool { verifier != nil }

    /// Throws the HTTP error to answer instead of upgrading.
    func identify(_ request: Request) async throws(GatewayHTTPError) -> Identity {
        guard verifier != nil else { return try identifyByUsername(request) }
        try origins.check(request)
        // Form decoding: `+` is a space (`?username=a+b` is "a b"); broken percent-encoding is refused.
        let query = FormQuery.parse(request.uri.query ?? "")
        let raw = query["token"].map { $0 ?? "" } ?? Self.bearerToken(request)
        let token = try await verify(raw, accepted: "?token= or Authorization: Bearer")
        return Identity(userID: token.userID, username: token.username, expiresAt: token.expiresAt, token: raw)
    }

    /// A REST write's token (`Authorization: Bearer` only: a query string ends up in access logs).
    func verifyBearer(_ request: Request) async throws(GatewayHTTPError) -> VerifiedToken {
        try await verify(Self.bearerToken(request), accepted: "Authorization: Bearer")
    }

    /// A token sent on an open socket (the `auth` frame); nil in username mode.
    func verifyRefresh(_ token: String) async throws(ChatError) -> VerifiedToken? {
        guard let verifier else { return nil }
        return try await verifier.verify(token)
    }

    private func verify(_ token: String?, accepted: String) async throws(GatewayHTTPError) -> VerifiedToken {
        guard let verifier else { preconditionFailure("verify is for token mode") }
        guard let token, !token.isEmpty else {
            throw GatewayHTTPError(
                .unauthorized,
                ChatError(.unauthorized, "a token is required (\(accepted))"),
                headers: [.wwwAuthenticate: "Bearer"]
            )
        }
        do {
            return try await verifier.verify(token)
        } catch {
            throw GatewayHTTPError(.unauthorized, error, headers: [.wwwAuthenticate: "Bearer"])
        }
    }

    static func bearerToken(_ request: Request) -> String? {
        guard let header = request.headers[.authorization], header.lowercased().hasPrefix("bearer ") else { return nil }
        return String(header.dropFirst(7)).trimmingCharacters(in: .whitespaces)
    }

    /// The identity of a client without JWT authentication (`?username=`): no suspension.
    func identifyByUsername(_ request: Request) throws(GatewayHTTPError) -> Identity {
        precondition(verifier == nil, "in token mode, clients identify with a token")
        try origins.check(request)
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
}
