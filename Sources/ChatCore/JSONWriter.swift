/// A minimal JSON writer for the few documents on the per-message hot path (a stored message, the
/// `message` and `ack` frames, a send result). Foundation's `JSONEncoder` spent ~12 % of the
/// chat-service's CPU on them; this writes the same documents (keys in sorted order, as
/// `ChatJSON.encode` does) straight into a byte array.
public struct JSONWriter {
    public private(set) var bytes: [UInt8] = []
    private var needsComma = false

    public init(capacity: Int = 256) { bytes.reserveCapacity(capacity) }

    public mutating func beginObject() {
        separate()
        bytes.append(UInt8(ascii: "{"))
        needsComma = false
    }

    public mutating func endObject() {
        bytes.append(UInt8(ascii: "}"))
        needsComma = true
    }

    public mutating func key(_ name: StaticString) {
        separate()
        bytes.append(UInt8(ascii: "\""))
        name.withUTF8Buffer { bytes.append(contentsOf: $0) }
        bytes.append(UInt8(ascii: "\""))
        bytes.append(UInt8(ascii: ":"))
        needsComma = false
    }

    public mutating func string(_ value: String) {
        separate()
        bytes.append(UInt8(ascii: "\""))
        var value = value
        value.withUTF8 { utf8 in
            for byte in utf8 {
                switch byte {
                case UInt8(ascii: "\""):
                    bytes.append(UInt8(ascii: "\\"))
                    bytes.append(byte)
                case UInt8(ascii: "\\"):
                    bytes.append(UInt8(ascii: "\\"))
                    bytes.append(byte)
                case 0x0A:
                    bytes.append(UInt8(ascii: "\\"))
                    bytes.append(UInt8(ascii: "n"))
                case 0x0D:
                    bytes.append(UInt8(ascii: "\\"))
                    bytes.append(UInt8(ascii: "r"))
                case 0x09:
                    bytes.append(UInt8(ascii: "\\"))
                    bytes.append(UInt8(ascii: "t"))
                case 0x08:
                    bytes.append(UInt8(ascii: "\\"))
                    bytes.append(UInt8(ascii: "b"))
                case 0x0C:
                    bytes.append(UInt8(ascii: "\\"))
                    bytes.append(UInt8(ascii: "f"))
                case 0x00..<0x20:
                    bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0")])
                    bytes.append(Self.hexDigit(byte >> 4))
                    bytes.append(Self.hexDigit(byte & 0x0F))
                default: bytes.append(byte)
                }
            }
        }
        bytes.append(UInt8(ascii: "\""))
        needsComma = true
    }

    public mutating func number(_ value: UInt64) {
        separate()
        // Up to 20 digits, written from the end of a fixed buffer: no allocation per number.
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)
        withUnsafeMutableBytes(of: &digits) { buffer in
            var index = buffer.count
            var rest = value
            repeat {
                index -= 1
                buffer[index] = UInt8(ascii: "0") + UInt8(rest % 10)
                rest /= 10
            } while rest > 0
            bytes.append(contentsOf: buffer[index...])
        }
        needsComma = true
    }

    public mutating func bool(_ value: Bool) {
        separate()
        let word: StaticString = value ? "true" : "false"
        word.withUTF8Buffer { bytes.append(contentsOf: $0) }
        needsComma = true
    }

    private static func hexDigit(_ nibble: UInt8) -> UInt8 {
        nibble < 10 ? UInt8(ascii: "0") + nibble : UInt8(ascii: "a") + nibble - 10
    }

    public mutating func array(_ elements: [some JSONWritable]) {
        separate()
        bytes.append(UInt8(ascii: "["))
        needsComma = false
        for element in elements { element.write(to: &self) }
        bytes.append(UInt8(ascii: "]"))
        needsComma = true
    }

    private mutating func separate() {
        if needsComma { bytes.append(UInt8(ascii: ",")) }
    }
}

/// Types with a hand-written JSON form; `ChatJSON.encode` uses it instead of `Encodable`.
public protocol JSONWritable: Encodable {
    func write(to writer: inout JSONWriter)
}

extension ChatMessage: JSONWritable {
    public func write(to writer: inout JSONWriter) {
        writer.beginObject()
        writeFields(to: &writer, type: nil)
        writer.endObject()
    }

    /// The fields in sorted key order, with `type` among them when given (the `message` frame).
    func writeFields(to writer: inout JSONWriter, type: StaticString?) {
        if let clientMessageID {
            writer.key("client_msg_id")
            writer.string(clientMessageID)
        }
        writer.key("content")
        writer.string(content)
        writer.key("message_id")
        writer.string(messageID)
        writer.key("room_id")
        writer.string(roomID.rawValue)
        writer.key("seq")
        writer.number(seq)
        writer.key("timestamp")
        writer.string(timestamp)
        if let type {
            writer.key("type")
            writer.string(type.description)
        }
        writer.key("user_id")
        writer.string(userID.rawValue)
        writer.key("username")
        writer.string(username)
    }
}

extension ServiceAPI.SendResult: JSONWritable {
    public func write(to writer: inout JSONWriter) {
        writer.beginObject()
        writer.key("duplicate")
        writer.bool(duplicate)
        writer.key("message")
        message.write(to: &writer)
        writer.endObject()
    }
}

extension ServiceAPI.Send: JSONWritable {
    public func write(to writer: inout JSONWriter) {
        writer.beginObject()
        if let ackOnly {
            writer.key("ack_only")
            writer.bool(ackOnly)
        }
        if let clientMessageID {
            writer.key("client_msg_id")
            writer.string(clientMessageID)
        }
        writer.key("content")
        writer.string(content)
        writer.key("room_id")
        writer.string(roomID)
        writer.key("user_id")
        writer.string(userID)
        writer.key("username")
        writer.string(username)
        writer.endObject()
    }
}

extension ServiceAPI.SendAck: JSONWritable {
    public func write(to writer: inout JSONWriter) {
        writer.beginObject()
        writer.key("duplicate")
        writer.bool(duplicate)
        writer.key("message_id")
        writer.string(messageID)
        writer.key("room_id")
        writer.string(roomID.rawValue)
        writer.key("seq")
        writer.number(seq)
        writer.endObject()
    }
}

extension ServiceAPI.HistoryResult: JSONWritable {
    public func write(to writer: inout JSONWriter) {
        writer.beginObject()
        writer.key("has_more")
        writer.bool(hasMore)
        writer.key("last_seq")
        writer.number(lastSeq)
        writer.key("messages")
        writer.array(messages)
        writer.key("room_id")
        writer.string(roomID.rawValue)
        writer.endObject()
    }
}
