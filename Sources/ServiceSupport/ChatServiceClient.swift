import ChatCore
import NATS

/// Typed calls to the chat-service endpoints. Transport failures (no chat-service running, timeout,
/// NATS down) become `unavailable`; service errors arrive as the `ChatError` the service sent.
public struct ChatServiceClient: Sendable {
    public let connection: NATSConnection
    public let timeout: Duration
    /// Sent with every request (a gateway's); the chat-service refuses presence calls and sends, joins
    /// and leaves without one.
    public let credential: GatewayCredential?

    public init(connection: NATSConnection, timeout: Duration = .seconds(5), credential: GatewayCredential? = nil) {
        self.connection = connection
        self.timeout = timeout
        self.credential = credential
    }

    /// The headers of a request: the gateway's credential, and the user's token when there is one.
    /// `features`: declare what this gateway understands (`Chat-Gateway-Features`; only joins ask).
    public func headers(userToken: String? = nil, gatewayRead: Bool = false, features: Bool = false) -> NATSHeaders? {
        var headers = NATSHeaders()
        if gatewayRead { headers[ChatNames.readForHeader] = "gateway" }
        if let credential {
            headers[ChatNames.gatewayHeader] = credential.gatewayID.rawValue
            headers[ChatNames.gatewayKeyHeader] = credential.key
            if features { headers[ChatNames.gatewayFeaturesHeader] = ChatNames.accessFeature }
        }
        if let userToken { headers[ChatNames.userTokenHeader] = userToken }
        return headers.isEmpty ? nil : headers
    }

    /// `userToken`: the JWT of the user the request acts for (token mode), which the chat-service
    /// verifies itself. `gatewayRead`: the gateway reads for itself (a gap fill), not for a client.
    public func call<Response: Decodable>(
        _ endpoint: ChatNames.Endpoint,
        _ request: some Encodable,
        as type: Response.Type = Response.self,
        userToken: String? = nil,
        gatewayRead: Bool = false
    ) async throws(ChatError) -> Response {
        let reply: NATSMessage
        do {
            reply = try await connection.request(
                endpoint.subject,
                payload: ChatJSON.encode(request),
                headers: headers(userToken: userToken, gatewayRead: gatewayRead, features: endpoint == .join),
                timeout: timeout
            )
        } catch {
            switch error.kind {
            case .noResponders: throw ChatError(.unavailable, "chat service unavailable (no instance is running)")
            case .timeout: throw ChatError(.unavailable, "chat service did not answer within \(timeout)")
            default: throw ChatError(.unavailable, "chat service unreachable (\(error.kind.rawValue))")
            }
        }
        if let status = reply.headers["Nats-Service-Error-Code"] {
            if let error = try? ChatJSON.decode(ChatError.self, from: reply.payload) { throw error }
            throw ChatError(.internal, "chat service error \(status): \(reply.headers["Nats-Service-Error"] ?? "")")
        }
        do {
            return try ChatJSON.decode(Response.self, from: reply.payload)
        } catch {
            throw ChatError(.internal, "unexpected chat service reply: \(error.error)")
        }
    }
}
