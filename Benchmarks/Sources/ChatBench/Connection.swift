import Histogram
import NIOCore
import NIOWebSocket

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One WebSocket client connection of chat-bench: an event-driven NIO handler that answers pings,
/// scans every server frame (no JSON decoder), checks its room's messages for loss, duplicates and
/// order by `seq`, records latency into its shard, and sends messages when it is a sender.
///
/// All mutable state is touched only on the channel's event loop (the shard's loop); the controller
/// reaches it through `shard.loop.submit`. That is why it is `@unchecked Sendable`.
final class BenchConnection: ChannelInboundHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    let index: Int
    let username: String
    let shard: Shard
    let connected: EventLoopPromise<Void>
    private var context: ChannelHandlerContext?
    private let maskKey: WebSocketMaskingKey
    private var partial: ByteBuffer?
    private(set) var isActive = false
    private var closeSent = false
    private var finished = false
    var closeCode: UInt16?
    var expectClose = false

    // Room (one per connection).
    var roomIndex = -1
    var roomID: [UInt8] = []
    var joinPromise: EventLoopPromise<UInt64>?
    var joined = false
    var joinSeq: UInt64 = 0

    // Receive checks: bit k of `seen` is seq joinSeq + 1 + k.
    var lastSeq: UInt64 = 0
    private var seen: [UInt64] = []
    var distinct = 0
    var duplicates = 0
    var reordered = 0
    var stale = 0
    var foreignRoom = 0

    // Sending.
    var isSender = false
    var sending = false
    var rate: Double = 0
    var window = 0
    var phaseStart: UInt64 = 0
    var sentInPhase: UInt64 = 0
    var counter: UInt64 = 0
    var outstanding = 0
    var maxAckSeq: UInt64 = 0

    var historyPromise: EventLoopPromise<UInt64>?

    init(index: Int, username: String, shard: Shard) {
        self.index = index
        self.username = username
        self.shard = shard
        self.connected = shard.loop.makePromise()
        self.maskKey = .random()
    }

    // MARK: Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        isActive = true
    }

    func channelInactive(context: ChannelHandlerContext) {
        closedOnLoop(error: BenchError("connection closed\(closeCode.map { " (close code \($0))" } ?? "")"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        shard.count(error: "transport: \(error)")
        context.close(promise: nil)
    }

    /// The channel is gone (also called when the upgrade never happened).
    func closedOnLoop(error: BenchError) {
        guard !finished else { return }
        finished = true
        let wasActive = isActive
        isActive = false
        context = nil
        sending = false
        connected.fail(error)
        joinPromise?.fail(error)
        joinPromise = nil
        historyPromise?.fail(error)
        historyPromise = nil
        if wasActive, !expectClose { shard.unexpectedCloses += 1 }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .text:
            if frame.fin { handleText(frame.unmaskedData) } else { partial = frame.unmaskedData }
        case .continuation:
            guard var buffer = partial else { return }
            var more = frame.unmaskedData
            buffer.writeBuffer(&more)
            if frame.fin {
                partial = nil
                handleText(buffer)
            } else {
                partial = buffer
            }
        case .ping:
            let pong = WebSocketFrame(fin: true, opcode: .pong, maskKey: maskKey, data: frame.unmaskedData)
            context.writeAndFlush(wrapOutboundOut(pong), promise: nil)
        case .connectionClose:
            var data = frame.unmaskedData
            closeCode = data.readInteger(as: UInt16.self)
            if !closeSent {
                closeSent = true
                var reply = context.channel.allocator.buffer(capacity: 2)
                reply.writeInteger(closeCode ?? 1000)
                context.writeAndFlush(
                    wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: maskKey, data: reply)),
                    promise: nil
                )
            }
            context.close(promise: nil)
        default:
            break
        }
    }

    private func handleText(_ buffer: ByteBuffer) {
        let now = monotonicNanos()
        buffer.withUnsafeReadableBytes { bytes in
            let frame = Scan.frame(bytes)
            switch frame.kind {
            case .message:
                shard.delivered += 1
                if let sentAt = frame.sentAt, now >= sentAt { shard.recordDelivery(nanos: now - sentAt) }
                guard let seq = frame.seq else {
                    shard.count(error: "message without seq")
                    return
                }
                guard joined, roomMatches(bytes, frame.roomIDRange) else {
                    foreignRoom += 1
                    return
                }
                receive(seq: seq)
            case .ack:
                shard.acks += 1
                if let sentAt = frame.sentAt, now >= sentAt { shard.recordAck(nanos: now - sentAt) }
                if let seq = frame.seq, seq > maxAckSeq { maxAckSeq = seq }
                outstanding -= 1
                if sending, window > 0 { pump(now: now) }
            case .joined:
                guard let promise = joinPromise else { return }
                joinPromise = nil
                joinSeq = frame.seq ?? 0
                lastSeq = joinSeq
                joined = true
                promise.succeed(joinSeq)
            case .connected:
                connected.succeed(())
            case .error:
                let code = frame.errorCode ?? "unknown"
                shard.count(error: code)
                if frame.sentAt != nil {
                    shard.sendErrors += 1
                    outstanding -= 1
                    if sending, window > 0 { pump(now: now) }
                } else if let promise = joinPromise {
                    joinPromise = nil
                    promise.fail(BenchError("join failed: \(code)"))
                } else if let promise = historyPromise {
                    historyPromise = nil
                    promise.fail(BenchError("history failed: \(code)"))
                }
            case .history:
                guard let promise = historyPromise else { return }
                historyPromise = nil
                // A page must hold messages: an empty one (e.g. below the room's retention) is not a measurement.
                if !frame.hasMessages {
                    promise.fail(BenchError("history page is empty"))
                } else {
                    promise.succeed(now)
                }
            case .other:
                shard.otherFrames += 1
            }
        }
    }

    private func roomMatches(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>?) -> Bool {
        guard let range, range.count == roomID.count, let base = bytes.baseAddress else { return false }
        return roomID.withUnsafeBytes { memcmp(base + range.lowerBound, $0.baseAddress!, range.count) == 0 }
    }

    private func receive(seq: UInt64) {
        guard seq > joinSeq else {
            stale += 1
            return
        }
        let offset = Int(seq - joinSeq - 1)
        let word = offset >> 6
        let bit = UInt64(1) << UInt64(offset & 63)
        if word >= seen.count { seen.append(contentsOf: repeatElement(0, count: max(word + 1 - seen.count, seen.count))) }
        if seen[word] & bit != 0 {
            duplicates += 1
            return
        }
        seen[word] |= bit
        distinct += 1
        if seq < lastSeq { reordered += 1 } else { lastSeq = seq }
    }

    /// Messages of the room in (joinSeq, finalSeq] that never arrived.
    func missing(finalSeq: UInt64) -> Int {
        guard joined, finalSeq > joinSeq else { return 0 }
        return Int(finalSeq - joinSeq) - distinct
    }

    // MARK: Sending (on the loop)

    func write(_ buffer: ByteBuffer, flush: Bool = true) {
        guard let context else { return }
        context.write(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .text, maskKey: maskKey, data: buffer)), promise: nil)
        if flush { context.flush() }
    }

    func join(roomIndex: Int, roomID: String) -> EventLoopFuture<UInt64> {
        let promise = shard.loop.makePromise(of: UInt64.self)
        guard let context else {
            promise.fail(BenchError("not connected"))
            return promise.futureResult
        }
        self.roomIndex = roomIndex
        self.roomID = Array(roomID.utf8)
        joinPromise = promise
        var buffer = context.channel.allocator.buffer(capacity: 80)
        buffer.writeStaticString("{\"type\":\"join\",\"room_id\":\"")
        buffer.writeBytes(self.roomID)
        buffer.writeStaticString("\"}")
        write(buffer)
        return promise.futureResult
    }

    func history(limit: Int, before: UInt64?) -> EventLoopFuture<UInt64> {
        let promise = shard.loop.makePromise(of: UInt64.self)
        guard let context, historyPromise == nil else {
            promise.fail(BenchError("not connected or a history request is pending"))
            return promise.futureResult
        }
        historyPromise = promise
        var buffer = context.channel.allocator.buffer(capacity: 120)
        buffer.writeStaticString("{\"type\":\"history\",\"room_id\":\"")
        buffer.writeBytes(roomID)
        buffer.writeStaticString("\",\"limit\":")
        buffer.writeDecimal(UInt64(limit))
        if let before {
            buffer.writeStaticString(",\"before\":")
            buffer.writeDecimal(before)
        }
        buffer.writeStaticString("}")
        write(buffer)
        return promise.futureResult
    }

    private func sendMessage(now: UInt64, context: ChannelHandlerContext) {
        counter += 1
        let settings = shard.settings
        var buffer = context.channel.allocator.buffer(capacity: 140 + settings.padding.count)
        buffer.writeStaticString("{\"type\":\"message\",\"room_id\":\"")
        buffer.writeBytes(roomID)
        buffer.writeStaticString("\",\"content\":\"t")
        buffer.writeDecimal(now)
        buffer.writeStaticString(" ")
        buffer.writeBytes(settings.padding)
        if settings.clientMessageIDs {
            buffer.writeStaticString("\",\"client_msg_id\":\"a")
            buffer.writeDecimal(now)
            buffer.writeStaticString("n")
            buffer.writeDecimal(counter)
            outstanding += 1
        }
        buffer.writeStaticString("\"}")
        context.write(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .text, maskKey: maskKey, data: buffer)), promise: nil)
        sentInPhase += 1
        shard.sent += 1
    }

    /// Sends what is due: open loop (`rate` per second from `phaseStart`), or closed loop (keep
    /// `window` messages unacknowledged).
    func pump(now: UInt64) {
        guard sending, let context else { return }
        var n = 0
        if window > 0 {
            while outstanding < window, n < 10_000 {
                sendMessage(now: now, context: context)
                n += 1
            }
        } else {
            guard now >= phaseStart else { return }
            let due = UInt64(Double(now - phaseStart) * rate / 1e9) + 1
            // A stalled loop catches up in bursts of at most 1,000 per tick.
            while sentInPhase < due, n < 1_000 {
                sendMessage(now: now, context: context)
                n += 1
            }
        }
        if n > 0 { context.flush() }
    }

    func close() {
        expectClose = true
        guard let context else { return }
        if !closeSent {
            closeSent = true
            var reply = context.channel.allocator.buffer(capacity: 2)
            reply.writeInteger(UInt16(1000))
            context.writeAndFlush(
                wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: maskKey, data: reply)),
                promise: nil
            )
        }
        let channel = context.channel
        channel.eventLoop.scheduleTask(in: .seconds(2)) { channel.close(promise: nil) }
    }
}

public struct BenchError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Per-event-loop state: its connections, counters and histograms, and the send ticker. Touched only
/// on `loop`, so nothing is locked on the hot path; the controller takes snapshots with `submit`.
final class Shard: @unchecked Sendable {
    struct Settings: Sendable {
        var padding: [UInt8]
        var clientMessageIDs: Bool
    }

    let loop: any EventLoop
    let settings: Settings
    var connections: [BenchConnection] = []
    private var senders: [BenchConnection] = []
    private var ticker: RepeatedTask?

    var delivered: UInt64 = 0
    var sent: UInt64 = 0
    var acks: UInt64 = 0
    var sendErrors: UInt64 = 0
    var otherFrames: UInt64 = 0
    var unexpectedCloses = 0
    var errors: [String: Int] = [:]
    var latency = Shard.histogram()
    var ackLatency = Shard.histogram()
    var intervalLatency = Shard.histogram()

    init(loop: any EventLoop, settings: Settings) {
        self.loop = loop
        self.settings = settings
    }

    /// Microseconds from 1 µs to 10 minutes, 3 significant digits.
    static func histogram() -> Histogram<UInt64> {
        Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .three)
    }

    @inline(__always)
    func recordDelivery(nanos: UInt64) {
        let micros = max(1, min(nanos / 1000, 600_000_000))
        _ = latency.record(micros)
        _ = intervalLatency.record(micros)
    }

    @inline(__always)
    func recordAck(nanos: UInt64) {
        _ = ackLatency.record(max(1, min(nanos / 1000, 600_000_000)))
    }

    func count(error: String) {
        errors[error, default: 0] += 1
    }

    func resetStats() {
        delivered = 0
        sent = 0
        acks = 0
        sendErrors = 0
        otherFrames = 0
        errors = [:]
        latency.reset()
        ackLatency.reset()
        intervalLatency.reset()
    }

    struct Snapshot: Sendable {
        var delivered: UInt64 = 0
        var sent: UInt64 = 0
        var acks: UInt64 = 0
        var sendErrors: UInt64 = 0
        var unexpectedCloses = 0
        var outstanding = 0
        var errors: [String: Int] = [:]
        var latency = Shard.histogram()
        var ackLatency = Shard.histogram()
        var intervalLatency = Shard.histogram()

        mutating func add(_ other: Snapshot) {
            delivered += other.delivered
            sent += other.sent
            acks += other.acks
            sendErrors += other.sendErrors
            unexpectedCloses += other.unexpectedCloses
            outstanding += other.outstanding
            errors.merge(other.errors, uniquingKeysWith: +)
            latency.add(other.latency)
            ackLatency.add(other.ackLatency)
            intervalLatency.add(other.intervalLatency)
        }
    }

    func snapshot(resetInterval: Bool, histograms: Bool) -> Snapshot {
        var s = Snapshot()
        s.delivered = delivered
        s.sent = sent
        s.acks = acks
        s.sendErrors = sendErrors
        s.unexpectedCloses = unexpectedCloses
        s.errors = errors
        s.outstanding = connections.reduce(0) { $0 + max(0, $1.outstanding) }
        if histograms {
            s.latency = latency
            s.ackLatency = ackLatency
        }
        s.intervalLatency = intervalLatency
        if resetInterval { intervalLatency.reset() }
        return s
    }

    /// Starts a send phase for the senders on this loop.
    func beginSending(rate: Double, window: Int, start: UInt64, offsets: [Int: UInt64]) {
        senders = connections.filter { $0.isSender && $0.isActive }
        for sender in senders {
            sender.rate = rate
            sender.window = window
            sender.phaseStart = start + (offsets[sender.index] ?? 0)
            sender.sentInPhase = 0
            sender.sending = true
        }
        ticker?.cancel()
        ticker = loop.scheduleRepeatedTask(initialDelay: .zero, delay: .milliseconds(1)) { [self] _ in
            let now = monotonicNanos()
            for sender in senders where sender.sending { sender.pump(now: now) }
        }
    }

    func stopSending() {
        ticker?.cancel()
        ticker = nil
        for sender in senders { sender.sending = false }
        senders = []
    }
}
