import ChatCore
import Foundation
import Hummingbird
import Metrics
import NIOCore
import Synchronization

/// `MAX_CONNECTIONS` and `MAX_CONNECTIONS_PER_IP`, checked before a `/ws` upgrade. A connection takes
/// its slot when the check passes and gives it back when its TCP channel closes, whatever happens in
/// between (upgrade refused later, socket error, normal close), so the counts cannot leak or race.
///
/// The client address is the socket's peer address, except when the peer is a trusted proxy
/// (`TRUSTED_PROXIES`, addresses or CIDR ranges; default loopback, where `scripts/start` runs nginx):
/// then it is the right-most address in `X-Forwarded-For` that is not itself a trusted proxy, else
/// `X-Real-IP`. Headers from anyone else are ignored, so a client cannot pick its own address.
final class ConnectionLimiter: Sendable {
    let maxConnections: Int
    let maxPerIP: Int
    let trusted: [CIDR]
    private let state = Mutex<(total: Int, perIP: [String: Int])>((0, [:]))
    private let refusedFull = Counter(label: "gateway_connections_refused_total", dimensions: [("reason", "max_connections")])
    private let refusedPerIP = Counter(label: "gateway_connections_refused_total", dimensions: [("reason", "max_connections_per_ip")])

    init(maxConnections: Int, maxPerIP: Int, trustedProxies: [CIDR]) {
        self.maxConnections = maxConnections
        self.maxPerIP = maxPerIP
        self.trusted = trustedProxies
    }

    /// The client address of a request arriving on `channel`.
    func clientAddress(_ request: Request, channel: any Channel) -> String {
        let peer = channel.remoteAddress?.ipAddress ?? "unknown"
        guard isTrusted(peer) else { return peer }
        if let forwarded = request.headers[values: .init("X-Forwarded-For")!].last {
            let hops = forwarded.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter {
                CIDR.parseAddress($0) != nil
            }
            if let client = hops.last(where: { !isTrusted($0) }) ?? hops.first { return client }
        }
        if let real = request.headers[.init("X-Real-IP")!]?.trimmingCharacters(in: .whitespaces), CIDR.parseAddress(real) != nil {
            return real
        }
        return peer
    }

    func isTrusted(_ address: String) -> Bool {
        guard let bytes = CIDR.parseAddress(address) else { return false }
        return trusted.contains { $0.contains(bytes) }
    }

    /// Takes a slot for the connection on `channel`, or throws the error to answer (503 / 429).
    /// Returns the client address.
    @discardableResult
    func admit(_ request: Request, channel: any Channel) throws(GatewayHTTPError) -> String {
        let address = clientAddress(request, channel: channel)
        let refusal: GatewayHTTPError? = state.withLock { state in
            if state.total >= maxConnections {
                return GatewayHTTPError(
                    ChatError(
                        .serverFull,
                        "this gateway has reached its limit of \(maxConnections) connections; try again later or another gateway"
                    )
                )
            }
            if maxPerIP > 0, state.perIP[address, default: 0] >= maxPerIP {
                return GatewayHTTPError(ChatError(.tooManyConnections, "too many connections from \(address) (limit \(maxPerIP))"))
            }
            state.total += 1
            state.perIP[address, default: 0] += 1
            return nil
        }
        if let refusal {
            (refusal.error.code == .serverFull ? refusedFull : refusedPerIP).increment()
            throw refusal
        }
        channel.closeFuture.whenComplete { _ in
            self.state.withLock { state in
                state.total -= 1
                let left = state.perIP[address, default: 1] - 1
                state.perIP[address] = left > 0 ? left : nil
            }
        }
        return address
    }

    /// The default `MAX_CONNECTIONS`: the open-file limit less 512 descriptors for NATS, files and the
    /// listening socket, so the gateway refuses with a clear 503 before `accept` starts failing.
    static func defaultMaxConnections() -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 10_000 }
        return max(64, Int(min(limit.rlim_cur, 10_000_000)) - 512)
    }
}

/// An IPv4 or IPv6 address range (`10.0.0.0/8`, `::1`, `127.0.0.1`).
public struct CIDR: Sendable, Equatable {
    let bytes: [UInt8]
    let prefix: Int

    public init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1).map(String.init)
        guard let first = parts.first, let bytes = CIDR.parseAddress(first) else { return nil }
        let prefix = parts.count == 2 ? Int(parts[1]) : bytes.count * 8
        guard let prefix, prefix >= 0, prefix <= bytes.count * 8 else { return nil }
        self.bytes = bytes
        self.prefix = prefix
    }

    func contains(_ address: [UInt8]) -> Bool {
        var address = address
        var bytes = self.bytes
        // An IPv4-mapped IPv6 address (::ffff:a.b.c.d) matches IPv4 ranges.
        if address.count == 16, bytes.count == 4, address[0..<12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff][...] {
            address = Array(address[12...])
        }
        if address.count == 4, bytes.count == 16, bytes[0..<12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff][...] {
            bytes = Array(bytes[12...])
        }
        guard address.count == bytes.count else { return false }
        var bits = prefix - (self.bytes.count - bytes.count) * 8
        var index = 0
        while bits > 0 {
            let mask: UInt8 = bits >= 8 ? 0xff : ~(0xff >> UInt8(bits))
            if address[index] & mask != bytes[index] & mask { return false }
            bits -= 8
            index += 1
        }
        return true
    }

    static func parseAddress(_ text: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
        return nil
    }
}
