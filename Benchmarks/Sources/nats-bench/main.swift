// Micro-benchmark of the NATS layer against raw libnats on the same server, in the same run.
//
//   swift run -c release --package-path Benchmarks nats-bench [--url nats://127.0.0.1:4222] [--messages 1000000]
//       [--size 16] [--js-messages 50000]
//
// Without --url it starts a private nats-server -js (file storage in a temp dir).
import CNATS
import Foundation
import NATS
import NATSTesting
import Synchronization

struct Options {
    var url: String?
    var messages = 1_000_000
    var size = 16
    var jsMessages = 50_000
    var rounds = 3

    init(_ arguments: [String]) throws {
        var iterator = arguments.makeIterator()
        while let argument = iterator.next() {
            func value() throws -> String {
                guard let value = iterator.next() else { throw TestServerError("\(argument) needs a value") }
                return value
            }
            switch argument {
            case "--url": url = try value()
            case "--messages": messages = Int(try value()) ?? messages
            case "--size": size = Int(try value()) ?? size
            case "--js-messages": jsMessages = Int(try value()) ?? jsMessages
            case "--rounds": rounds = Int(try value()) ?? rounds
            case "--help", "-h":
                print("usage: nats-bench [--url URL] [--messages N] [--size BYTES] [--js-messages N] [--rounds R]")
                exit(0)
            default: throw TestServerError("unknown option \(argument)")
            }
        }
    }
}

func rate(_ count: Int, _ elapsed: Duration) -> Double {
    Double(count) / (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
}

func format(_ value: Double) -> String {
    value >= 1_000_000 ? String(format: "%.2f M/s", value / 1_000_000) : String(format: "%.1f k/s", value / 1000)
}

/// Raw libnats: a C callback that only counts (the ceiling for any wrapper).
final class RawCounter: @unchecked Sendable {
    let count = Atomic<Int>(0)
}

func rawPubSub(url: String, subject: String, messages: Int, payload: [UInt8]) throws -> Duration {
    var subscriberConnection: OpaquePointer?
    var publisherConnection: OpaquePointer?
    guard natsConnection_ConnectTo(&subscriberConnection, url) == NATS_OK, natsConnection_ConnectTo(&publisherConnection, url) == NATS_OK,
        let subscriberConnection, let publisherConnection
    else { throw TestServerError("raw connect failed") }
    defer {
        natsConnection_Destroy(subscriberConnection)
        natsConnection_Destroy(publisherConnection)
    }
    let counter = RawCounter()
    let closure = Unmanaged.passRetained(counter).toOpaque()
    defer { Unmanaged<RawCounter>.fromOpaque(closure).release() }
    var subscription: OpaquePointer?
    guard
        natsConnection_Subscribe(
            &subscription,
            subscriberConnection,
            subject,
            { _, _, msg, closure in
                natsMsg_Destroy(msg)
                Unmanaged<RawCounter>.fromOpaque(closure!).takeUnretainedValue().count.add(1, ordering: .relaxed)
            },
            closure
        ) == NATS_OK, let subscription
    else { throw TestServerError("raw subscribe failed") }
    defer {
        natsSubscription_Unsubscribe(subscription)
        natsSubscription_Destroy(subscription)
    }
    natsSubscription_SetPendingLimits(subscription, Int32(messages), -1)
    natsConnection_Flush(subscriberConnection)
    let start = ContinuousClock.now
    payload.withUnsafeBytes { bytes in
        for _ in 0..<messages { natsConnection_Publish(publisherConnection, subject, bytes.baseAddress, Int32(bytes.count)) }
    }
    natsConnection_Flush(publisherConnection)
    while counter.count.load(ordering: .relaxed) < messages {
        if ContinuousClock.now - start > .seconds(60) {
            throw TestServerError("raw: only \(counter.count.load(ordering: .relaxed)) of \(messages) arrived")
        }
        usleep(200)
    }
    return ContinuousClock.now - start
}

func rawJetStreamSync(url: String, subject: String, messages: Int, payload: [UInt8]) throws -> Duration {
    var connection: OpaquePointer?
    guard natsConnection_ConnectTo(&connection, url) == NATS_OK, let connection else { throw TestServerError("raw connect failed") }
    defer { natsConnection_Destroy(connection) }
    var js: OpaquePointer?
    guard natsConnection_JetStream(&js, connection, nil) == NATS_OK, let js else { throw TestServerError("raw js failed") }
    defer { jsCtx_Destroy(js) }
    let start = ContinuousClock.now
    try payload.withUnsafeBytes { bytes in
        for _ in 0..<messages {
            var ack: UnsafeMutablePointer<jsPubAck>?
            guard js_Publish(&ack, js, subject, bytes.baseAddress, Int32(bytes.count), nil, nil) == NATS_OK else {
                throw TestServerError("js_Publish failed")
            }
            jsPubAck_Destroy(ack)
        }
    }
    return ContinuousClock.now - start
}

func rawJetStreamAsync(url: String, subject: String, messages: Int, payload: [UInt8]) throws -> Duration {
    var connection: OpaquePointer?
    guard natsConnection_ConnectTo(&connection, url) == NATS_OK, let connection else { throw TestServerError("raw connect failed") }
    defer { natsConnection_Destroy(connection) }
    var options = jsOptions()
    jsOptions_Init(&options)
    options.PublishAsync.MaxPending = 4096
    var js: OpaquePointer?
    guard natsConnection_JetStream(&js, connection, &options) == NATS_OK, let js else { throw TestServerError("raw js failed") }
    defer { jsCtx_Destroy(js) }
    let start = ContinuousClock.now
    try payload.withUnsafeBytes { bytes in
        for _ in 0..<messages {
            guard js_PublishAsync(js, subject, bytes.baseAddress, Int32(bytes.count), nil) == NATS_OK else {
                throw TestServerError("js_PublishAsync failed")
            }
        }
    }
    guard js_PublishAsyncComplete(js, nil) == NATS_OK else { throw TestServerError("js_PublishAsyncComplete failed") }
    return ContinuousClock.now - start
}

@main
struct Bench {
    static func main() async throws {
        let options = try Options(Array(CommandLine.arguments.dropFirst()))
        var server: NATSServerProcess?
        let url: String
        if let given = options.url {
            url = given
        } else {
            server = try NATSServerProcess()
            url = server!.url
        }
        defer { withExtendedLifetime(server) {} }
        let payload = [UInt8](repeating: 0x61, count: options.size)
        // The core publisher is a bulk publisher: let libnats batch writes (sendAsap off).
        var bulk = NATSConfiguration(url: url, name: "bench-pub")
        bulk.sendAsap = false
        let publisher = try await NATSConnection.connect(bulk, retryUntilConnected: false)
        let subscriber = try await NATSConnection.connect(NATSConfiguration(url: url, name: "bench-sub"), retryUntilConnected: false)
        var results: [(String, Double)] = []
        func best(_ name: String, count: Int, _ body: () async throws -> Duration) async throws {
            var top = 0.0
            for _ in 0..<options.rounds { top = max(top, rate(count, try await body())) }
            results.append((name, top))
            print(String(format: "%-52@ %12@", name as NSString, format(top) as NSString))
        }
        print(
            "nats-bench: \(options.messages) messages of \(options.size) B (core), \(options.jsMessages) (JetStream), "
                + "best of \(options.rounds), server \(url)"
        )

        try await best("core pub→sub, raw libnats C callback (baseline)", count: options.messages) {
            try rawPubSub(url: url, subject: "bench.raw", messages: options.messages, payload: payload)
        }
        try await best("core pub→sub, NATS layer callback (fast path)", count: options.messages) {
            let received = Atomic<Int>(0)
            let subscription = try subscriber.subscribe("bench.cb") { _ in received.add(1, ordering: .relaxed) }
            defer { subscription.unsubscribe() }
            try await subscriber.flush()
            let start = ContinuousClock.now
            for _ in 0..<options.messages { try publisher.publish("bench.cb", payload: payload) }
            try await publisher.flush()
            while received.load(ordering: .relaxed) < options.messages {
                if ContinuousClock.now - start > .seconds(60) { throw TestServerError("callback: messages missing") }
                try await Task.sleep(for: .microseconds(200))
            }
            return ContinuousClock.now - start
        }
        try await best("core pub→sub, NATS layer AsyncSequence (batched)", count: options.messages) {
            let subscription = try subscriber.subscribe("bench.seq", bufferLimit: options.messages)
            defer { subscription.unsubscribe() }
            try await subscriber.flush()
            let start = ContinuousClock.now
            // One element at a time, as an ordinary `for await` consumer would.
            let consumer = Task {
                var count = 0
                for await _ in subscription {
                    count += 1
                    if count == options.messages { break }
                }
                return count
            }
            for _ in 0..<options.messages { try publisher.publish("bench.seq", payload: payload) }
            try await publisher.flush()
            let count = await consumer.value
            guard count == options.messages, subscription.dropped == 0 else {
                throw TestServerError("sequence: \(count) received, \(subscription.dropped) dropped")
            }
            return ContinuousClock.now - start
        }
        try await best("core publish only, NATS layer (+ flush)", count: options.messages) {
            let start = ContinuousClock.now
            for _ in 0..<options.messages { try publisher.publish("bench.nobody", payload: payload) }
            try await publisher.flush()
            return ContinuousClock.now - start
        }

        let js = subscriber.jetStream  // default configuration: sendAsap on, as the services run
        var stream = StreamConfiguration(name: "BENCH", subjects: ["bench.js.>"])
        stream.maxMessages = 1_000_000
        try await js.createOrUpdateStream(stream)
        let syncCount = min(options.jsMessages, 10_000)
        try await best("JetStream publish, raw js_Publish (sync, baseline)", count: syncCount) {
            try rawJetStreamSync(url: url, subject: "bench.js.raw", messages: syncCount, payload: payload)
        }
        try await best("JetStream publish, NATS layer await each", count: syncCount) {
            let start = ContinuousClock.now
            for _ in 0..<syncCount { _ = try await js.publish("bench.js.sync", payload: payload) }
            return ContinuousClock.now - start
        }
        try await best("JetStream publish, raw js_PublishAsync (baseline)", count: options.jsMessages) {
            try rawJetStreamAsync(url: url, subject: "bench.js.rawasync", messages: options.jsMessages, payload: payload)
        }
        try await best("JetStream publish, NATS layer pipelined (window 1024)", count: options.jsMessages) {
            let messages = Array(
                repeating: JetStream.OutgoingMessage(subject: "bench.js.pipe", payload: payload),
                count: options.jsMessages
            )
            let start = ContinuousClock.now
            let results = await js.publishPipelined(messages, window: 1024)
            let elapsed = ContinuousClock.now - start
            guard results.allSatisfy({ (try? $0.get()) != nil }) else { throw TestServerError("pipelined publish had failures") }
            return elapsed
        }
        print("\n| path | rate |\n|---|---|")
        for (name, value) in results { print("| \(name) | \(format(value)) |") }
    }
}
