/// NATS message headers. Keys are case-sensitive as on the wire; most users set one value per key.
public struct NATSHeaders: Sendable, Equatable, ExpressibleByDictionaryLiteral {
    public private(set) var fields: [String: [String]] = [:]

    public init() {}
    public init(dictionaryLiteral elements: (String, String)...) {
        for (key, value) in elements { fields[key, default: []].append(value) }
    }

    public var isEmpty: Bool { fields.isEmpty }

    public subscript(_ key: String) -> String? {
        get { fields[key]?.first }
        set { fields[key] = newValue.map { [$0] } }
    }

    public mutating func add(_ key: String, _ value: String) { fields[key, default: []].append(value) }
    public func values(_ key: String) -> [String] { fields[key] ?? [] }

    /// The status line of a server-generated message (`NATS/1.0 503`), which libnats exposes as `Status`.
    public var status: Int? { self["Status"].flatMap { Int($0) } }
    public var statusDescription: String? { self["Description"] }
}

/// A message as received: copied out of libnats, so it owns its bytes and is freely Sendable.
public struct NATSMessage: Sendable {
    public var subject: String
    public var reply: String?
    public var headers: NATSHeaders
    public var payload: [UInt8]

    public init(subject: String, reply: String? = nil, headers: NATSHeaders = NATSHeaders(), payload: [UInt8] = []) {
        self.subject = subject
        self.reply = reply
        self.headers = headers
        self.payload = payload
    }

    /// A server-sent status message with no payload (no responders 503, JetStream 404/408/409).
    public var isStatusOnly: Bool { payload.isEmpty && headers.status != nil }
    public var isNoResponders: Bool { payload.isEmpty && headers.status == 503 }
}
