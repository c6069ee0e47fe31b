extension KeyValue {
    /// One page of the keys matching `pattern`, in write order: up to `limit` entries written after
    /// the stream sequence `after` (0: from the first), and whether more follow. An ephemeral
    /// consumer starting at `after + 1` reads only the page's own messages, so paging through a
    /// large bucket costs each page its entries, not the whole bucket. Meant for keys written once
    /// (a key written again shows again at its newer place); delete and purge markers are left out
    /// but count towards `limit`.
    public func page(matching pattern: String, after: UInt64, limit: Int) async throws(NATSError) -> (entries: [KeyValueEntry], more: Bool)
    {
        guard limit > 0 else { throw NATSError(.invalidArgument, message: "page limit must be positive") }
        let config = ConsumerConfiguration.oneRead("key page", subject: subjectPrefix + pattern, from: .byStartSequence(after + 1))
        let info = try await jetStream.createEphemeralConsumer(stream: stream, config)
        defer { jetStream.deleteConsumerWithoutWaiting(stream: stream, consumer: info.name) }
        guard info.numPending > 0 else { return ([], false) }
        let consumer = try jetStream.pullConsumer(stream: stream, consumer: info.name)
        var entries: [KeyValueEntry] = []
        var read = 0
        var consumerSequence: UInt64 = 0
        while true {
            let batch = try await consumer.fetch(batch: min(limit - read, 4096), expires: .seconds(5), noWait: true)
            for message in batch {
                guard message.consumerSequence == consumerSequence + 1 else {
                    throw NATSError(.jetStream, message: "KV page of \(bucket) \(pattern): messages lost in transit")
                }
                consumerSequence = message.consumerSequence
                read += 1
                if let entry = entry(from: message) { entries.append(entry) }
            }
            // Each message says how many more the consumer holds after it.
            guard let last = batch.last else {
                // Nothing came although the consumer held more: a short page would look like the last.
                if read < info.numPending { throw NATSError(.timeout, message: "KV page of \(bucket) \(pattern) not delivered") }
                return (entries, false)
            }
            if last.pending == 0 { return (entries, false) }
            if read >= limit { return (entries, true) }
        }
    }
}
