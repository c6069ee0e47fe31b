import Hummingbird
import Logging

/// The small HTTP port of the chat-service and broadcaster: `/health` (200 healthy, 503 not) and
/// Prometheus `/metrics`.
public enum StatusRoutes {
    public static func add<Context: RequestContext>(
        to router: Router<Context>,
        health: @escaping @Sendable () async -> (healthy: Bool, body: [UInt8])
    ) {
        router.get("/health") { _, _ -> Response in
            let (healthy, body) = await health()
            return Response(
                status: healthy ? .ok : .serviceUnavailable,
                headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(bytes: body))
            )
        }
        router.get("/metrics") { _, _ -> Response in
            Response(
                status: .ok,
                headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(string: Observability.renderMetrics()))
            )
        }
    }
}
