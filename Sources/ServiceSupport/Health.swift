import ChatCore
import Foundation
import NATS

/// The `/health` document every service answers: healthy (200) only while connected to NATS.
public enum HealthReport {
    public static func make(
        service: String,
        instance: String,
        connection: NATSConnection?,
        extra: [String: Any] = [:]
    ) -> (healthy: Bool, body: [UInt8]) {
        let status = connection?.status ?? .connecting
        var body: [String: Any] = [
            "status": status == .connected ? "ok" : "degraded",
            "service": service,
            "instance": instance,
            "version": ChatVersion.current,
            "nats": ["status": status.rawValue, "url": connection?.connectedURL ?? "", "reconnects": connection?.reconnects ?? 0],
        ]
        body.merge(extra) { _, new in new }
        let data = (try? JSONSerialization.data(withJSONObject: body, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
        return (status == .connected, Array(data))
    }
}
