import ChatCore
import Hummingbird

/// `ALLOWED_ORIGINS`: which browser origins may open `/ws` and send REST writes. A request without
/// `Origin` (not a browser, or a same-origin GET) passes: the check stops other sites' pages from acting
/// with a visitor's browser, not other clients.
struct OriginPolicy: Sendable {
    let allowed: Set<String>

    func check(_ request: Request) throws(GatewayHTTPError) {
        if !allowed.isEmpty, let origin = request.headers[.origin], !allowed.contains(origin) {
            throw GatewayHTTPError(.forbidden, ChatError(.forbidden, "origin \(origin.prefix(100)) is not allowed"))
        }
    }
}
