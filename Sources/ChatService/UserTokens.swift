import ChatCore
import Foundation
import Logging
import ServiceSupport
import Synchronization

/// In token mode, who a request acts for: the user's own JWT (header `Chat-User-Token`), verified here
/// with the same rules as the gateway's (`TokenVerifier`) — not the gateway's word, so a gateway
/// credential alone cannot act as a user. A verified token is remembered until it expires: a burst of
/// sends verifies it once.
final class UserTokens: Sendable {
    let verifier: TokenVerifier?
    let logger: Logger
    static let cacheLimit = 10_000
    private struct State {
        var verified: [String: VerifiedToken] = [:]
        var warnedUnverified = false
    }
    private let state = Mutex(State())

    init(verifier: TokenVerifier?, logger: Logger) {
        self.verifier = verifier
        self.logger = logger
    }

    /// The verified user of a request; nil in username mode (no `AUTH_JWT_SECRET` or JWKS here). In
    /// token mode a request without a valid token is refused (`unauthorized`) — unless it is not
    /// `required` (reads: no token is an anonymous caller, who sees public rooms only); a bad token always is.
    func identify(_ token: String?, required: Bool = true) async throws(ChatError) -> VerifiedToken? {
        guard let verifier else {
            if token != nil { warnOnce() }
            return nil
        }
        if !required, token?.isEmpty ?? true { return nil }
        guard let token, !token.isEmpty else {
            throw ChatError(.unauthorized, "token mode: the request needs the user's token (\(ChatNames.userTokenHeader))")
        }
        let now = Date()
        if let known = state.withLock({ $0.verified[token] }), known.expiresAt > now { return known }
        let verified = try await verifier.verify(token, now: now)
        state.withLock { state in
            if state.verified.count >= Self.cacheLimit { state.verified.removeAll(keepingCapacity: true) }
            state.verified[token] = verified
        }
        return verified
    }

    /// A gateway in token mode in front of a chat-service without `AUTH_JWT_SECRET`: said once, loudly.
    private func warnOnce() {
        let first = state.withLock { state in
            defer { state.warnedUnverified = true }
            return !state.warnedUnverified
        }
        if first {
            logger.warning(
                "requests carry user tokens but token mode is off here (no AUTH_JWT_SECRET or AUTH_JWKS_*): identities are not verified",
                metadata: ["fix": "set the same AUTH_JWT_* and AUTH_JWKS_* on every chat-service as on the gateways"]
            )
        }
    }
}
