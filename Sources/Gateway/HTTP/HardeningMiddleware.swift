import ChatCore
import HTTPTypes
import Hummingbird
import NIOCore

/// Every HTTP answer is JSON or a file: errors the router raises itself (no such route: 404, a body
/// too large, …) get the `{"error","code"}` body the API documents instead of an empty one, and every
/// response carries `X-Content-Type-Options: nosniff`; the browser UI's files get
/// `Cache-Control: no-cache` (revalidate each time: their names carry no version) and a strict
/// `Content-Security-Policy`, `X-Frame-Options: DENY`, `Referrer-Policy: no-referrer`.
struct HardeningMiddleware<Context: RequestContext>: RouterMiddleware {
    let routes: KnownRoutes

    /// The policy of web/index.html's meta tag, plus `frame-ancestors`, which only works as a header.
    static var contentSecurityPolicy: String {
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
            + "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let path = request.uri.path
        /// A known path asked with another method: 405 with `Allow` (the router only knows "no route").
        func wrongMethod(_ error: HTTPError) -> GatewayHTTPError? {
            guard error.status == .notFound, let allowed = routes.methods(path: path), !allowed.contains(request.method) else { return nil }
            let list = allowed.map(\.rawValue).joined(separator: ", ")
            return GatewayHTTPError(
                .methodNotAllowed,
                ChatError(.invalidRequest, "\(request.method) is not allowed on \(path.prefix(100)) (allowed: \(list))"),
                headers: [.allow: list]
            )
        }
        if path == "/ws" {
            do {
                return try await next(request, context)
            } catch let error as HTTPError {
                throw wrongMethod(error) ?? error
            }
        }
        var response: Response
        do {
            response = try await next(request, context)
        } catch let error as GatewayHTTPError {
            throw error
        } catch let error as HTTPError {
            if let wrongMethod = wrongMethod(error) { throw wrongMethod }
            let code: ChatErrorCode =
                switch error.status.code {
                case 404: .notFound
                case 500...: .internal
                default: .invalidRequest
                }
            let text =
                error.status.code == 404
                ? "no such endpoint: \(request.method) \(path.prefix(100))" : (error.body ?? error.status.reasonPhrase)
            throw GatewayHTTPError(error.status, ChatError(code, text))
        }
        response.headers[.init("X-Content-Type-Options")!] = "nosniff"
        let api = path.hasPrefix("/api/") || path == "/health" || path == "/metrics"
        if !api, request.method == .get || request.method == .head {
            if response.headers[.cacheControl] == nil { response.headers[.cacheControl] = "no-cache" }
            // The UI loads only its own files and talks only to this gateway; no framing (clickjacking),
            // no inline script or style, no referrer leaking room ids.
            response.headers[.init("Content-Security-Policy")!] = Self.contentSecurityPolicy
            response.headers[.init("X-Frame-Options")!] = "DENY"
            response.headers[.init("Referrer-Policy")!] = "no-referrer"
        }
        return response
    }
}
