extension KeyValue {
    /// Hands every put to the bucket to `deliver`, in stream order — the stored puts first, then new
    /// ones as they are stored — as keys, revisions and store times (no values: the server sends
    /// headers only). Returns when the task is cancelled; throws when a consumer cannot be created.
    ///
    /// An ephemeral pull consumer (no acks, memory storage) read through the async request path, so no
    /// thread waits on it.
    /// Like an ordered consumer it never skips a put: a gap in the consumer sequence (a message lost
    /// with a connection), a reconnect, or a consumer that stopped answering (a restarted server, an
    /// inactivity cleanup) starts a new consumer right after the last revision delivered.
    /// (`values(matching:)` reads the same way once; a follower lives as long as the process.)
    /// `after`: start after this revision (what an earlier follower delivered; 0 for everything).
    ///
    /// `linger`: zero keeps a pull request open and gets each put the moment it is stored — a wake-up
    /// of this process (libnats' reader, the subscription's thread, a task) per put. Above zero, a
    /// put that ends a quiet spell still comes at once (a pull for one message), then the follower
    /// waits `linger` and takes everything stored meanwhile with one no-wait pull, and again, until
    /// a pull finds nothing: under a steady stream of puts it wakes once per `linger`, not per put.
    public func followPuts(after: UInt64 = 0, linger: Duration = .zero, _ deliver: ([KeyValueEntry]) -> Void) async throws(NATSError) {
        let connection = jetStream.connection
        var lastRevision = after
        let batch = 1024
        let expires: Duration = .seconds(5)
        var backoff: Duration = .zero
        while !Task.isCancelled {
            // A consumer that keeps failing at once (a refusal, no interest yet on a cluster) is not
            // re-created in a tight loop: 100 ms, doubling to 5 s, reset by any delivered message.
            if backoff > .zero { try? await Task.sleep(for: backoff) }
            backoff = min(max(backoff * 2, .milliseconds(100)), .seconds(5))
            var config = ConsumerConfiguration(durableName: nil)
            config.description = "key follower"
            config.deliverPolicy = lastRevision == 0 ? .all : .byStartSequence(lastRevision + 1)
            config.filterSubject = subjectPrefix + ">"
            config.ackPolicy = .none
            config.headersOnly = true
            config.memoryStorage = true
            config.inactiveThreshold = .seconds(60)  // cleanup when this follower is gone
            let reconnects = connection.reconnects
            let info = try await jetStream.createEphemeralConsumer(stream: stream, config)
            defer { jetStream.deleteConsumerWithoutWaiting(stream: stream, consumer: info.name) }
            let consumer = try jetStream.pullConsumer(stream: stream, consumer: info.name)
            var consumerSequence: UInt64 = 0
            var requested = 0
            var deadline = ContinuousClock.now
            // Lingering: puts came lately, so the next pull waits `linger` and takes what is there.
            var busy = false
            var deliveredInRequest = 0
            // A lingering pull's answer arrives over several receives; it is delivered as one, when the
            // pull ends (or before the loop leaves: `lastRevision` already counts these entries).
            var pending: [KeyValueEntry] = []
            defer { if !pending.isEmpty { deliver(pending) } }
            following: while !Task.isCancelled {
                if connection.reconnects != reconnects { break following }
                if requested == 0 {
                    if busy {
                        // A full batch means more is waiting (a replay, a burst): no pause before it.
                        if deliveredInRequest < batch { try? await Task.sleep(for: linger) }
                        if Task.isCancelled { return }
                        if connection.reconnects != reconnects { break following }
                        try consumer.request(batch: batch, noWait: true)
                        requested = batch
                        deadline = .now + .seconds(5)
                    } else {
                        // Lingering or not, a quiet follower hears of the next put at once.
                        requested = linger > .zero ? 1 : batch
                        try consumer.request(batch: requested, expires: expires)
                        deadline = .now + expires + .seconds(1)
                    }
                    deliveredInRequest = 0
                }
                let received: PullConsumer.Received
                do {
                    // At least once a second the loop looks at the reconnect count and the deadline; the
                    // wait's end is an entry in the connection's deadline heap, not a timer task.
                    received = try await consumer.receive(until: min(deadline, .now + .seconds(1)))
                } catch {
                    if Task.isCancelled { return }
                    if error.kind == .jetStream { break following }  // the consumer was deleted or lost its leader
                    throw error
                }
                var gap = false
                for message in received.messages {
                    guard message.consumerSequence == consumerSequence + 1 else {
                        gap = true
                        break
                    }
                    consumerSequence = message.consumerSequence
                    lastRevision = message.streamSequence
                    requested -= 1
                    deliveredInRequest += 1
                    if let entry = entry(from: message) { pending.append(entry) }
                }
                let pullOpen = busy && requested > 0 && received.endStatus == nil && !gap
                if linger > .zero, !received.messages.isEmpty { busy = true }
                // What came before a gap is delivered: the next consumer starts after it.
                if !pending.isEmpty, !pullOpen {
                    deliver(pending)
                    pending = []
                }
                if !received.messages.isEmpty { backoff = .zero }
                if gap { break following }
                switch received.endStatus {
                case nil:
                    // Nothing at all by the deadline, not even the expiry status: the consumer is gone.
                    if received.messages.isEmpty, ContinuousClock.now >= deadline { break following }
                case 404?, 408?:
                    requested = 0  // expired or nothing (more) pending: ask again
                    if deliveredInRequest == 0 { busy = false }  // quiet: back to an open pull
                default:
                    break following  // no responders (no such consumer) or a refusal
                }
            }
        }
    }
}
