import ChatCore
import Foundation
import Hummingbird

/// A context that carries the user `WriteGuard` verified, for per-user limits in the route.
protocol WriteGuardContext: RequestContext {
    var verifiedUserID: UserID? { get set }
}

/// Guards every state-changing REST route (anything but GET and HEAD): the `ALLOWED_ORIGINS` check of
/// `/ws` (403), in token mode a valid `Authorization: Bearer` token (401), and a JSON body (415). The
/// content type matters even without a token: a page on another site can POST `text/plain` cross-origin
/// without a CORS preflight, but not `application/json`.
struct WriteGuard<Context: WriteGuardContext>: RouterMiddleware {
    let auth: Authenticator

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard request.method != .get, request.method != .head else { return try await next(request, context) }
        try auth.origins.check(request)
        var context = context
        if auth.requiresToken { context.verifiedUserID = try await auth.verifyBearer(request).userID }
        // A DELETE carries no body; browsers preflight it cross-origin anyway (not a "simple" method).
        let bodyless =
            request.method == .delete && (request.headers[.contentLength] ?? "0") == "0" && request.headers[.transferEncoding] == nil
        guard bodyless || Self.isJSON(request.headers[.contentType]) else {
            throw GatewayHTTPError(
                .unsupportedMediaType,
                ChatError(.unsupportedMediaType, "the request body must be JSON (Content-Type: application/json)")
            )
        }
        return try await next(request, context)
    }

    /// `application/json`, any case, with or without parameters (`; charset=utf-8`).
    static func isJSON(_ contentType: String?) -> Bool {
        guard let contentType else { return false }
        let mediaType = contentType.split(separator: ";", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        return mediaType.trimmingCharacters(in: .whitespaces).lowercased() == "application/json"
    }
}
