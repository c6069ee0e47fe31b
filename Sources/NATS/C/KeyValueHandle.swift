import CNATS
#if canImport(Glibc)
import Glibc
#endif

/// Owns a `jsCtx*` (JetStream context) used for the KV API.
///
/// `@unchecked Sendable`: a jsCtx is immutable after creation apart from its own internally locked state.
final class JetStreamContextHandle: @unchecked Sendable {
    let pointer: OpaquePointer
    let connection: ConnectionHandle  // keeps the connection alive as long as the context

    init(connection: ConnectionHandle, timeoutMilliseconds: Int64) throws(NATSError) {
        var options = jsOptions()
        try LibNATS.check(jsOptions_Init(&options), "init JetStream options")
        options.Wait = timeoutMilliseconds
        var context: OpaquePointer? = nil
        try LibNATS.check(natsConnection_JetStream(&context, connection.pointer, &options), "create JetStream context")
        guard let context else { throw NATSError(.other, message: "no JetStream context") }
        self.pointer = context
        self.connection = connection
    }

    deinit { jsCtx_Destroy(pointer) }
}

/// Owns a `kvStore*`. All methods block on a server round trip: call them on the blocking executor.
///
/// `@unchecked Sendable`: kvStore functions are safe to call concurrently (each is a JetStream request).
final class KeyValueHandle: @unchecked Sendable {
    let pointer: OpaquePointer
    let context: JetStreamContextHandle

    private init(pointer: OpaquePointer, context: JetStreamContextHandle) {
        self.pointer = pointer
        self.context = context
    }

    deinit { kvStore_Destroy(pointer) }

    static func createOrBind(context: JetStreamContextHandle, configuration: KeyValueConfiguration) throws(NATSError) -> KeyValueHandle {
        var config = kvConfig()
        try LibNATS.check(kvConfig_Init(&config), "init KV config")
        var kv: OpaquePointer? = nil
        let status: natsStatus = configuration.bucket.withCString { bucket in
            (configuration.description ?? "").withCString { description in
                config.Bucket = bucket
                config.Description = description
                config.History = UInt8(clamping: configuration.history)
                config.TTL = (configuration.ttl?.inMilliseconds ?? 0) * 1_000_000  // nanoseconds
                config.MaxValueSize = Int32(clamping: configuration.maxValueSize ?? -1)
                config.StorageType = configuration.memoryStorage ? js_MemoryStorage : js_FileStorage
                config.Replicas = Int32(configuration.replicas)
                return js_CreateKeyValue(&kv, context.pointer, &config)
            }
        }
        if status != NATS_OK {
            // An existing bucket with a different config: bind to it instead of failing start-up.
            var existing: OpaquePointer? = nil
            let bindStatus = js_KeyValue(&existing, context.pointer, configuration.bucket)
            guard bindStatus == NATS_OK, let existing else { throw LibNATS.error(status, "create KV bucket \(configuration.bucket)") }
            return KeyValueHandle(pointer: existing, context: context)
        }
        guard let kv else { throw NATSError(.other, message: "no KV store") }
        return KeyValueHandle(pointer: kv, context: context)
    }
}
