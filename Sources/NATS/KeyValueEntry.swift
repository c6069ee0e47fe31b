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
