extension JetStream {
    /// Creates the stream, or updates it when it exists with another configuration.
    ///
    /// Replicas starting together race to create it: the loser is told "name in use", or — while the
    /// winner's create is still in flight — "subjects overlap" (nats-server 2.9). Both mean: update.
    /// An overlap with a stream of another name still fails (its update answers "stream not found").
    @discardableResult
    public func createOrUpdateStream(_ configuration: StreamConfiguration) async throws(NATSError) -> StreamInfo {
        do {
            return try await api("STREAM.CREATE.\(configuration.name)", body: configuration, as: StreamInfo.self)
        } catch  where [JetStreamErrorCode.streamNameInUse, JetStreamErrorCode.subjectsOverlap].contains(error.jetStreamCode) {
            let createError = error
            do {
                return try await api("STREAM.UPDATE.\(configuration.name)", body: configuration, as: StreamInfo.self)
            } catch  where error.jetStreamCode == JetStreamErrorCode.streamNotFound {
                throw createError
            }
        }
    }

    public func streamInfo(_ name: String) async throws(NATSError) -> StreamInfo {
        try await api("STREAM.INFO.\(name)", body: Optional<String>.none, as: StreamInfo.self)
    }

    /// Messages per subject for the subjects matching `filter` (one STREAM.INFO request per page of
    /// the server's subject details): the stream's subject index answers, no consumer is created.
    public func subjectCounts(stream: String, filter: String) async throws(NATSError) -> [String: UInt64] {
        struct Request: Encodable {
            var subjects_filter: String
            var offset: Int
        }
        struct Response: Decodable {
            struct State: Decodable { var subjects: [String: UInt64]? }
            var state: State
            var total: Int?
        }
        var counts: [String: UInt64] = [:]
        while true {
            let page = try await api(
                "STREAM.INFO.\(stream)",
                body: Request(subjects_filter: filter, offset: counts.count),
                as: Response.self
            )
            let subjects = page.state.subjects ?? [:]
            counts.merge(subjects) { $1 }
            if subjects.isEmpty || counts.count >= (page.total ?? 0) { return counts }
        }
    }

    /// Removes every message of `subject` from the stream.
    public func purge(stream: String, subject: String) async throws(NATSError) {
        struct Request: Encodable { var filter: String }
        struct Success: Decodable { var success: Bool }
        _ = try await api("STREAM.PURGE.\(stream)", body: Request(filter: subject), as: Success.self)
    }

    public func deleteStream(_ name: String) async throws(NATSError) {
        struct Success: Decodable { var success: Bool }
        _ = try await api("STREAM.DELETE.\(name)", body: Optional<String>.none, as: Success.self)
    }

    /// Creates (or updates) an explicit durable consumer. It outlives every subscription bound to it.
    @discardableResult
    public func createOrUpdateConsumer(stream: String, _ configuration: ConsumerConfiguration) async throws(NATSError) -> ConsumerInfo {
        struct Request: Encodable {
            var stream_name: String
            var config: ConsumerConfiguration
        }
        guard let durable = configuration.durableName else { throw .invalid("a durable consumer needs a durable name") }
        return try await api(
            "CONSUMER.DURABLE.CREATE.\(stream).\(durable)",
            body: Request(stream_name: stream, config: configuration),
            as: ConsumerInfo.self
        )
    }

    public func consumerInfo(stream: String, consumer: String) async throws(NATSError) -> ConsumerInfo {
        try await api("CONSUMER.INFO.\(stream).\(consumer)", body: Optional<String>.none, as: ConsumerInfo.self)
    }

    /// The consumer's info, or nil when the server answers that the stream has no such consumer. Any
    /// other failure (a timeout, a missing stream, JetStream unreachable) says nothing about the
    /// consumer and throws.
    public func consumerInfoIfExists(stream: String, consumer: String) async throws(NATSError) -> ConsumerInfo? {
        do {
            return try await consumerInfo(stream: stream, consumer: consumer)
        } catch  where error.jetStreamCode == JetStreamErrorCode.consumerNotFound {
            return nil
        }
    }

    public func deleteConsumer(stream: String, consumer: String) async throws(NATSError) {
        struct Success: Decodable { var success: Bool }
        _ = try await api("CONSUMER.DELETE.\(stream).\(consumer)", body: Optional<String>.none, as: Success.self)
    }
}
