import NATSTesting
import Synchronization
import Testing

@testable import NATS

#if canImport(Glibc)
import Glibc
#endif

@Suite("libnats threads: messages freed by their destroyer, subscriptions on a bounded delivery pool")
struct DeliveryThreadTests {
    @Test func messagesAreFreedWithoutTheCollectorThread() throws {
        // natsMsg_create sets the collector callback for received messages and for those built to publish
        // with headers alike; if a libnats update moved it, `destroy` would quietly take the slow path.
        let payload: [UInt8] = Array("payload".utf8)
        for _ in 0..<1000 {
            let msg = try payload.withUnsafeBytes { bytes throws(NATSError) in
                try LibNATS.makeMessage(subject: "a.b", reply: "r", headers: ["Key": "value"], payload: bytes)
            }
            #expect(LibNATS.destroyFreesDirectly(msg))
            LibNATS.destroy(msg)
        }
    }

    /// Subscribes `count` subjects with callbacks on `connection`, publishes `perSubject` messages to each
    /// and returns how many distinct threads ran the callbacks, after checking every message arrived in order.
    func callbackThreads(_ connection: NATSConnection, prefix: String, count: Int, perSubject: Int) async throws -> Int {
        let seen = Mutex<(threads: Set<UInt>, next: [Int], outOfOrder: Int)>(([], Array(repeating: 0, count: count), 0))
        var subscriptions: [NATSCallbackSubscription] = []
        for index in 0..<count {
            subscriptions.append(
                try connection.subscribe("\(prefix).\(index)") { message in
                    let number = Int(String(decoding: message.payload, as: UTF8.self)) ?? -1
                    seen.withLock { seen in
                        seen.threads.insert(UInt(pthread_self()))
                        if number != seen.next[index] { seen.outOfOrder += 1 }
                        seen.next[index] = number + 1
                    }
                }
            )
        }
        try await connection.flush()
        for round in 0..<perSubject {
            for index in 0..<count { try connection.publish("\(prefix).\(index)", payload: Array("\(round)".utf8)) }
        }
        try await connection.flush()
        try await eventually("every message delivered") { seen.withLock { $0.next.allSatisfy { $0 == perSubject } } }
        #expect(seen.withLock { $0.outOfOrder } == 0, "each subscription's messages arrive in order")
        for subscription in subscriptions { subscription.unsubscribe() }
        return seen.withLock { $0.threads.count }
    }

    @Test func subscriptionsShareTheDeliveryPool() async throws {
        let server = try NATSServerProcess()
        var pooled = NATSConfiguration(url: server.url, name: "pooled")
        pooled.deliveryThreads = 2
        let connection = try await NATSConnection.connect(pooled, retryUntilConnected: false)
        let threads = try await callbackThreads(connection, prefix: "pooled", count: 40, perSubject: 20)
        // The pool is process-wide and only grows; other tests may have asked for a few more threads.
        #expect(threads <= 8, "40 subscriptions ran on \(threads) threads")

        // Without the pool every subscription has a thread of its own: the case the pool exists for.
        let own = try await NATSConnection.connect(NATSConfiguration(url: server.url, name: "own"), retryUntilConnected: false)
        #expect(try await callbackThreads(own, prefix: "own", count: 40, perSubject: 5) == 40)
        await connection.drain()
        await own.drain()
    }
}
