import ChatCore
import NIOCore

/// A REST request body as JSON: read by the strict `JSONReader` first, so REST refuses what WebSocket
/// frames refuse (a repeated key, two documents, deep nesting) and tolerates what they tolerate (a
/// leading BOM), before the Codable decode gives the fields their types.
enum JSONBody {
    static func decode<T: Decodable>(_ type: T.Type, from body: ByteBuffer) throws(ChatError) -> T {
        var bytes = Array(buffer: body)
        _ = try JSONReader.parse(bytes)
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { bytes.removeFirst(3) }
        return try ChatJSON.decode(type, from: bytes)
    }
}
