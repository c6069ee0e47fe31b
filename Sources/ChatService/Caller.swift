import ChatCore
import NATS

/// Who a request says it comes from (its headers): a gateway's credential and, in token mode, the JWT
/// of the user it acts for. Nothing here is trusted until `ChatHandlers` has checked it.
struct Caller: Sendable {
    var gateway: GatewayCredential?
    var userToken: String?

    init(headers: NATSHeaders) {
        if let id = headers[ChatNames.gatewayHeader].flatMap(GatewayID.init), let key = headers[ChatNames.gatewayKeyHeader],
            GatewayCredential.isValidKey(key)
        {
            gateway = GatewayCredential(gatewayID: id, key: key)
        }
        userToken = headers[ChatNames.userTokenHeader]
    }
}
