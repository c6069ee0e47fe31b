/// KV bucket settings. `ttl` applies to every key of the bucket (JetStream 2.9 has no per-key TTL).
public struct KeyValueConfiguration: Sendable {
    public var bucket: String
    public var description: String?
    public var history = 1
    public var ttl: Duration?
    public var maxValueSize: Int?
    /// The bucket's size limit in bytes (nil: none). KV buckets discard new writes at the limit: a put
    /// beyond it fails (JetStream error 10047, "maximum bytes exceeded").
    public var maxBytes: Int64?
    public var memoryStorage = false
    public var replicas = 1

    public init(bucket: String, history: Int = 1, ttl: Duration? = nil) {
        self.bucket = bucket
        self.history = history
        self.ttl = ttl
    }
}
