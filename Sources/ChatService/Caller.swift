import ChatCore
import NATS

/// Who a request says it comes from (its headers): a gateway's credential and, in token mode, the JWT
/// of the user it acts for. Nothing here is trusted until `ChatHandlers` has checked it.
struct Caller: Sendable {
    var gateway: GatewayCredential?
    var userToken: String?
    /// A gateway's own read (`Chat-Read-For: gateway`, its gap fills), not a client's.
    var gatewayRead: Bool
    /// `Chat-Gateway-Features`, read only by joins (`gatewayAppliesRemovals`).
    private var features: String?

    /// The gateway applies removal events (`Chat-Gateway-Features: access`); one from before private
    /// rooms does not, and may not join anyone to them.
    var gatewayAppliesRemovals: Bool {
        features?.split(separator: ",").contains { $0 == ChatNames.accessFeature } ?? false
    }

    init(headers: NATSHeaders) {
        if let id = headers[ChatNames.gatewayHeader].flatMap(GatewayID.init), let key = headers[ChatNames.gatewayKeyHeader],
            GatewayCredential.isValidKey(key)
        {
            gateway = GatewayCredential(gatewayID: id, key: key)
        }
        userToken = headers[ChatNames.userTokenHeader]
        gatewayRead = headers[ChatNames.readForHeader] == "gateway"
        features = headers[ChatNames.gatewayFeaturesHeader]
    }
}
