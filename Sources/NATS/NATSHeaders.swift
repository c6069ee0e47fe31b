/// NATS message headers. Keys are case-sensitive as on the wire; most users set one value per key.
/// Kept as a list in arrival order: a message carries a handful, and a list costs one allocation where a
/// dictionary of arrays cost one per key plus hashing (growing those dictionaries was ~5 % of the
/// broadcaster's samples under send load).
public struct NATSHeaders: Sendable, Equatable, ExpressibleByDictionaryLiteral {
    public private(set) var entries: [(key: String, value: String)] = []

    public init() {}
    public init(dictionaryLiteral elements: (String, String)...) {
        entries = elements.map { (key: $0.0, value: $0.1) }
    }

    init(capacity: Int) { entries.reserveCapacity(capacity) }

    public var isEmpty: Bool { entries.isEmpty }

    /// The first value of the key; setting replaces every value of the key (nil removes it).
    public subscript(_ key: String) -> String? {
        get { entries.first { $0.key == key }?.value }
        set {
            entries.removeAll { $0.key == key }
            if let newValue { entries.append((key, newValue)) }
        }
    }

    public mutating func add(_ key: String, _ value: String) { entries.append((key, value)) }
    public func values(_ key: String) -> [String] { entries.filter { $0.key == key }.map(\.value) }

    /// Equal when every key has the same values in the same order (the order across keys does not count).
    public static func == (lhs: NATSHeaders, rhs: NATSHeaders) -> Bool {
        func grouped(_ headers: NATSHeaders) -> [String: [String]] {
            headers.entries.reduce(into: [:]) { $0[$1.key, default: []].append($1.value) }
        }
        return lhs.entries.count == rhs.entries.count && grouped(lhs) == grouped(rhs)
    }

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
