import Foundation
import Histogram
import NIOCore
import NIOPosix

/// Command-line options (see `Options.usage`).
public struct Options: Sendable {
    public var scenario = ""
    public var url = "ws://127.0.0.1:3000/ws"
    public var api: String?
    public var label: String?
    public var threads = 2
    public var json: String?
    public var pids: [(String, Int32)] = []
    public var gatewayPID: Int32?
    public var sourceAddresses = 0
    public var rooms: Int?
    public var members: Int?
    public var senders: Int?
    public var rate: Double?
    public var rates: [Double]?
    public var duration: Double?
    /// The p99 a stepped phase may reach and still hold: fanout 50 ms (deliveries), send 20 ms (acks).
    public var p99LimitMs: Double?
    public var connections: Int?
    public var concurrency = 200
    public var joinConcurrency = 100
    public var idleSeconds = 10.0
    public var window: Int?
    public var padding = 16
    public var clientMessageIDs = true
    public var drainSeconds = 15.0
    public var deadline = 1200.0
    public var fill: Int?
    public var deepBefore: UInt64?
    public var requests = 200
    public var strict: Bool?

    public static let usage = """
        usage: chat-bench SCENARIO [options]

        Load generator for any server speaking the seed chat WebSocket protocol (nats-chat's gateway,
        chat-baseline). Scenarios (defaults in brackets):
          smoke        2 rooms x 5 members, 2 senders per room, 10 msgs/s per room for 3 s; exits 1 on any
                       loss, duplicate, reorder, error or unexpected close
          latency      10 rooms x 50 members, 10 senders per room, 100 msgs/s per room for 20 s
          fanout       10 rooms x 100 members, every member sends; steps --rates (msgs/s per room)
                       [10,20,30,40,50,60,80,100,...,400] of --duration [10] s each until p99 >
                       --p99-limit-ms [50] or any loss/error; reports the highest step that held
          connections  --connections [20000] idle connections joined round-robin to --rooms [100]:
                       connect rate, join rate, gateway RSS per connection (--gateway-pid), idle CPU
          send         --connections [100] senders, one per room of --rooms [100]: saturation with
                       --window [32] unacked per sender, then --rates (total msgs/s) [1000,2000,5000,10000]
                       upwards until one is not sustained; reports the highest rate that held: ack p99 ≤
                       --p99-limit-ms [20], ≥ 90 % of the rate answered, no loss, no errors
          history      one room filled with --fill [10000] messages, then --requests [200] sequential
                       history requests for the newest page and for a deep page (limit 50)

        options:
          --url ws://HOST:PORT/ws    WebSocket endpoint [ws://127.0.0.1:3000/ws]
          --api http://HOST:PORT     REST base for POST /api/v1/rooms [same host and port as --url]
          --label NAME               name of the server in the output (e.g. nats-chat, baseline)
          --threads N                client event loops [2]
          --json FILE                also write the results as JSON
          --pid NAME=PID             report CPU% and RSS of this process per phase (repeatable)
          --gateway-pid PID          same as --pid gateway=PID; used for RSS per connection
          --source-addresses N       spread connections over 127.0.0.2 ... 127.0.0.(N+1) [0: no bind]
          --rooms R --members M --senders S (per room) --rate X (msgs/s per room) --duration SECONDS
          --rates A,B,C              step rates (fanout: per room; send: total)
          --connections N --concurrency C [200] (connects in flight) --join-concurrency C [100]
          --idle-seconds S [10]      connections: how long to measure idle CPU
          --window W                 send: closed-loop saturation window per sender [32]
          --padding BYTES            extra content bytes per message [16]
          --no-client-msg-id         send seed-style messages without client_msg_id (no acks)
          --drain-seconds S [15]     how long to wait for the last deliveries after a phase
          --deadline S [1200]        hard limit for the whole run (exit 3)
          --fill N --requests K      history scenario sizes
          --deep-before SEQ          history: the deep page is the one before SEQ [half the room's messages]
          --strict / --no-strict     exit 1 on any correctness violation [on, except fanout]
        """

    public static func parse(_ arguments: [String]) throws -> Options {
        var o = Options()
        var it = arguments.makeIterator()
        func value(_ name: String) throws -> String {
            guard let v = it.next() else { throw BenchError("\(name) needs a value") }
            return v
        }
        func int(_ name: String) throws -> Int {
            guard let v = Int(try value(name)), v >= 0 else { throw BenchError("\(name) needs a non-negative integer") }
            return v
        }
        func double(_ name: String) throws -> Double {
            guard let v = Double(try value(name)), v >= 0 else { throw BenchError("\(name) needs a non-negative number") }
            return v
        }
        while let a = it.next() {
            switch a {
            case "--url": o.url = try value(a)
            case "--api": o.api = try value(a)
            case "--label": o.label = try value(a)
            case "--threads": o.threads = max(1, try int(a))
            case "--json": o.json = try value(a)
            case "--pid":
                let v = try value(a)
                guard let eq = v.firstIndex(of: "="), let pid = Int32(v[v.index(after: eq)...]) else {
                    throw BenchError("--pid wants NAME=PID")
                }
                o.pids.append((String(v[..<eq]), pid))
            case "--gateway-pid":
                guard let pid = Int32(try value(a)) else { throw BenchError("--gateway-pid wants a PID") }
                o.gatewayPID = pid
            case "--source-addresses": o.sourceAddresses = min(250, try int(a))
            case "--rooms": o.rooms = max(1, try int(a))
            case "--members": o.members = max(1, try int(a))
            case "--senders": o.senders = max(1, try int(a))
            case "--rate": o.rate = try double(a)
            case "--rates":
                let list = try value(a).split(separator: ",").map { Double($0) }
                guard !list.isEmpty, list.allSatisfy({ $0 != nil && $0! > 0 }) else {
                    throw BenchError("--rates wants positive numbers, comma-separated")
                }
                o.rates = list.map { $0! }
            case "--duration": o.duration = try double(a)
            case "--p99-limit-ms":
                let limit = try double(a)
                guard limit > 0 else { throw BenchError("--p99-limit-ms wants a positive number") }
                o.p99LimitMs = limit
            case "--connections": o.connections = max(1, try int(a))
            case "--concurrency": o.concurrency = max(1, try int(a))
            case "--join-concurrency": o.joinConcurrency = max(1, try int(a))
            case "--idle-seconds": o.idleSeconds = try double(a)
            case "--window": o.window = max(1, try int(a))
            case "--padding": o.padding = min(3000, try int(a))
            case "--no-client-msg-id": o.clientMessageIDs = false
            case "--drain-seconds": o.drainSeconds = try double(a)
            case "--deadline": o.deadline = max(1, try double(a))
            case "--fill": o.fill = try int(a)
            case "--deep-before": o.deepBefore = UInt64(try int(a))
            case "--requests": o.requests = max(1, try int(a))
            case "--strict": o.strict = true
            case "--no-strict": o.strict = false
            case "-h", "--help": throw BenchError(usage)
            default:
                if a.hasPrefix("-") || !o.scenario.isEmpty { throw BenchError("unknown argument \(a)\n\n\(usage)") }
                o.scenario = a
            }
        }
        guard ["smoke", "latency", "fanout", "connections", "send", "history"].contains(o.scenario) else {
            throw BenchError(o.scenario.isEmpty ? usage : "unknown scenario \(o.scenario)\n\n\(usage)")
        }
        return o
    }

    /// The p99 limit of a stepped phase: `--p99-limit-ms`, else the scenario's target.
    public var p99Limit: Double { p99LimitMs ?? (scenario == "send" ? 20 : 50) }
}

func log(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}

/// The controller: sets up rooms and connections, runs phases, collects and checks the results.
public final class Bench: @unchecked Sendable {
    let options: Options
    let target: Target
    let group: MultiThreadedEventLoopGroup
    let shards: [Shard]
    let connector: Connector
    let runID: String
    var connections: [BenchConnection] = []
    var roomIDs: [String] = []
    var report: BenchReport
    var label: String { options.label ?? "\(target.host):\(target.port)" }
    var processes: [(String, Int32)] {
        var list = options.pids
        if let pid = options.gatewayPID, !list.contains(where: { $0.1 == pid }) { list.insert(("gateway", pid), at: 0) }
        return list + [("chat-bench", 0)]
    }

    public init(options: Options) throws {
        self.options = options
        target = try Target(url: options.url, api: options.api)
        group = MultiThreadedEventLoopGroup(numberOfThreads: options.threads)
        var padding = [UInt8](repeating: UInt8(ascii: "x"), count: options.padding)
        if padding.isEmpty { padding = [UInt8(ascii: "x")] }
        let settings = Shard.Settings(padding: padding, clientMessageIDs: options.clientMessageIDs)
        shards = group.makeIterator().map { Shard(loop: $0, settings: settings) }
        var sources: [SocketAddress] = []
        for i in 0..<options.sourceAddresses { sources.append(try SocketAddress(ipAddress: "127.0.0.\(i + 2)", port: 0)) }
        connector = Connector(target: target, shards: shards, sources: sources, group: group)
        runID = String(UInt64.random(in: 0..<UInt64(1) << 40), radix: 36)
        var load = (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? ""
        load = load.split(separator: " ").prefix(3).joined(separator: " ")
        report = BenchReport(
            scenario: options.scenario,
            label: options.label ?? "\(target.host):\(target.port)",
            url: options.url,
            startedAt: Date().formatted(.iso8601),
            host: ProcessInfo.processInfo.hostName,
            loadAverage: load
        )
    }

    // MARK: helpers

    func onShards<T: Sendable>(_ body: @escaping @Sendable (Shard) -> T) async throws -> [T] {
        var results: [T] = []
        for shard in shards { results.append(try await shard.loop.submit { body(shard) }.get()) }
        return results
    }

    func snapshot(resetInterval: Bool = false, histograms: Bool = true) async throws -> Shard.Snapshot {
        var total = Shard.Snapshot()
        for s in try await onShards({ $0.snapshot(resetInterval: resetInterval, histograms: histograms) }) { total.add(s) }
        return total
    }

    func sampleProcesses() -> [ProcessSample] {
        processes.compactMap { ProcessSample.take(name: $0.0, pid: $0.1) } + [ProcessSample.machine()].compactMap { $0 }
    }

    static func sleep(seconds: Double) async {
        try? await Task.sleep(nanoseconds: UInt64(max(0, seconds) * 1e9))
    }

    /// Raises the open-file limit so N sockets fit.
    static func raiseFileLimit(to wanted: Int) {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
        let want = rlim_t(wanted)
        if limit.rlim_cur >= want { return }
        limit.rlim_cur = min(want, limit.rlim_max)
        if want > limit.rlim_max {  // root may raise the hard limit too
            var higher = limit
            higher.rlim_max = want
            higher.rlim_cur = want
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &higher) == 0 { return }
        }
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        if limit.rlim_cur < want { log("warning: open-file limit is \(limit.rlim_cur), fewer than the \(wanted) wanted") }
    }

    // MARK: set-up

    func createRooms(_ count: Int) async throws {
        let start = monotonicNanos()
        for i in 0..<count {
            roomIDs.append(try await connector.createRoom(name: "bench-\(runID)-\(i)"))
        }
        log("created \(count) rooms in \(Table.format(Double(monotonicNanos() - start) / 1e6, 0)) ms")
    }

    struct ConnectOutcome {
        var connected = 0
        var failed = 0
        var seconds = 0.0
        var firstError: String?
    }

    /// Opens connections with indexes `range`, at most `concurrency` in flight.
    func connectAll(_ count: Int, concurrency: Int) async -> ConnectOutcome {
        Self.raiseFileLimit(to: count + connections.count + 4096)
        var outcome = ConnectOutcome()
        let start = monotonicNanos()
        let base = connections.count
        let connector = self.connector
        let runID = self.runID
        var opened: [BenchConnection] = []
        var lastLog = start
        await withTaskGroup(of: Result<BenchConnection, BenchError>.self) { group in
            var next = 0
            func add() {
                let index = base + next
                next += 1
                group.addTask {
                    do {
                        return .success(try await connector.connect(index: index, username: "b\(runID)-\(index)"))
                    } catch {
                        return .failure(BenchError("\(error)"))
                    }
                }
            }
            while next < min(concurrency, count) { add() }
            for await result in group {
                switch result {
                case .success(let c): opened.append(c)
                case .failure(let e):
                    outcome.failed += 1
                    if outcome.firstError == nil { outcome.firstError = e.description }
                }
                let now = monotonicNanos()
                if now - lastLog > 2_000_000_000 {
                    lastLog = now
                    log(
                        "  connecting: \(opened.count) open, \(outcome.failed) failed, "
                            + "\(Table.format(Double(opened.count) / (Double(now - start) / 1e9), 0))/s"
                    )
                }
                if next < count, now - start < UInt64(options.deadline * 1e9) { add() }
            }
        }
        outcome.seconds = Double(monotonicNanos() - start) / 1e9
        outcome.connected = opened.count
        opened.sort { $0.index < $1.index }
        connections += opened
        let connections = opened
        _ = try? await onShards { shard in shard.connections += connections.filter { $0.shard === shard } }
        return outcome
    }

    struct JoinOutcome {
        var joined = 0
        var failed = 0
        var seconds = 0.0
        var firstError: String?
    }

    /// Joins connection i (of `connections`) to room `room(i)`, at most `concurrency` joins in flight.
    func joinAll(room: @escaping @Sendable (Int) -> Int, concurrency: Int) async -> JoinOutcome {
        var outcome = JoinOutcome()
        let start = monotonicNanos()
        let list = connections
        let roomIDs = self.roomIDs
        var lastLog = start
        await withTaskGroup(of: BenchError?.self) { group in
            var next = 0
            func add() {
                let position = next
                next += 1
                let connection = list[position]
                group.addTask {
                    let r = room(position)
                    do {
                        _ = try await connection.shard.loop.flatSubmit { () -> EventLoopFuture<UInt64> in
                            let future = connection.join(roomIndex: r, roomID: roomIDs[r])
                            let promiseTimeout = connection.shard.loop.scheduleTask(in: .seconds(30)) {
                                connection.joinPromise?.fail(BenchError("join timed out"))
                                connection.joinPromise = nil
                            }
                            future.whenComplete { _ in promiseTimeout.cancel() }
                            return future
                        }.get()
                        return nil
                    } catch {
                        return BenchError("\(error)")
                    }
                }
            }
            while next < min(concurrency, list.count) { add() }
            for await error in group {
                if let error {
                    outcome.failed += 1
                    if outcome.firstError == nil { outcome.firstError = error.description }
                } else {
                    outcome.joined += 1
                }
                let now = monotonicNanos()
                if now - lastLog > 2_000_000_000 {
                    lastLog = now
                    log("  joining: \(outcome.joined) joined, \(outcome.failed) failed")
                }
                if next < list.count, now - start < UInt64(options.deadline * 1e9) { add() }
            }
        }
        outcome.seconds = Double(monotonicNanos() - start) / 1e9
        return outcome
    }

    /// Sets up R rooms of M members (connection i is member i % M of room i / M); the first S
    /// members of each room send.
    func setUpRooms(rooms: Int, members: Int, senders: Int) async throws {
        try await createRooms(rooms)
        let total = rooms * members
        log("connecting \(total) clients to \(options.url)")
        let connected = await connectAll(total, concurrency: options.concurrency)
        log(
            "connected \(connected.connected) in \(Table.format(connected.seconds, 2)) s "
                + "(\(Table.format(Double(connected.connected) / max(connected.seconds, 1e-9), 0))/s)"
        )
        guard connected.failed == 0 else { throw BenchError("\(connected.failed) connections failed: \(connected.firstError ?? "")") }
        let joined = await joinAll(room: { $0 / members }, concurrency: options.joinConcurrency)
        log("joined \(joined.joined) in \(Table.format(joined.seconds, 2)) s")
        guard joined.failed == 0 else { throw BenchError("\(joined.failed) joins failed: \(joined.firstError ?? "")") }
        _ = try await onShards { shard in
            for c in shard.connections { c.isSender = c.index % members < senders }
        }
        // Let the join notices (user_joined) settle before measuring.
        await Self.sleep(seconds: 1)
    }

    // MARK: a measured phase

    /// Final seq per room: the highest seq any member saw or any sender had acknowledged.
    func finalSeqs() async throws -> [UInt64] {
        var finals = [UInt64](repeating: 0, count: roomIDs.count)
        for list in try await onShards({ shard in shard.connections.map { ($0.roomIndex, max($0.lastSeq, $0.maxAckSeq)) } }) {
            for (room, seq) in list where room >= 0 { finals[room] = max(finals[room], seq) }
        }
        return finals
    }

    func checks(finals: [UInt64]) async throws -> Checks {
        var total = Checks()
        for c in try await onShards({ shard -> Checks in
            var c = Checks()
            for conn in shard.connections {
                if conn.roomIndex >= 0, conn.roomIndex < finals.count {
                    c.missing += max(0, conn.missing(finalSeq: finals[conn.roomIndex]))
                }
                c.duplicates += conn.duplicates
                c.reordered += conn.reordered
                c.stale += conn.stale
                c.foreignRoom += conn.foreignRoom
                c.unacked += max(0, conn.outstanding)
            }
            c.unexpectedCloses = shard.unexpectedCloses
            return c
        }) {
            total.missing += c.missing
            total.duplicates += c.duplicates
            total.reordered += c.reordered
            total.stale += c.stale
            total.foreignRoom += c.foreignRoom
            total.unexpectedCloses += c.unexpectedCloses
            total.unacked += c.unacked
        }
        return total
    }

    /// Sends for `duration` seconds (open loop at `ratePerSender`, or closed loop with `window`), then
    /// waits for the last acks and deliveries and checks every receiver.
    func phase(
        _ name: String,
        rooms: Int,
        members: Int,
        ratePerSender: Double,
        window: Int,
        duration: Double,
        stopAfterAcks: UInt64? = nil
    ) async throws -> PhaseResult {
        _ = try await onShards { $0.resetStats() }
        let senderIndexes = try await onShards { shard in shard.connections.filter { $0.isSender && $0.isActive }.map(\.index) }.flatMap {
            $0
        }.sorted()
        var offsets: [Int: UInt64] = [:]
        if ratePerSender > 0 {
            for (k, index) in senderIndexes.enumerated() {
                offsets[index] = UInt64(Double(k) / Double(max(1, senderIndexes.count)) / ratePerSender * 1e9)
            }
        }
        let before = sampleProcesses()
        let start = monotonicNanos() + 10_000_000
        let frozenOffsets = offsets
        _ = try await onShards { $0.beginSending(rate: ratePerSender, window: window, start: start, offsets: frozenOffsets) }
        let end = start + UInt64(duration * 1e9)
        var lastPrint = start
        var lastDelivered: UInt64 = 0
        var lastSent: UInt64 = 0
        while true {
            let now = monotonicNanos()
            if now >= end { break }
            if let stopAfterAcks {
                await Self.sleep(seconds: 0.05)
                if try await onShards({ $0.acks }).reduce(0, +) < stopAfterAcks, monotonicNanos() - lastPrint < 1_000_000_000 { continue }
            } else {
                await Self.sleep(seconds: min(1, Double(end - now) / 1e9))
            }
            let s = try await snapshot(resetInterval: true, histograms: false)
            let t = monotonicNanos()
            let dt = Double(t - lastPrint) / 1e9
            let p99 = s.intervalLatency.totalCount > 0 ? Double(s.intervalLatency.valueAtPercentile(99)) / 1000 : 0
            log(
                String(
                    format: "  [%@ %5.1fs] sent %llu (%@/s) acks %llu delivered %llu (%@/s) p99 %.2f ms errors %d closed %d",
                    name,
                    Double(t - start) / 1e9,
                    s.sent,
                    Table.rate(Double(s.sent - lastSent) / dt),
                    s.acks,
                    s.delivered,
                    Table.rate(Double(s.delivered - lastDelivered) / dt),
                    p99,
                    s.errors.values.reduce(0, +),
                    s.unexpectedCloses
                )
            )
            lastPrint = t
            lastDelivered = s.delivered
            lastSent = s.sent
            if let stopAfterAcks, s.acks >= stopAfterAcks { break }
        }
        _ = try await onShards { $0.stopSending() }
        let sendEnd = monotonicNanos()
        let after = sampleProcesses()
        let atEnd = try await snapshot(histograms: false)
        // Drain: every send answered, every receiver caught up with its room's final seq.
        let drainDeadline = monotonicNanos() + UInt64(options.drainSeconds * 1e9)
        var finals = try await finalSeqs()
        var checks = try await self.checks(finals: finals)
        while monotonicNanos() < drainDeadline, checks.missing > 0 || checks.unacked > 0 {
            await Self.sleep(seconds: 0.1)
            finals = try await finalSeqs()
            checks = try await self.checks(finals: finals)
        }
        let final = try await snapshot()
        let seconds = Double(sendEnd - start) / 1e9
        var result = PhaseResult(
            scenario: options.scenario,
            label: name,
            server: label,
            rooms: rooms,
            membersPerRoom: members,
            senders: senderIndexes.count,
            targetRate: ratePerSender * Double(senderIndexes.count),
            window: window,
            seconds: seconds,
            sent: final.sent,
            acks: final.acks,
            sendErrors: final.sendErrors,
            delivered: final.delivered,
            sentPerSecond: Double(atEnd.sent) / seconds,
            acksPerSecond: Double(atEnd.acks) / seconds,
            deliveredPerSecond: Double(atEnd.delivered) / seconds,
            latency: Percentiles(final.latency),
            ackLatency: Percentiles(final.ackLatency),
            checks: checks,
            errors: final.errors,
            processes: ProcessUsage.between(before, after),
            held: nil
        )
        result.checks.unexpectedCloses = final.unexpectedCloses
        let servers = result.processes.filter { $0.name != "chat-bench" && $0.name != "machine" }
        if !servers.isEmpty {
            let cpu = servers.reduce(0) { $0 + $1.cpuPercent }
            result.serverCPUPercent = cpu
            if atEnd.delivered > 0 { result.serverMicrosPerDelivery = cpu / 100 * seconds * 1e6 / Double(atEnd.delivered) }
        }
        log(
            String(
                format: "  %@: %@ deliveries/s, p50 %.2f ms, p99 %.2f ms, missing %d, dup %d, reordered %d, errors %d",
                name,
                Table.rate(result.deliveredPerSecond),
                result.latency.p50,
                result.latency.p99,
                checks.missing,
                checks.duplicates,
                checks.reordered,
                final.errors.values.reduce(0, +)
            )
        )
        return result
    }

    func closeAll() async {
        _ = try? await onShards { shard in shard.connections.forEach { $0.close() } }
        await Self.sleep(seconds: 0.3)
    }

    // MARK: scenarios

    public func run() async throws -> Bool {
        switch options.scenario {
        case "smoke":
            try await runRooms(
                rooms: options.rooms ?? 2,
                members: options.members ?? 5,
                senders: options.senders ?? 2,
                rates: [options.rate ?? 10],
                duration: options.duration ?? 3,
                stepping: false
            )
        case "latency":
            try await runRooms(
                rooms: options.rooms ?? 10,
                members: options.members ?? 50,
                senders: options.senders ?? 10,
                rates: [options.rate ?? 100],
                duration: options.duration ?? 20,
                stepping: false
            )
        case "fanout":
            let members = options.members ?? 100
            try await runRooms(
                rooms: options.rooms ?? 10,
                members: members,
                senders: options.senders ?? members,
                rates: options.rates ?? options.rate.map { [$0] } ?? [10, 20, 30, 40, 50, 60, 80, 100, 120, 150, 200, 300, 400],
                duration: options.duration ?? 10,
                stepping: true
            )
        case "connections": try await runConnections()
        case "send": try await runSend()
        case "history": try await runHistory()
        default: throw BenchError(Options.usage)
        }
        await closeAll()
        printReport()
        if let path = options.json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(report).write(to: URL(fileURLWithPath: path))
            log("wrote \(path)")
        }
        return report.ok
    }

    /// smoke, latency, fanout: R rooms x M members, S senders per room, one phase per rate (msgs/s per room).
    func runRooms(rooms: Int, members: Int, senders: Int, rates: [Double], duration: Double, stepping: Bool) async throws {
        let senders = min(senders, members)
        try await setUpRooms(rooms: rooms, members: members, senders: senders)
        let strict = options.strict ?? !stepping
        for rate in rates {
            let name = stepping ? "\(Int(rate))/s/room" : "\(options.scenario) \(Int(rate))/s/room"
            var result = try await phase(
                name,
                rooms: rooms,
                members: members,
                ratePerSender: rate / Double(senders),
                window: 0,
                duration: duration
            )
            let errors = result.errors.values.reduce(0, +)
            if stepping {
                result.held = result.holds(
                    p99: result.latency.p99,
                    limit: options.p99Limit,
                    achieved: result.deliveredPerSecond,
                    offered: rate * Double(rooms * members)
                )
            }
            report.phases.append(result)
            if strict, result.checks.violations > 0 || errors > 0 { report.ok = false }
            if stepping {
                if result.held == true { report.best = result } else { break }
            }
        }
    }

    func runSend() async throws {
        let n = options.connections ?? 100
        let rooms = min(options.rooms ?? n, n)
        try await createRooms(rooms)
        let connected = await connectAll(n, concurrency: options.concurrency)
        guard connected.failed == 0 else { throw BenchError("\(connected.failed) connections failed: \(connected.firstError ?? "")") }
        let joined = await joinAll(room: { $0 % rooms }, concurrency: options.joinConcurrency)
        guard joined.failed == 0 else { throw BenchError("\(joined.failed) joins failed: \(joined.firstError ?? "")") }
        _ = try await onShards { shard in shard.connections.forEach { $0.isSender = true } }
        await Self.sleep(seconds: 1)
        let duration = options.duration ?? 10
        let members = n / rooms
        let strict = options.strict ?? true
        // Saturation first (closed loop: it cannot build a backlog), then fixed rates upwards until
        // one is not sustained; an overloaded phase would leave a backlog that spoils the next one.
        if options.clientMessageIDs {
            let window = options.window ?? 32
            let result = try await phase(
                "send saturation (window \(window))",
                rooms: rooms,
                members: members,
                ratePerSender: 0,
                window: window,
                duration: duration
            )
            report.phases.append(result)
            if strict, result.checks.violations > 0 { report.ok = false }
        }
        for rate in options.rates ?? [1000, 2000, 5000, 10000] {
            var result = try await phase(
                "send \(Int(rate))/s",
                rooms: rooms,
                members: members,
                ratePerSender: rate / Double(n),
                window: 0,
                duration: duration
            )
            // Held: answered (acks; deliveries without client_msg_id) at the rate within the p99 limit.
            result.held =
                options.clientMessageIDs
                ? result.holds(p99: result.ackLatency.p99, limit: options.p99Limit, achieved: result.acksPerSecond, offered: rate)
                : result.holds(
                    p99: result.latency.p99,
                    limit: options.p99Limit,
                    achieved: result.deliveredPerSecond,
                    offered: rate * Double(members)
                )
            if result.held == true, (report.best?.targetRate ?? 0) < result.targetRate { report.best = result }
            report.phases.append(result)
            if strict, result.checks.violations > 0 { report.ok = false }
            if result.deliveredPerSecond < 0.9 * rate || result.latency.p99 > 1000 {
                log("  \(Int(rate))/s was not sustained (p99 \(Table.format(result.latency.p99, 0)) ms); higher rates skipped")
                break
            }
        }
    }

    func runConnections() async throws {
        let n = options.connections ?? 20_000
        let rooms = options.rooms ?? 100
        try await createRooms(rooms)
        let gateway = options.gatewayPID.flatMap { ProcessSample.take(name: "gateway", pid: $0) }
        log("connecting \(n) clients (\(options.concurrency) in flight)")
        let connectStart = sampleProcesses()
        let connected = await connectAll(n, concurrency: options.concurrency)
        let connectEnd = sampleProcesses()
        log(
            "connected \(connected.connected) in \(Table.format(connected.seconds, 2)) s, \(connected.failed) failed"
                + (connected.firstError.map { " (first: \($0))" } ?? "")
        )
        let joined = await joinAll(room: { $0 % rooms }, concurrency: options.joinConcurrency)
        log(
            "joined \(joined.joined) in \(Table.format(joined.seconds, 2)) s, \(joined.failed) failed"
                + (joined.firstError.map { " (first: \($0))" } ?? "")
        )
        // Let presence notices drain, then measure idle.
        var previous: UInt64 = 0
        for _ in 0..<60 {
            await Self.sleep(seconds: 1)
            let others = try await onShards { $0.otherFrames }.reduce(0, +)
            if others == previous { break }
            previous = others
        }
        let idleStart = sampleProcesses()
        await Self.sleep(seconds: options.idleSeconds)
        let idleEnd = sampleProcesses()
        let gatewayAfter = options.gatewayPID.flatMap { ProcessSample.take(name: "gateway", pid: $0) }
        let snapshot = try await self.snapshot(histograms: false)
        var checks = try await self.checks(finals: [UInt64](repeating: 0, count: rooms))
        checks.unexpectedCloses = snapshot.unexpectedCloses
        var result = ConnectionsResult(
            label: label,
            server: label,
            connections: n,
            connected: connected.connected,
            connectFailures: connected.failed,
            connectSeconds: connected.seconds,
            connectsPerSecond: Double(connected.connected) / max(connected.seconds, 1e-9),
            rooms: rooms,
            joined: joined.joined,
            joinFailures: joined.failed,
            joinSeconds: joined.seconds,
            joinsPerSecond: Double(joined.joined) / max(joined.seconds, 1e-9),
            idleSeconds: options.idleSeconds,
            idleProcesses: ProcessUsage.between(idleStart, idleEnd),
            checks: checks,
            errors: snapshot.errors
        )
        result.connectProcesses = ProcessUsage.between(connectStart, connectEnd)
        if let gateway, let gatewayAfter {
            result.gatewayRSSBeforeMiB = Double(gateway.rssKiB) / 1024
            result.gatewayRSSAfterMiB = Double(gatewayAfter.rssKiB) / 1024
            result.gatewayKiBPerConnection = Double(gatewayAfter.rssKiB - gateway.rssKiB) / Double(max(1, connected.connected))
        }
        report.connections = result
        if options.strict ?? true, connected.failed > 0 || joined.failed > 0 || checks.unexpectedCloses > 0 { report.ok = false }
    }

    func runHistory() async throws {
        let fill = options.fill ?? 10_000
        try await createRooms(1)
        let connected = await connectAll(1, concurrency: 1)
        guard connected.failed == 0 else { throw BenchError("connect failed: \(connected.firstError ?? "")") }
        let joined = await joinAll(room: { _ in 0 }, concurrency: 1)
        guard joined.failed == 0 else { throw BenchError("join failed: \(joined.firstError ?? "")") }
        _ = try await onShards { shard in shard.connections.forEach { $0.isSender = true } }
        if fill > 0 {
            log("filling the room with \(fill) messages")
            let result = try await phase(
                "fill",
                rooms: 1,
                members: 1,
                ratePerSender: 0,
                window: options.window ?? 64,
                duration: options.deadline,
                stopAfterAcks: UInt64(fill)
            )
            report.phases.append(result)
        }
        let total = try await finalSeqs()[0]
        let connection = connections[0]
        func measure(before: UInt64?) async throws -> Percentiles {
            var h = Shard.histogram()
            for _ in 0..<options.requests {
                let start = monotonicNanos()
                let done = try await connection.shard.loop.flatSubmit { connection.history(limit: 50, before: before) }.get()
                _ = h.record(max(1, (done - start) / 1000))
            }
            return Percentiles(h)
        }
        // The middle of the room: deep, and still within a retention limit smaller than the room.
        let deepBefore: UInt64 = options.deepBefore ?? max(51, total / 2)
        let newest = try await measure(before: nil)
        let deep = try await measure(before: deepBefore)
        report.history = HistoryResult(
            label: label,
            server: label,
            roomMessages: total,
            requests: options.requests,
            newest: newest,
            deep: deep,
            deepBefore: deepBefore
        )
    }

    func printReport() {
        var out = "\nchat-bench \(options.scenario) against \(label) (\(options.url)), load average at start \(report.loadAverage)\n"
        if !report.phases.isEmpty {
            out += Table.phases(report.phases) + "\n"
            let processes = Table.processes(report.phases)
            if !processes.isEmpty { out += "\nCPU (% of one core) and RSS during each phase's sending:\n" + processes + "\n" }
        }
        let limit = String(format: "%g", options.p99Limit)
        switch (options.scenario, report.best) {
        case ("fanout", let best?):
            out +=
                "\nfanout: highest step that held (p99 ≤ \(limit) ms, no loss, no errors): \(best.label) = "
                + "\(Table.rate(best.deliveredPerSecond)) deliveries/s, p99 \(Table.format(best.latency.p99, 2)) ms\n"
        case ("fanout", nil):
            out += "\nfanout: no step held\n"
        case ("send", let best?) where options.clientMessageIDs:
            out +=
                "\nsend: highest fixed rate that held (ack p99 ≤ \(limit) ms, ≥ 90 % answered, no loss, no errors): "
                + "\(best.label) = \(Table.rate(best.acksPerSecond)) acks/s, ack p99 \(Table.format(best.ackLatency.p99, 2)) ms\n"
        case ("send", let best?):
            out +=
                "\nsend: highest fixed rate that held (p99 ≤ \(limit) ms, ≥ 90 % delivered, no loss, no errors): "
                + "\(best.label) = \(Table.rate(best.deliveredPerSecond)) deliveries/s, p99 \(Table.format(best.latency.p99, 2)) ms\n"
        case ("send", nil):
            out += "\nsend: no fixed rate held (p99 ≤ \(limit) ms)\n"
        default:
            break
        }
        if let c = report.connections {
            var rows: [[String]] = [
                ["connections", "\(c.connected) of \(c.connections) (\(c.connectFailures) failed)"],
                ["connect rate", "\(Table.format(c.connectsPerSecond, 0))/s (\(Table.format(c.connectSeconds, 2)) s)"],
                [
                    "join rate",
                    "\(Table.format(c.joinsPerSecond, 0))/s (\(c.joined) joined into \(c.rooms) rooms, \(c.joinFailures) failed, "
                        + "\(Table.format(c.joinSeconds, 2)) s)",
                ],
            ]
            if let before = c.gatewayRSSBeforeMiB, let after = c.gatewayRSSAfterMiB, let per = c.gatewayKiBPerConnection {
                rows.append([
                    "gateway RSS",
                    "\(Table.format(before)) MiB → \(Table.format(after)) MiB = \(Table.format(per, 1)) KiB per connection",
                ])
            }
            // CPU time per connection while connecting: comparable across runs even when the rate is not.
            for p in c.connectProcesses ?? [] where p.pid >= 0 && c.connected > 0 {
                let micros = p.cpuPercent / 100 * c.connectSeconds / Double(c.connected) * 1e6
                rows.append([
                    "connect CPU \(p.name)",
                    "\(Table.format(micros, 0)) µs per connection (\(Table.format(p.cpuPercent, 0)) % while connecting)",
                ])
            }
            for p in c.idleProcesses {
                rows.append([
                    "idle \(p.name)",
                    "\(Table.format(p.cpuPercent, 1)) % CPU, \(Table.format(p.rssMiB)) MiB RSS (over \(Table.format(c.idleSeconds, 0)) s)",
                ])
            }
            rows.append(["unexpected closes", "\(c.checks.unexpectedCloses)"])
            if !c.errors.isEmpty { rows.append(["errors", c.errors.map { "\($0.key)=\($0.value)" }.sorted().joined(separator: " ")]) }
            out += Table.render(["connections", "result"], rows) + "\n"
        }
        if let h = report.history {
            out +=
                Table.render(
                    ["history (limit 50)", "p50 ms", "p90", "p99", "p99.9", "max"],
                    [
                        [
                            "newest page (room of \(h.roomMessages))", Table.format(h.newest.p50, 2), Table.format(h.newest.p90, 2),
                            Table.format(h.newest.p99, 2), Table.format(h.newest.p999, 2), Table.format(h.newest.max, 2),
                        ],
                        [
                            "deep page (before=\(h.deepBefore))", Table.format(h.deep.p50, 2), Table.format(h.deep.p90, 2),
                            Table.format(h.deep.p99, 2), Table.format(h.deep.p999, 2), Table.format(h.deep.max, 2),
                        ],
                    ]
                ) + "\n"
        }
        let errors = report.phases.flatMap { $0.errors }.reduce(into: [String: Int]()) { $0[$1.key, default: 0] += $1.value }
        if !errors.isEmpty { out += "errors: " + errors.map { "\($0.key)=\($0.value)" }.sorted().joined(separator: " ") + "\n" }
        out += report.ok ? "result: OK\n" : "result: FAILED (loss, duplicates, reordering, errors or closed connections; see above)\n"
        FileHandle.standardOutput.write(Data((out + "\n").utf8))
    }
}
