/// Creating a KV bucket: its stream, configured as the NATS KV clients configure it (libnats'
/// `js_CreateKeyValue`), created through the JetStream API like any other stream.
extension KeyValueConfiguration {
    /// The most revisions a key may keep (the NATS KV limit).
    public static let maxHistory = 64

    /// Bucket names are one subject token: `[a-zA-Z0-9_-]+`.
    public static func isValidBucketName(_ name: String) -> Bool {
        !name.isEmpty
            && name.utf8.allSatisfy { byte in
                switch byte {
                case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                    UInt8(ascii: "-"), UInt8(ascii: "_"):
                    true
                default:
                    false
                }
            }
    }

    /// The bucket's stream `KV_<bucket>` on `$KV.<bucket>.>`.
    func streamConfiguration() throws(NATSError) -> StreamConfiguration {
        guard Self.isValidBucketName(bucket) else { throw .invalid("invalid KV bucket name \(bucket.prefix(80))") }
        guard (1...Self.maxHistory).contains(history) else {
            throw .invalid("KV bucket \(bucket): history \(history) outside 1...\(Self.maxHistory)")
        }
        var stream = StreamConfiguration(name: "KV_" + bucket, subjects: ["$KV.\(bucket).>"])
        stream.description = description
        stream.maxMessagesPerSubject = Int64(history)
        stream.maxAge = (ttl?.inMilliseconds ?? 0) * 1_000_000
        stream.maxMessageSize = Int32(clamping: maxValueSize ?? -1)
        stream.maxBytes = maxBytes ?? -1
        stream.storage = memoryStorage ? "memory" : "file"
        stream.replicas = replicas
        stream.allowRollup = true
        stream.denyDelete = true
        stream.allowDirect = true
        stream.discard = "new"
        // The server's default: two minutes, or the max age when that is shorter.
        let twoMinutes: Int64 = 120_000_000_000
        stream.duplicateWindow = stream.maxAge > 0 ? min(stream.maxAge, twoMinutes) : twoMinutes
        return stream
    }

    /// The settings in which an existing bucket's stream differs from this configuration.
    func differences(from existing: StreamConfiguration) -> [String] {
        guard let wanted = try? streamConfiguration() else { return [] }
        var differences: [String] = []
        func compare<T: Equatable>(_ name: String, _ have: T, _ want: T) {
            if have != want { differences.append("\(name) \(have) (configured \(want))") }
        }
        compare("history", existing.maxMessagesPerSubject, wanted.maxMessagesPerSubject)
        compare("ttl_ns", existing.maxAge, wanted.maxAge)
        compare("max_value_size", existing.maxMessageSize, wanted.maxMessageSize)
        compare("max_bytes", existing.maxBytes, wanted.maxBytes)
        compare("storage", existing.storage, wanted.storage)
        compare("replicas", existing.replicas, wanted.replicas)
        return differences
    }
}

extension NATSConnection {
    /// Creates the bucket if missing and returns it.
    ///
    /// A bucket that exists with other settings keeps them (replicas configured differently must
    /// not overwrite each other's bucket on every start), and the difference is logged as a warning.
    /// Any other failure of the create — a refusal, a timeout — throws: it says nothing about whether
    /// the bucket exists.
    public func keyValue(_ configuration: KeyValueConfiguration) async throws(NATSError) -> KeyValue {
        let (bucket, differences) = try await openBucket(configuration)
        if !differences.isEmpty {
            logger.warning(
                "KV bucket exists with other settings; keeping them",
                metadata: [
                    "bucket": "\(configuration.bucket)", "differences": "\(differences.joined(separator: ", "))",
                ]
            )
        }
        return bucket
    }

    /// The bucket, and how the existing bucket's settings differ from `configuration` (none when this
    /// call created it).
    func openBucket(_ configuration: KeyValueConfiguration) async throws(NATSError) -> (KeyValue, differences: [String]) {
        let stream = try configuration.streamConfiguration()
        let bucket = KeyValue(jetStream: jetStream, bucket: configuration.bucket)
        do {
            _ = try await jetStream.api("STREAM.CREATE.\(stream.name)", body: stream, as: StreamInfo.self)
            return (bucket, [])
        } catch  where [JetStreamErrorCode.streamNameInUse, JetStreamErrorCode.subjectsOverlap].contains(error.jetStreamCode) {
            // It exists with another configuration (or another process is creating it right now:
            // "subjects overlap"). An overlap with a stream of another name is the create's error.
            let createError = error
            do {
                let existing = try await jetStream.streamInfo(stream.name)
                return (bucket, configuration.differences(from: existing.config))
            } catch  where error.jetStreamCode == JetStreamErrorCode.streamNotFound {
                throw createError
            }
        }
    }
}
