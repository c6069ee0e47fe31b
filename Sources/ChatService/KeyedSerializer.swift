import Synchronization

/// Runs async work one at a time per key, in arrival order. Sends to one room go through it, so the
/// replicas race only each other for a room's next `seq`, not their own concurrent requests (which
/// would otherwise all retry against each other on every message).
final class KeyedSerializer<Key: Hashable & Sendable>: Sendable {
    private struct Queue {
        var busy = false
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    private let queues = Mutex<[Key: Queue]>([:])

    func run<T>(_ key: Key, _ body: () async throws -> T) async throws -> T {
        await acquire(key)
        defer { release(key) }
        return try await body()
    }

    private func acquire(_ key: Key) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ready: Bool = queues.withLock { queues in
                if queues[key, default: Queue()].busy {
                    queues[key]!.waiters.append(continuation)
                    return false
                }
                queues[key, default: Queue()].busy = true
                return true
            }
            if ready { continuation.resume() }
        }
    }

    private func release(_ key: Key) {
        let next: CheckedContinuation<Void, Never>? = queues.withLock { queues in
            guard var queue = queues[key] else { return nil }
            if queue.waiters.isEmpty {
                queues[key] = nil
                return nil
            }
            let next = queue.waiters.removeFirst()
            queues[key] = queue
            return next
        }
        next?.resume()
    }
}
