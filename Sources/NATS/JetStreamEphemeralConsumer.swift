extension JetStream {
    /// Creates a consumer without a durable name; the server names it (`ConsumerInfo.name`).
    func createEphemeralConsumer(stream: String, _ config: ConsumerConfiguration) async throws(NATSError) -> ConsumerInfo {
        struct Request: Encodable {
            var stream_name: String
            var config: ConsumerConfiguration
        }
        return try await api("CONSUMER.CREATE.\(stream)", body: Request(stream_name: stream, config: config), as: ConsumerInfo.self)
    }

    /// Sends the delete of a consumer without waiting for the answer, which arrives on a reply subject
    /// of the connection's inbox that no request waits on and is dropped. Nothing outlives the call;
    /// if the request is lost, the consumer's inactive threshold removes it.
    func deleteConsumerWithoutWaiting(stream: String, consumer: String) {
        try? connection.publish("$JS.API.CONSUMER.DELETE.\(stream).\(consumer)", reply: connection.mux.discardedReplySubject)
    }
}
