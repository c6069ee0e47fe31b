import ChatCore
import Foundation
import Hummingbird
import Logging
import NIOCore
import ServiceSupport

/// Decides `/ws` upgrades (identity, then the connection limits) and installs each accepted
/// connection: its `ClientConnection`, `ChatSession` and `WebSocketConnectionHandler`.
func webSocketUpgrade(core: GatewayCore) -> GatewayHTTPChannel.Decide {
    let limiter = core.connectionLimiter
    let configuration = core.configuration
    /// Installs an accepted connection (on its event loop, once upgraded).
    @Sendable func accept(_ identity: Identity, address: String) -> GatewayHTTPChannel.Upgrade {
        .accept { channel in
            let connectionID = String(makeUUID().prefix(13))
            var connectionLogger = core.logger
            connectionLogger[metadataKey: LogKey.connectionID] = "\(connectionID)"
            connectionLogger[metadataKey: LogKey.userID] = "\(identity.userID)"
            connectionLogger[metadataKey: LogKey.username] = "\(identity.username)"
            let logger = connectionLogger
            let output = try WebSocketFrameOutput(channel: channel)
            let client = ClientConnection(
                id: connectionID,
                userID: identity.userID,
                username: identity.username,
                address: address,
                token: identity.token,
                queueLimit: configuration.outboundQueueLimit,
                channel: channel,
                output: output,
                logger: logger,
                metrics: core.metrics
            )
            let inbox = SessionInbox(
                session: ChatSession(connection: client, gateway: core),
                channel: channel,
                background: core.hub.context.background
            ) {
                client.socketClosed()
                core.unregister(client)
                logger.info("client disconnected")
            }
            try channel.pipeline.syncOperations.addHandler(
                WebSocketConnectionHandler(
                    client: client,
                    inbox: inbox,
                    output: output,
                    maxMessageBytes: configuration.maxFrameBytes,
                    pingInterval: TimeAmount(configuration.pingInterval),
                    expiresAt: identity.expiresAt.map(WebSocketExpiryUpdate.deadline)
                )
            )
            // `connected` is queued before the client is registered: from then on room-wide news
            // (`room_created`) can be queued for it too, and must not come first.
            client.send(
                ServerFrame.connected(userID: identity.userID, username: identity.username.rawValue, gatewayID: configuration.gatewayID)
            )
            core.register(client)
            logger.info("client connected")
        }
    }
    /// The identity, then the connection limits; `accept` or the error to answer.
    @Sendable func admit(
        _ request: Request,
        _ channel: any Channel,
        _ identify: () throws(GatewayHTTPError) -> Identity
    ) -> GatewayHTTPChannel.Upgrade {
        do throws(GatewayHTTPError) {
            let identity = try identify()
            let address = try limiter.admit(request, channel: channel)  // MAX_CONNECTIONS(_PER_IP): ConnectionLimits.swift
            return accept(identity, address: address)
        } catch {
            return .refuse(error)
        }
    }
    return { request, channel, _ in
        guard request.uri.path == "/ws" else { return .now(.refuse(nil)) }
        // NIO's upgrader takes any method; RFC 6455 §4.1 and docs/protocol.md say GET.
        guard request.method == .get else {
            return .now(
                .refuse(
                    GatewayHTTPError(
                        .methodNotAllowed,
                        ChatError(.invalidRequest, "\(request.method) is not allowed on /ws (allowed: GET)"),
                        headers: [.allow: "GET"]
                    )
                )
            )
        }
        guard core.auth.requiresToken else {
            return .now(admit(request, channel) { () throws(GatewayHTTPError) in try core.auth.identifyByUsername(request) })
        }
        return .later {
            let identity: Identity
            do throws(GatewayHTTPError) {
                identity = try await core.auth.identify(request)
            } catch {
                return .refuse(error)
            }
            return admit(request, channel) { identity }
        }
    }
}
