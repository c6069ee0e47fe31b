import Foundation

/// How to reach NATS. `fromEnvironment` reads the variables documented in docs/configuration.md.
public struct NATSConfiguration: Sendable {
    public struct TLS: Sendable {
        public var caFile: String?
        public var certificateFile: String?
        public var keyFile: String?
        public var skipVerification = false
        public init(caFile: String? = nil, certificateFile: String? = nil, keyFile: String? = nil) {
            self.caFile = caFile
            self.certificateFile = certificateFile
            self.keyFile = keyFile
        }
    }

    public var servers: [String]
    public var name: String?
    public var user: String?
    public var password: String?
    public var token: String?
    public var credentialsFile: String?
    public var tls: TLS?
    public var connectTimeout: Duration = .seconds(2)
    /// -1: reconnect forever.
    public var maxReconnectAttempts = -1
    public var reconnectWait: Duration = .milliseconds(250)
    /// Bytes published while disconnected are buffered up to this size and sent after reconnecting.
    public var reconnectBufferBytes = 8 * 1024 * 1024
    public var pingInterval: Duration = .seconds(5)
    /// Messages libnats may queue per subscription before it reports a slow consumer and drops.
    public var subscriptionPendingLimit = 1_000_000
    /// Subscription callbacks run on a process-wide pool of this many libnats delivery threads
    /// (`NATS_DELIVERY_THREADS`); 0: a thread of its own per subscription (libnats' default). The pool
    /// only grows: the largest size any connection of the process asked for wins.
    public var deliveryThreads = 0
    /// Write every publish to the socket at once instead of letting libnats' flusher batch them
    /// (which adds up to ~1 ms per request). Services want the latency; bulk publishers may turn it off.
    public var sendAsap = true
    /// Default timeout for requests (core and JetStream API).
    public var requestTimeout: Duration = .seconds(5)
    /// Reply subjects of this connection's requests (and its consumers' deliveries) are
    /// `<inboxPrefix>.<unique>`. A prefix of its own per service lets the NATS server confine each
    /// service's subscriptions to its own replies (deploy/auth.conf): the gateway cannot read the
    /// chat-service's JetStream and KV replies. `NATS_INBOX_PREFIX`; default `_INBOX_<service>`.
    public var inboxPrefix = "_INBOX"

    public init(servers: [String] = ["nats://localhost:4222"], name: String? = nil) {
        self.servers = servers
        self.name = name
    }

    public init(url: String, name: String? = nil) {
        self.init(servers: Self.splitServers(url), name: name)
    }

    /// Subject tokens of A-Z a-z 0-9 _ - joined by dots, 64 characters at most: no wildcard, no space.
    public static func isValidInboxPrefix(_ prefix: String) -> Bool {
        let tokens = prefix.split(separator: ".", omittingEmptySubsequences: false)
        return (1...64).contains(prefix.utf8.count)
            && tokens.allSatisfy {
                !$0.isEmpty
                    && $0.utf8.allSatisfy {
                        $0 == 0x5F || $0 == 0x2D || (0x30...0x39).contains($0) || (0x41...0x5A).contains($0) || (0x61...0x7A).contains($0)
                    }
            }
    }

    static func splitServers(_ list: String) -> [String] {
        list.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    /// `NATS_URL` (comma-separated), `NATS_USER`/`NATS_PASSWORD`, `NATS_TOKEN`, `NATS_CREDS`,
    /// `NATS_CA`, `NATS_CERT`/`NATS_KEY`: the text settings. The numeric and boolean ones
    /// (`NATS_DELIVERY_THREADS`, `NATS_REQUEST_TIMEOUT_MS`, `NATS_SEND_ASAP`) are read, and refused when
    /// mistyped, by `Settings.nats` in ServiceSupport, which the services use.
    public static func fromEnvironment(_ environment: [String: String], name: String) -> NATSConfiguration {
        var configuration = NATSConfiguration(url: environment["NATS_URL"] ?? "nats://localhost:4222", name: name)
        func value(_ key: String) -> String? { environment[key].flatMap { $0.isEmpty ? nil : $0 } }
        configuration.user = value("NATS_USER")
        configuration.password = value("NATS_PASSWORD")
        configuration.token = value("NATS_TOKEN")
        configuration.credentialsFile = value("NATS_CREDS")
        configuration.inboxPrefix = value("NATS_INBOX_PREFIX") ?? configuration.inboxPrefix
        if value("NATS_CA") != nil || value("NATS_CERT") != nil || configuration.servers.contains(where: { $0.hasPrefix("tls://") }) {
            configuration.tls = TLS(caFile: value("NATS_CA"), certificateFile: value("NATS_CERT"), keyFile: value("NATS_KEY"))
        }
        return configuration
    }
}

public enum ConnectionStatus: String, Sendable {
    case connecting, connected, disconnected, reconnecting, draining, closed
}

public enum ConnectionEvent: String, Sendable {
    case disconnected, reconnected, closed
}
