import CNATS
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// Owns a `natsConnection*`.
///
/// `@unchecked Sendable` is safe because libnats connections are thread-safe: every `natsConnection_*`
/// function takes the connection's own lock, and the pointer itself never changes after `init`.
final class ConnectionHandle: @unchecked Sendable {
    let pointer: OpaquePointer
    private let options: OpaquePointer

    private init(pointer: OpaquePointer, options: OpaquePointer) {
        self.pointer = pointer
        self.options = options
    }

    deinit {
        natsConnection_Destroy(pointer)
        natsOptions_Destroy(options)
    }

    /// Blocking: one connection attempt to the configured servers. Run it on the blocking executor.
    static func connect(_ configuration: NATSConfiguration, events: ConnectionEvents) throws(NATSError) -> ConnectionHandle {
        LibNATS.opened
        var optionsPointer: OpaquePointer? = nil
        try LibNATS.check(natsOptions_Create(&optionsPointer), "create options")
        guard let options = optionsPointer else { throw NATSError(.other, message: "natsOptions_Create returned nothing") }
        do throws(NATSError) {
            try apply(configuration, to: options, events: events)
            var connection: OpaquePointer? = nil
            try LibNATS.check(natsConnection_Connect(&connection, options), "connect to \(configuration.servers.joined(separator: ","))")
            guard let connection else { throw NATSError(.other, message: "natsConnection_Connect returned nothing") }
            return ConnectionHandle(pointer: connection, options: options)
        } catch {
            natsOptions_Destroy(options)
            throw error
        }
    }

    private static func apply(_ configuration: NATSConfiguration, to options: OpaquePointer, events: ConnectionEvents) throws(NATSError) {
        guard !configuration.servers.isEmpty else { throw .invalid("no NATS server URL configured") }
        var cServers = configuration.servers.map { strdup($0) }
        defer { cServers.forEach { free($0) } }
        let status = cServers.withUnsafeMutableBufferPointer { buffer in
            buffer.baseAddress!.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: buffer.count) {
                natsOptions_SetServers(options, $0, Int32(buffer.count))
            }
        }
        try LibNATS.check(status, "set servers")
        if configuration.servers.count == 1 { _ = natsOptions_SetNoRandomize(options, true) }
        if let name = configuration.name { try LibNATS.check(natsOptions_SetName(options, name), "set name") }
        // For libnats' own inboxes (none are used today: requests go through RequestMux) — the same prefix.
        try LibNATS.check(natsOptions_SetCustomInboxPrefix(options, configuration.inboxPrefix), "set inbox prefix")
        if let user = configuration.user {
            try LibNATS.check(natsOptions_SetUserInfo(options, user, configuration.password ?? ""), "set user")
        }
        if let token = configuration.token { try LibNATS.check(natsOptions_SetToken(options, token), "set token") }
        if let credentials = configuration.credentialsFile {
            try LibNATS.check(natsOptions_SetUserCredentialsFromFiles(options, credentials, nil), "load credentials \(credentials)")
        }
        if let tls = configuration.tls {
            try LibNATS.check(natsOptions_SetSecure(options, true), "enable TLS")
            if let ca = tls.caFile { try LibNATS.check(natsOptions_LoadCATrustedCertificates(options, ca), "load CA \(ca)") }
            if let cert = tls.certificateFile, let key = tls.keyFile {
                try LibNATS.check(natsOptions_LoadCertificatesChain(options, cert, key), "load client certificate \(cert)")
            }
            if tls.skipVerification { try LibNATS.check(natsOptions_SkipServerVerification(options, true), "skip verification") }
        }
        try LibNATS.check(natsOptions_SetTimeout(options, configuration.connectTimeout.inMilliseconds), "set timeout")
        try LibNATS.check(natsOptions_SetAllowReconnect(options, true), "allow reconnect")
        try LibNATS.check(natsOptions_SetMaxReconnect(options, Int32(configuration.maxReconnectAttempts)), "set max reconnect")
        try LibNATS.check(natsOptions_SetReconnectWait(options, configuration.reconnectWait.inMilliseconds), "set reconnect wait")
        try LibNATS.check(natsOptions_SetReconnectJitter(options, 100, 1000), "set reconnect jitter")
        try LibNATS.check(natsOptions_SetReconnectBufSize(options, Int32(configuration.reconnectBufferBytes)), "set reconnect buffer")
        try LibNATS.check(natsOptions_SetPingInterval(options, configuration.pingInterval.inMilliseconds), "set ping interval")
        try LibNATS.check(natsOptions_SetMaxPingsOut(options, 3), "set max pings out")
        // Bounded delivery threads: without this every async subscription gets a thread of its own.
        if configuration.deliveryThreads > 0 {
            try LibNATS.check(nats_SetMessageDeliveryPoolSize(Int32(configuration.deliveryThreads)), "set delivery pool size")
        }
        try LibNATS.check(natsOptions_UseGlobalMessageDelivery(options, configuration.deliveryThreads > 0), "use global delivery")
        try LibNATS.check(natsOptions_SetMaxPendingMsgs(options, Int32(configuration.subscriptionPendingLimit)), "set max pending")
        try LibNATS.check(natsOptions_SetSendAsap(options, configuration.sendAsap), "set send asap")
        // Fail requests at once on disconnect rather than letting every caller wait out its timeout.
        try LibNATS.check(natsOptions_SetFailRequestsOnDisconnect(options, true), "fail requests on disconnect")

        // The events object outlives every callback: it is retained once here and deliberately never released,
        // because libnats may still invoke the closed callback from its own thread after the Swift side let go.
        let closure = Unmanaged.passRetained(events).toOpaque()
        try LibNATS.check(
            natsOptions_SetDisconnectedCB(
                options,
                { _, closure in
                    guard let closure else { return }
                    Unmanaged<ConnectionEvents>.fromOpaque(closure).takeUnretainedValue().emit(.disconnected)
                },
                closure
            ),
            "set disconnected callback"
        )
        try LibNATS.check(
            natsOptions_SetReconnectedCB(
                options,
                { _, closure in
                    guard let closure else { return }
                    Unmanaged<ConnectionEvents>.fromOpaque(closure).takeUnretainedValue().emit(.reconnected)
                },
                closure
            ),
            "set reconnected callback"
        )
        try LibNATS.check(
            natsOptions_SetClosedCB(
                options,
                { _, closure in
                    guard let closure else { return }
                    Unmanaged<ConnectionEvents>.fromOpaque(closure).takeUnretainedValue().emit(.closed)
                },
                closure
            ),
            "set closed callback"
        )
        try LibNATS.check(
            natsOptions_SetErrorHandler(
                options,
                { _, subscription, status, closure in
                    guard let closure else { return }
                    let subject = subscription.flatMap { natsSubscription_GetSubject($0) }.map { String(cString: $0) }
                    let text = String(cString: natsStatus_GetText(status))
                    Unmanaged<ConnectionEvents>.fromOpaque(closure).takeUnretainedValue()
                        .asyncError(status: Int32(status.rawValue), text: text, subject: subject)
                },
                closure
            ),
            "set error handler"
        )
    }

    var status: ConnectionStatus {
        switch natsConnection_Status(pointer) {
        case NATS_CONN_STATUS_CONNECTED: .connected
        case NATS_CONN_STATUS_CONNECTING: .connecting
        case NATS_CONN_STATUS_RECONNECTING: .reconnecting
        case NATS_CONN_STATUS_DISCONNECTED: .disconnected
        case NATS_CONN_STATUS_DRAINING_SUBS, NATS_CONN_STATUS_DRAINING_PUBS: .draining
        default: .closed
        }
    }

    var connectedURL: String? {
        var buffer = [CChar](repeating: 0, count: 256)
        guard natsConnection_GetConnectedUrl(pointer, &buffer, buffer.count) == NATS_OK else { return nil }
        let url = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return url.isEmpty ? nil : Self.withoutUserInfo(url)
    }

    /// `nats://user:pass@host:4222` → `nats://host:4222`: the URL is shown in logs and on `/health`.
    static func withoutUserInfo(_ url: String) -> String {
        guard let scheme = url.range(of: "://"), let at = url[scheme.upperBound...].firstIndex(of: "@") else { return url }
        return String(url[..<scheme.upperBound]) + String(url[url.index(after: at)...])
    }

    var maxPayload: Int { Int(natsConnection_GetMaxPayload(pointer)) }

    func publish(subject: String, reply: String?, headers: NATSHeaders?, payload: UnsafeRawBufferPointer) throws(NATSError) {
        if let headers, !headers.isEmpty {
            let msg = try LibNATS.makeMessage(subject: subject, reply: reply, headers: headers, payload: payload)
            defer { LibNATS.destroy(msg) }
            try LibNATS.check(natsConnection_PublishMsg(pointer, msg), "publish to \(subject)")
        } else if let reply {
            try LibNATS.check(
                natsConnection_PublishRequest(pointer, subject, reply, payload.baseAddress, Int32(payload.count)),
                "publish to \(subject)"
            )
        } else {
            try LibNATS.check(natsConnection_Publish(pointer, subject, payload.baseAddress, Int32(payload.count)), "publish to \(subject)")
        }
    }

    /// Blocking: waits for the server's PONG. Run it on the blocking executor.
    func flush(timeoutMilliseconds: Int64) throws(NATSError) {
        try LibNATS.check(natsConnection_FlushTimeout(pointer, timeoutMilliseconds), "flush")
    }

    /// Starts draining; completion is reported through the closed callback.
    func drain(timeoutMilliseconds: Int64) throws(NATSError) {
        try LibNATS.check(natsConnection_DrainTimeout(pointer, timeoutMilliseconds), "drain")
    }

    func close() { natsConnection_Close(pointer) }
}

extension Duration {
    /// Whole milliseconds (truncated), for C APIs and wire formats that take milliseconds.
    public var inMilliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }

    /// Whole nanoseconds (truncated), as JetStream's durations and timestamps count.
    public var inNanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}
