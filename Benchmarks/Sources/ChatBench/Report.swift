import Foundation
import Histogram

/// CPU time and memory of a process, from /proc (Linux).
struct ProcessSample: Sendable {
    var name: String
    var pid: Int32
    var cpuSeconds: Double
    var rssKiB: Int
    var time: UInt64

    static let ticksPerSecond = Double(sysconf(Int32(_SC_CLK_TCK)))

    static func take(name: String, pid: Int32) -> ProcessSample? {
        let path = pid == 0 ? "/proc/self" : "/proc/\(pid)"
        guard let stat = try? String(contentsOfFile: path + "/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // After "pid (comm)": state is fields[0], utime fields[11], stime fields[12].
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        var rss = 0
        if let status = try? String(contentsOfFile: path + "/status", encoding: .utf8) {
            for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
                rss = Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") ?? 0
            }
        }
        return ProcessSample(name: name, pid: pid, cpuSeconds: (user + system) / ticksPerSecond, rssKiB: rss, time: monotonicNanos())
    }

    /// The whole machine's busy CPU time (all cores, from /proc/stat), as pseudo-process "machine":
    /// its cpuPercent minus the listed processes' is what other work took during a phase.
    static func machine() -> ProcessSample? {
        guard let stat = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
            let line = stat.split(separator: "\n").first(where: { $0.hasPrefix("cpu ") })
        else { return nil }
        let values = line.split(separator: " ").dropFirst().compactMap { Double($0) }
        guard values.count >= 5 else { return nil }
        let busy = values.reduce(0, +) - values[3] - values[4]  // minus idle and iowait
        return ProcessSample(name: "machine", pid: -1, cpuSeconds: busy / ticksPerSecond, rssKiB: 0, time: monotonicNanos())
    }
}

public struct ProcessUsage: Codable, Sendable {
    public var name: String
    public var pid: Int32
    /// Percent of one core over the phase (200 = both cores of this machine).
    public var cpuPercent: Double
    public var rssMiB: Double

    static func between(_ a: [ProcessSample], _ b: [ProcessSample]) -> [ProcessUsage] {
        a.compactMap { start in
            guard let end = b.first(where: { $0.pid == start.pid && $0.name == start.name }) else { return nil }
            let wall = Double(end.time - start.time) / 1e9
            return ProcessUsage(
                name: start.name,
                pid: start.pid,
                cpuPercent: wall > 0 ? (end.cpuSeconds - start.cpuSeconds) / wall * 100 : 0,
                rssMiB: Double(end.rssKiB) / 1024
            )
        }
    }
}

/// Latency percentiles in milliseconds.
public struct Percentiles: Codable, Sendable {
    public var count: UInt64
    public var p50: Double
    public var p90: Double
    public var p99: Double
    public var p999: Double
    public var max: Double
    public var mean: Double

    init(_ h: Histogram<UInt64>) {
        count = h.totalCount
        func ms(_ micros: UInt64) -> Double { Double(micros) / 1000 }
        if count == 0 {
            p50 = 0
            p90 = 0
            p99 = 0
            p999 = 0
            max = 0
            mean = 0
        } else {
            p50 = ms(h.valueAtPercentile(50))
            p90 = ms(h.valueAtPercentile(90))
            p99 = ms(h.valueAtPercentile(99))
            p999 = ms(h.valueAtPercentile(99.9))
            max = ms(h.max)
            mean = h.mean / 1000
        }
    }
}

/// Correctness of every receiver in a phase.
public struct Checks: Codable, Sendable {
    /// Messages of a receiver's room (after it joined) that it never got.
    public var missing = 0
    public var duplicates = 0
    /// Deliveries with a lower seq than one already delivered.
    public var reordered = 0
    /// Messages with seq at or below the receiver's join seq.
    public var stale = 0
    /// Messages for a room the receiver did not join.
    public var foreignRoom = 0
    /// Connections closed by the server or the network.
    public var unexpectedCloses = 0
    /// Sends with client_msg_id never acknowledged nor refused.
    public var unacked = 0

    public var violations: Int { missing + duplicates + reordered + stale + foreignRoom + unexpectedCloses + unacked }
}

public struct PhaseResult: Codable, Sendable {
    public var scenario: String
    public var label: String
    public var server: String
    public var rooms: Int
    public var membersPerRoom: Int
    public var senders: Int
    /// Target send rate over all senders (msgs/s), 0 for closed loop.
    public var targetRate: Double
    /// Messages kept unacknowledged per sender (closed loop), 0 for open loop.
    public var window: Int
    public var seconds: Double
    public var sent: UInt64
    public var acks: UInt64
    public var sendErrors: UInt64
    public var delivered: UInt64
    public var sentPerSecond: Double
    public var acksPerSecond: Double
    public var deliveredPerSecond: Double
    public var latency: Percentiles
    public var ackLatency: Percentiles
    public var checks: Checks
    public var errors: [String: Int]
    public var processes: [ProcessUsage]
    /// fanout and send's fixed rates: see `holds`.
    public var held: Bool?
    /// CPU of the server processes (every --pid/--gateway-pid process) over the phase, % of one core.
    public var serverCPUPercent: Double?
    /// Server CPU time per delivered message (µs): comparable across runs even when other work
    /// shares the machine, unlike the highest rate that held.
    public var serverMicrosPerDelivery: Double?
}

extension PhaseResult {
    /// A stepped phase held when its p99 stayed within `limit` (ms), at least 90 % of the `offered`
    /// messages per second were `achieved` (delivered, or acknowledged for sends), and it saw no loss,
    /// duplicate, reordering, unexpected close, unanswered send or error frame.
    public func holds(p99: Double, limit: Double, achieved: Double, offered: Double) -> Bool {
        p99 <= limit && achieved >= 0.9 * offered && checks.violations == 0 && errors.values.reduce(0, +) == 0
    }
}

public struct ConnectionsResult: Codable, Sendable {
    public var label: String
    public var server: String
    public var connections: Int
    public var connected: Int
    public var connectFailures: Int
    public var connectSeconds: Double
    public var connectsPerSecond: Double
    public var rooms: Int
    public var joined: Int
    public var joinFailures: Int
    public var joinSeconds: Double
    public var joinsPerSecond: Double
    public var gatewayRSSBeforeMiB: Double?
    public var gatewayRSSAfterMiB: Double?
    public var gatewayKiBPerConnection: Double?
    public var idleSeconds: Double
    public var idleProcesses: [ProcessUsage]
    /// CPU of each process while the connections were being opened.
    public var connectProcesses: [ProcessUsage]?
    public var checks: Checks
    public var errors: [String: Int]
}

public struct HistoryResult: Codable, Sendable {
    public var label: String
    public var server: String
    public var roomMessages: UInt64
    public var requests: Int
    public var newest: Percentiles
    public var deep: Percentiles
    public var deepBefore: UInt64
}

public struct BenchReport: Codable, Sendable {
    public var tool = "chat-bench"
    public var scenario: String
    public var label: String
    public var url: String
    public var startedAt: String
    public var host: String
    public var loadAverage: String
    public var phases: [PhaseResult] = []
    public var connections: ConnectionsResult?
    public var history: HistoryResult?
    /// fanout: the highest step that held; send: the highest fixed rate that held.
    public var best: PhaseResult?
    public var ok = true
}

enum Table {
    static func format(_ value: Double, _ decimals: Int = 1) -> String { String(format: "%.\(decimals)f", value) }

    static func rate(_ value: Double) -> String {
        value >= 10_000 ? String(format: "%.1fk", value / 1000) : String(format: "%.0f", value)
    }

    static func render(_ header: [String], _ rows: [[String]]) -> String {
        var widths = header.map(\.count)
        for row in rows { for (i, cell) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], cell.count) } }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, cell in
                i == 0
                    ? cell.padding(toLength: widths[i], withPad: " ", startingAt: 0)
                    : String(repeating: " ", count: widths[i] - cell.count) + cell
            }.joined(separator: "  ")
        }
        return ([line(header), line(widths.map { String(repeating: "-", count: $0) })] + rows.map(line)).joined(separator: "\n")
    }

    static func phases(_ phases: [PhaseResult]) -> String {
        let header = [
            "phase", "send/s", "ack/s", "deliv/s", "p50 ms", "p90", "p99", "p99.9", "max", "ack p50", "ack p99", "missing", "dup", "order",
            "closed", "errors", "srv µs/deliv",
        ]
        let rows = phases.map { p -> [String] in
            [
                p.label, rate(p.sentPerSecond), rate(p.acksPerSecond), rate(p.deliveredPerSecond),
                format(p.latency.p50, 2), format(p.latency.p90, 2), format(p.latency.p99, 2), format(p.latency.p999, 2),
                format(p.latency.max, 1),
                format(p.ackLatency.p50, 2), format(p.ackLatency.p99, 2),
                "\(p.checks.missing)", "\(p.checks.duplicates)", "\(p.checks.reordered)", "\(p.checks.unexpectedCloses)",
                "\(p.errors.values.reduce(0, +))", p.serverMicrosPerDelivery.map { format($0, 1) } ?? "-",
            ]
        }
        return render(header, rows)
    }

    static func processes(_ phases: [PhaseResult]) -> String {
        var names: [String] = []  // in the order given (--gateway-pid, --pid …, chat-bench)
        for name in phases.flatMap({ $0.processes.map(\.name) }) where !names.contains(name) { names.append(name) }
        guard !names.isEmpty else { return "" }
        let header = ["phase"] + names.flatMap { ["\($0) cpu%", "rss MiB"] }
        let rows = phases.map { p in
            [p.label]
                + names.flatMap { name -> [String] in
                    guard let u = p.processes.first(where: { $0.name == name }) else { return ["-", "-"] }
                    return [format(u.cpuPercent, 0), format(u.rssMiB, 0)]
                }
        }
        return render(header, rows)
    }
}
