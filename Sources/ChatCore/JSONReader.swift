/// A strict RFC 8259 JSON parser for the per-message documents (see `JSONWriter`): Foundation's
/// `JSONDecoder` cost ~15 % of the gateway's CPU per send (its Codable containers, not the parsing).
/// Documents parse into `JSONValue`; hot types read their fields from it (`JSONReadable`).
public enum JSONValue: Equatable, Sendable {
    case null
    case bool(Bool)
    /// The number's text, validated against the JSON grammar; converted on access.
    case number(String)
    case string(String)
    case array([JSONValue])
    case object(JSONObject)
}

/// An object's fields in document order. Lookups scan them (a message has about ten): building a
/// `Dictionary` per object hashed every key (parsing fell from 8.3 to 6.1 % of the gateway's samples
/// under send load when it went). `JSONReader` refuses a repeated key: parsers disagree on which
/// value wins, so a document could mean one thing to a check and another to its user.
public struct JSONObject: Equatable, Sendable {
    public private(set) var fields: [(key: String, value: JSONValue)] = []

    public init() {}

    mutating func append(_ key: String, _ value: JSONValue) { fields.append((key, value)) }

    public subscript(key: String) -> JSONValue? {
        var index = fields.endIndex
        while index > fields.startIndex {
            index -= 1
            if fields[index].key == key { return fields[index].value }
        }
        return nil
    }

    /// The fields as a dictionary (the last value of a repeated key).
    public var dictionary: [String: JSONValue] {
        Dictionary(fields.map { ($0.key, $0.value) }, uniquingKeysWith: { _, last in last })
    }

    public static func == (lhs: JSONObject, rhs: JSONObject) -> Bool { lhs.dictionary == rhs.dictionary }
}

public struct JSONReader {
    public static let maxDepth = 64

    private let bytes: [UInt8]
    private var index = 0

    private init(_ bytes: [UInt8]) { self.bytes = bytes }

    /// The document's value; `ChatError(.invalidRequest)` for anything that is not exactly one JSON value.
    /// A leading UTF-8 byte order mark is skipped (RFC 8259 §8.1 lets a parser ignore it; some editors
    /// and Windows tools write one).
    public static func parse(_ bytes: [UInt8]) throws(ChatError) -> JSONValue {
        var reader = JSONReader(bytes)
        if bytes.count >= 3, bytes[0] == 0xEF, bytes[1] == 0xBB, bytes[2] == 0xBF { reader.index = 3 }
        reader.skipWhitespace()
        let value = try reader.value(depth: 0)
        reader.skipWhitespace()
        guard reader.index == bytes.count else { throw reader.failure("unexpected data after the JSON value") }
        return value
    }

    private func failure(_ what: String) -> ChatError {
        ChatError(.invalidRequest, "invalid JSON: \(what) at byte \(index)")
    }

    private mutating func skipWhitespace() {
        while index < bytes.count, bytes[index] == 0x20 || bytes[index] == 0x0A || bytes[index] == 0x0D || bytes[index] == 0x09 {
            index += 1
        }
    }

    private mutating func value(depth: Int) throws(ChatError) -> JSONValue {
        guard depth < Self.maxDepth else { throw failure("nesting deeper than \(Self.maxDepth)") }
        guard index < bytes.count else { throw failure("unexpected end") }
        switch bytes[index] {
        case UInt8(ascii: "{"): return try object(depth: depth)
        case UInt8(ascii: "["): return try array(depth: depth)
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"):
            try literal("true")
            return .bool(true)
        case UInt8(ascii: "f"):
            try literal("false")
            return .bool(false)
        case UInt8(ascii: "n"):
            try literal("null")
            return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try number())
        default: throw failure("unexpected character")
        }
    }

    private mutating func literal(_ word: StaticString) throws(ChatError) {
        let count = word.utf8CodeUnitCount
        guard index + count <= bytes.count else { throw failure("unexpected end") }
        let matches = word.withUTF8Buffer { expected in
            (0..<count).allSatisfy { bytes[index + $0] == expected[$0] }
        }
        guard matches else { throw failure("unexpected character") }
        index += count
    }

    private mutating func object(depth: Int) throws(ChatError) -> JSONValue {
        index += 1
        var fields = JSONObject()
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
            index += 1
            return .object(fields)
        }
        // Small objects (every message) scan their fields for a repeat; big ones switch to a set, so a
        // hostile object with thousands of keys stays linear.
        var keys: Set<String>?
        while true {
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { throw failure("expected a field name") }
            let start = index
            let key = try string()
            if keys == nil, fields.fields.count >= 16 { keys = Set(fields.fields.map(\.key)) }
            let repeated = keys != nil ? !keys!.insert(key).inserted : fields.fields.contains { $0.key == key }
            if repeated {
                index = start
                throw failure("duplicate field '\(key.prefix(40))'")
            }
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { throw failure("expected ':'") }
            index += 1
            skipWhitespace()
            fields.append(key, try value(depth: depth + 1))
            skipWhitespace()
            guard index < bytes.count else { throw failure("unexpected end") }
            if bytes[index] == UInt8(ascii: ",") {
                index += 1
                continue
            }
            guard bytes[index] == UInt8(ascii: "}") else { throw failure("expected ',' or '}'") }
            index += 1
            return .object(fields)
        }
    }

    private mutating func array(depth: Int) throws(ChatError) -> JSONValue {
        index += 1
        var elements: [JSONValue] = []
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "]") {
            index += 1
            return .array(elements)
        }
        while true {
            skipWhitespace()
            elements.append(try value(depth: depth + 1))
            skipWhitespace()
            guard index < bytes.count else { throw failure("unexpected end") }
            if bytes[index] == UInt8(ascii: ",") {
                index += 1
                continue
            }
            guard bytes[index] == UInt8(ascii: "]") else { throw failure("expected ',' or ']'") }
            index += 1
            return .array(elements)
        }
    }

    private mutating func number() throws(ChatError) -> String {
        let start = index
        if bytes[index] == UInt8(ascii: "-") { index += 1 }
        func digits(_ reader: inout JSONReader) -> Int {
            let from = reader.index
            while reader.index < reader.bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(reader.bytes[reader.index]) {
                reader.index += 1
            }
            return reader.index - from
        }
        guard index < bytes.count else { throw failure("unexpected end") }
        if bytes[index] == UInt8(ascii: "0") {
            index += 1
        } else if digits(&self) == 0 {
            throw failure("invalid number")
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            index += 1
            guard digits(&self) > 0 else { throw failure("invalid number") }
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
            index += 1
            if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") { index += 1 }
            guard digits(&self) > 0 else { throw failure("invalid number") }
        }
        return String(decoding: bytes[start..<index], as: UTF8.self)
    }

    private mutating func hex4() throws(ChatError) -> UInt32 {
        guard index + 4 <= bytes.count else { throw failure("unexpected end") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[index]
            let digit: UInt32
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(byte - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(byte - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(byte - UInt8(ascii: "A") + 10)
            default: throw failure("invalid \\u escape")
            }
            value = value << 4 | digit
            index += 1
        }
        return value
    }

    private mutating func string() throws(ChatError) -> String {
        index += 1  // opening quote
        let start = index
        // Fast path: no escapes.
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") {
                let text = try Self.utf8(bytes[start..<index], at: start)
                index += 1
                return text
            }
            if byte == UInt8(ascii: "\\") { break }
            guard byte >= 0x20 else { throw failure("control character in a string") }
            index += 1
        }
        var scalars = Array(bytes[start..<index])
        while index < bytes.count {
            let byte = bytes[index]
            switch byte {
            case UInt8(ascii: "\""):
                index += 1
                return try Self.utf8(scalars[...], at: start)
            case UInt8(ascii: "\\"):
                index += 1
                guard index < bytes.count else { throw failure("unexpected end") }
                let escape = bytes[index]
                index += 1
                switch escape {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): scalars.append(escape)
                case UInt8(ascii: "b"): scalars.append(0x08)
                case UInt8(ascii: "f"): scalars.append(0x0C)
                case UInt8(ascii: "n"): scalars.append(0x0A)
                case UInt8(ascii: "r"): scalars.append(0x0D)
                case UInt8(ascii: "t"): scalars.append(0x09)
                case UInt8(ascii: "u"):
                    var code = try hex4()
                    if (0xD800...0xDBFF).contains(code) {
                        guard index + 2 <= bytes.count, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u") else {
                            throw failure("unpaired surrogate in \\u escape")
                        }
                        index += 2
                        let low = try hex4()
                        guard (0xDC00...0xDFFF).contains(low) else { throw failure("unpaired surrogate in \\u escape") }
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    } else if (0xDC00...0xDFFF).contains(code) {
                        throw failure("unpaired surrogate in \\u escape")
                    }
                    guard let scalar = Unicode.Scalar(code) else { throw failure("invalid \\u escape") }
                    scalars.append(contentsOf: UTF8.encode(scalar)!)
                default:
                    throw failure("invalid escape")
                }
            default:
                guard byte >= 0x20 else { throw failure("control character in a string") }
                scalars.append(byte)
                index += 1
            }
        }
        throw failure("unterminated string")
    }

    private static func utf8(_ slice: ArraySlice<UInt8>, at offset: Int) throws(ChatError) -> String {
        guard let text = String(validating: slice, as: UTF8.self) else {
            throw ChatError(.invalidRequest, "invalid JSON: invalid UTF-8 in a string at byte \(offset)")
        }
        return text
    }
}

/// Field access with the error messages `ChatJSON.describe` gives for Codable failures.
public struct JSONFields {
    let fields: JSONObject

    public init(_ value: JSONValue) throws(ChatError) {
        guard case .object(let fields) = value else { throw ChatError(.invalidRequest, "the message must be a JSON object") }
        self.fields = fields
    }

    public init(parsing bytes: [UInt8]) throws(ChatError) { try self.init(JSONReader.parse(bytes)) }

    public func optionalString(_ key: String) throws(ChatError) -> String? {
        switch fields[key] {
        case nil, .null?: return nil
        case .string(let text)?: return text
        default: throw ChatError(.invalidRequest, "field '\(key)' must be a string")
        }
    }

    public func string(_ key: String) throws(ChatError) -> String {
        switch fields[key] {
        case .string(let text)?: return text
        case nil: throw ChatError(.invalidRequest, "missing field '\(key)'")
        case .null?: throw ChatError(.invalidRequest, "field '\(key)' must be a string, not null")
        default: throw ChatError(.invalidRequest, "field '\(key)' must be a string")
        }
    }

    public func uint64(_ key: String) throws(ChatError) -> UInt64 {
        guard case .number(let text)? = fields[key] else {
            if fields[key] == nil { throw ChatError(.invalidRequest, "missing field '\(key)'") }
            throw ChatError(.invalidRequest, "field '\(key)' must be an integer")
        }
        guard let value = UInt64(text) else { throw ChatError(.invalidRequest, "field '\(key)' must be a non-negative integer") }
        return value
    }

    public func optionalBool(_ key: String) throws(ChatError) -> Bool? {
        switch fields[key] {
        case nil, .null?: return nil
        case .bool(let value)?: return value
        default: throw ChatError(.invalidRequest, "field '\(key)' must be a boolean")
        }
    }

    public func bool(_ key: String) throws(ChatError) -> Bool {
        guard case .bool(let value)? = fields[key] else {
            if fields[key] == nil { throw ChatError(.invalidRequest, "missing field '\(key)'") }
            throw ChatError(.invalidRequest, "field '\(key)' must be a boolean")
        }
        return value
    }

    public func validated<T: ValidatedString>(_ key: String, as type: T.Type) throws(ChatError) -> T {
        guard let value = T(try string(key)) else { throw ChatError(.invalidRequest, "field '\(key)' is invalid: invalid \(T.self)") }
        return value
    }

    public func value(_ key: String) -> JSONValue? { fields[key] }
}

/// Types read from `JSONValue` instead of `Decodable`; `ChatJSON.decode` uses it.
public protocol JSONReadable: Decodable {
    init(json: JSONValue) throws(ChatError)
}

extension ChatMessage: JSONReadable {
    public init(json: JSONValue) throws(ChatError) {
        let fields = try JSONFields(json)
        self.init(
            messageID: try fields.string("message_id"),
            roomID: try fields.validated("room_id", as: RoomID.self),
            userID: try fields.validated("user_id", as: UserID.self),
            username: try fields.string("username"),
            content: try fields.string("content"),
            timestamp: try fields.string("timestamp"),
            seq: try fields.uint64("seq"),
            clientMessageID: try fields.optionalString("client_msg_id")
        )
    }
}

extension ServiceAPI.SendResult: JSONReadable {
    public init(json: JSONValue) throws(ChatError) {
        let fields = try JSONFields(json)
        guard let message = fields.value("message") else { throw ChatError(.invalidRequest, "missing field 'message'") }
        self.init(message: try ChatMessage(json: message), duplicate: try fields.bool("duplicate"))
    }
}

extension ServiceAPI.Send: JSONReadable {
    public init(json: JSONValue) throws(ChatError) {
        let fields = try JSONFields(json)
        self.init(
            roomID: try fields.string("room_id"),
            userID: try fields.string("user_id"),
            username: try fields.string("username"),
            content: try fields.string("content"),
            clientMessageID: try fields.optionalString("client_msg_id"),
            ackOnly: try fields.optionalBool("ack_only")
        )
    }
}

extension ServiceAPI.SendAck: JSONReadable {
    public init(json: JSONValue) throws(ChatError) {
        let fields = try JSONFields(json)
        if fields.value("message") != nil {
            self.init(try ServiceAPI.SendResult(json: json))
            return
        }
        self.init(
            messageID: try fields.string("message_id"),
            roomID: try fields.validated("room_id", as: RoomID.self),
            seq: try fields.uint64("seq"),
            duplicate: try fields.bool("duplicate")
        )
    }
}

extension ServiceAPI.HistoryResult: JSONReadable {
    public init(json: JSONValue) throws(ChatError) {
        let fields = try JSONFields(json)
        guard case .array(let items)? = fields.value("messages") else {
            throw ChatError(.invalidRequest, "field 'messages' must be an array")
        }
        var messages: [ChatMessage] = []
        messages.reserveCapacity(items.count)
        for item in items { messages.append(try ChatMessage(json: item)) }
        self.init(
            roomID: try fields.validated("room_id", as: RoomID.self),
            messages: messages,
            hasMore: try fields.bool("has_more"),
            lastSeq: try fields.uint64("last_seq")
        )
    }
}
