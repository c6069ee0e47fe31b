import ChatCore
import Foundation
import Hummingbird

/// Sits in front of the `WEB_ROOT` file server (Hummingbird's `FileMiddleware`), for paths that are no
/// route: a path whose percent-decoded form holds NUL or another control character is refused with 400
/// (the file system stops at a NUL, so `/app.js%00.html` would serve app.js with the type of an .html
/// file), and a file or directory that resolves — through symlinks — outside the real `WEB_ROOT` is 404.
struct StaticFileGuard<Context: RequestContext>: RouterMiddleware {
    let root: String
    let routes: KnownRoutes

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let raw = request.uri.path
        guard request.method == .get || request.method == .head, routes.methods(path: raw) == nil,
            let path = raw.removingPercentEncoding  // broken encoding: the file server answers 400
        else { return try await next(request, context) }
        guard !path.unicodeScalars.contains(where: { $0.value < 0x20 || (0x7F...0x9F).contains($0.value) }) else {
            throw GatewayHTTPError(.badRequest, ChatError(.invalidRequest, "the path contains control characters"))
        }
        if Self.escapes(path, root: root) {
            throw GatewayHTTPError(.notFound, ChatError(.notFound, "no such file: \(raw.prefix(100))"))
        }
        return try await next(request, context)
    }

    /// Whether `path` names something that exists but lies outside the real root (a missing file is
    /// left to the file server's own 404).
    static func escapes(_ path: String, root: String) -> Bool {
        guard let realRoot = realPath(root) else { return false }
        var candidate = realRoot + (path.hasPrefix("/") ? path : "/" + path)
        if candidate.hasSuffix("/") { candidate += "index.html" }
        guard let resolved = realPath(candidate) else { return false }
        return resolved != realRoot && !resolved.hasPrefix(realRoot.hasSuffix("/") ? realRoot : realRoot + "/")
    }

    private static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }
}
