/// KV bucket settings. `ttl` applies to every key of the bucket (JetStream 2.9 has no per-key TTL).
public struct KeyValueConfiguration: Sendable {
    public var bucket: String
    public var description: String?
    public var history = 1
    public var ttl: Duration?
    public var maxValueSize: Int?
    public var memoryStorage = false
    public var replicas = 1

    public init(bucket: String, history: Int = 1, ttl: Duration? = nil) {
        self.bucket = bucket
        self.history = history
        self.ttl = ttl
    }
}

public struct KeyValueEntry: Sendable, Equatable {
    public enum Operation: String, Sendable { case put, delete, purge }
    public var key: String
    public var value: [UInt8]
    public var revision: UInt64
    public var createdNanoseconds: Int64
    public var operation: Operation

    public init(key: String, value: [UInt8], revision: UInt64, createdNanoseconds: Int64, operation: Operation) {
        self.key = key
        self.value = value
        self.revision = revision
        self.createdNanoseconds = createdNanoseconds
        self.operation = operation
    }
}

/// A KV bucket. Every operation is a JetStream round trip made by libnats' KV API on the blocking executor.
public final class KeyValue: Sendable {
    let handle: KeyValueHandle
    let executor: BlockingExecutor
    public let bucket: String

    init(handle: KeyValueHandle, executor: BlockingExecutor, bucket: String) {
        self.handle = handle
        self.executor = executor
        self.bucket = bucket
    }

    public func get(_ key: String) async throws(NATSError) -> KeyValueEntry? {
        let handle = self.handle
        return try await executor.run { () throws(NATSError) in try handle.get(key) }
    }

    /// The value when the key holds one (deleted or purged keys read as nil).
    public func value(_ key: String) async throws(NATSError) -> KeyValueEntry? {
        guard let entry = try await get(key), entry.operation == .put else { return nil }
        return entry
    }

    @discardableResult
    public func put(_ key: String, _ value: [UInt8]) async throws(NATSError) -> UInt64 {
        let handle = self.handle
        return try await executor.run { () throws(NATSError) in try handle.put(key, value) }
    }

    /// Stores only if the key holds no value; throws `.wrongLastSequence` when it does.
    @discardableResult
    public func create(_ key: String, _ value: [UInt8]) async throws(NATSError) -> UInt64 {
        let handle = self.handle
        return try await executor.run { () throws(NATSError) in try handle.create(key, value) }
    }

    /// Compare-and-set on the revision; throws `.wrongLastSequence` when another writer got there first.
    @discardableResult
    public func update(_ key: String, _ value: [UInt8], revision: UInt64) async throws(NATSError) -> UInt64 {
        let handle = self.handle
        return try await executor.run { () throws(NATSError) in try handle.update(key, value, revision: revision) }
    }

    /// `create` that reports an existing value as nil instead of an error.
    public func createIfAbsent(_ key: String, _ value: [UInt8]) async throws(NATSError) -> UInt64? {
        do {
            return try await create(key, value)
        } catch {
            if error.kind == .wrongLastSequence { return nil }
            throw error
        }
    }

    /// `update` that reports a stale revision as nil instead of an error.
    public func updateIfRevision(_ key: String, _ value: [UInt8], revision: UInt64) async throws(NATSError) -> UInt64? {
        do {
            return try await update(key, value, revision: revision)
        } catch {
            if error.kind == .wrongLastSequence { return nil }
            throw error
        }
    }

    public func delete(_ key: String) async throws(NATSError) {
        let handle = self.handle
        try await executor.run { () throws(NATSError) in try handle.delete(key) }
    }

    public func purge(_ key: String) async throws(NATSError) {
        let handle = self.handle
        try await executor.run { () throws(NATSError) in try handle.purge(key) }
    }

    public func keys() async throws(NATSError) -> [String] {
        let handle = self.handle
        return try await executor.run { () throws(NATSError) in try handle.keys() }
    }

    /// Current values of the keys matching `pattern` (e.g. `room.<id>.*`), read through a watcher, so the
    /// cost follows the matching keys rather than the bucket size.
    public func values(matching pattern: String) async throws(NATSError) -> [KeyValueEntry] {
        let watcher = try await watch(pattern, ignoreDeletes: true)
        defer { watcher.stop() }
        var entries: [KeyValueEntry] = []
        var iterator = watcher.makeAsyncIterator()
        while let event = try await iterator.nextEvent() {
            switch event {
            case .entry(let entry): entries.append(entry)
            case .initialValuesDone: return entries
            }
        }
        return entries
    }

    /// Watches `pattern`: current values first, then `initialValuesDone`, then every change.
    public func watch(_ pattern: String = ">", ignoreDeletes: Bool = false) async throws(NATSError) -> KeyValueWatch {
        let handle = self.handle
        let watcher = try await executor.run { () throws(NATSError) in try handle.watch(pattern, updatesOnly: false, ignoreDeletes: ignoreDeletes) }
        return KeyValueWatch(handle: watcher, executor: executor)
    }
}

/// The events of a KV watch as an `AsyncSequence`. Each `next` polls libnats on the blocking executor.
public final class KeyValueWatch: AsyncSequence, Sendable {
    public enum Event: Sendable, Equatable {
        case entry(KeyValueEntry)
        case initialValuesDone
    }
    public typealias Element = Event

    let handle: KeyValueWatcherHandle
    let executor: BlockingExecutor

    init(handle: KeyValueWatcherHandle, executor: BlockingExecutor) {
        self.handle = handle
        self.executor = executor
    }

    public func stop() { handle.stop() }

    public struct AsyncIterator: AsyncIteratorProtocol {
        let watch: KeyValueWatch

        /// Waits for the next event; nil when stopped or the task is cancelled.
        public mutating func nextEvent() async throws(NATSError) -> Event? {
            let handle = watch.handle
            while !Task.isCancelled {
                let next = try await watch.executor.run { () throws(NATSError) -> KeyValueWatcherHandle.Next? in
                    do throws(NATSError) {
                        return try handle.next(timeoutMilliseconds: 250)
                    } catch where error.kind == .illegalState || error.kind == .connectionClosed {
                        return nil
                    }
                }
                switch next {
                case .none: return nil
                case .timeout: continue
                case .initialValuesDone: return .initialValuesDone
                case .entry(let entry): return .entry(entry)
                }
            }
            return nil
        }

        public mutating func next() async throws -> Event? { try await nextEvent() }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(watch: self) }
}

extension NATSConnection {
    /// Creates the bucket if missing (binding to it if it exists) and returns it.
    public func keyValue(_ configuration: KeyValueConfiguration) async throws(NATSError) -> KeyValue {
        let context = try jetStreamContextHandle()
        let handle = try await executor.run { () throws(NATSError) in try KeyValueHandle.createOrBind(context: context, configuration: configuration) }
        return KeyValue(handle: handle, executor: executor, bucket: configuration.bucket)
    }
}
