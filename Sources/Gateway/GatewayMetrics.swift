import ChatCore
import Metrics

/// Metrics of one gateway process.
struct GatewayMetrics: Sendable {
    let connections = Gauge(label: "gateway_connections")
    let framesOut = Counter(label: "gateway_frames_out_total")
    let slowDisconnects = Counter(label: "gateway_slow_client_disconnects_total")
    let sendLatency = Metrics.Timer(label: "gateway_send_latency_seconds")
    let natsConnected = Gauge(label: "gateway_nats_connected")
    let gapFills = Counter(label: "gateway_gap_fill_messages_total")
    let duplicatesDropped = Counter(label: "gateway_duplicate_deliveries_dropped_total")
    let deliveriesDropped = Counter(label: "gateway_room_inbox_overflow_total")
    /// Typing notices from NATS that were not a valid `typing` frame for their room (dropped).
    let typingRefused = Counter(label: "gateway_typing_notices_refused_total")
    /// Deliveries from NATS that were not a frame of their room (or room-wide news); dropped.
    let deliveriesRefused = Counter(label: "gateway_deliveries_refused_total")
    /// Leaves after a disconnect that failed and will be tried again (the chat-service unreachable).
    let leaveRetries = Counter(label: "gateway_leave_retries_total")

    /// Made once: a labelled counter made per frame costs a registry lookup (lock and hashing) each time.
    private let framesInByType: [String: Counter] = Dictionary(
        uniqueKeysWithValues: (ClientFrame.types + ["binary", "invalid"]).map {
            ($0, Counter(label: "gateway_frames_in_total", dimensions: [("type", $0)]))
        }
    )
    private let errorsByCode: [ChatErrorCode: Counter] = Dictionary(
        uniqueKeysWithValues: ChatErrorCode.allCases.map {
            ($0, Counter(label: "gateway_errors_total", dimensions: [("code", $0.rawValue)]))
        }
    )

    func framesIn(_ type: String) -> Counter {
        framesInByType[type] ?? Counter(label: "gateway_frames_in_total", dimensions: [("type", type)])
    }
    func error(_ code: ChatErrorCode) -> Counter { errorsByCode[code]! }
}
