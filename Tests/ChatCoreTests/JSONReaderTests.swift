import Foundation
import Testing

@testable import ChatCore

@Suite("JSONReader accepts what JSONDecoder accepts and refuses the rest")
struct JSONReaderTests {
    @Test(arguments: [
        #"{}"#, #"[]"#, #" { "a" : [1, -2, 3.5, 1e3, -0.0e-2, true, false, null, "x"] } "#, #""plain""#, "0", "-1",
        #"{"s":"q\"b\\s\/n\nr\rt\tb\bf\f"}"#, #"{"u":"\u00e9\u20AC\ud83c\udf89"}"#, #"{"nested":{"a":{"b":[[[]]]}}}"#,
        #"{"emoji":"🎉","rtl":"\u202e","zw":"a\u200bb"}"#, #"{"a":{"a":1},"b":[{"a":2}]}"#, "18446744073709551615",
    ])
    func validDocuments(_ text: String) throws {
        let bytes = Array(text.utf8)
        let ours = try JSONReader.parse(bytes)
        let theirs = try JSONSerialization.jsonObject(with: Data(bytes), options: [.fragmentsAllowed])
        #expect(Self.same(ours, theirs), "\(text)")
    }

    @Test(arguments: [
        "", " ", "{", "}", "[1,]", "{\"a\":1,}", "{\"a\" 1}", "{a:1}", "'x'", "01", "1.", ".5", "-", "1e", "+1", "tru", "nul",
        "\"unterminated", "\"bad \\x escape\"", "\"\\u12\"", "\"\\ud800\"", "\"\\udc00\"", "\"\\ud800\\u0041\"", "{} {}", "[1 2]",
        "\"raw\ncontrol\"", "\"tab\tinside\"", "NaN", "Infinity",
        "[" + String(repeating: "[", count: 100) + String(repeating: "]", count: 101),
    ])
    func invalidDocuments(_ text: String) {
        #expect(throws: ChatError.self) { try JSONReader.parse(Array(text.utf8)) }
    }

    /// Parsers disagree on which of two equal keys wins, so none is chosen: the document is refused.
    @Test func repeatedKeysAreRefusedInSmallAndLargeObjects() throws {
        let small = #"{"type":"message","content":"a","content":"b"}"#
        #expect(throws: ChatError(.invalidRequest, "invalid JSON: duplicate field 'content' at byte 32")) {
            try JSONReader.parse(Array(small.utf8))
        }
        // Past 16 fields the check uses a set; a repeat early or late is found either way.
        let keys = (0..<40).map { #""k\#($0)":\#($0)"# }
        for repeated in ["k0", "k20", "k39"] {
            let text = "{" + (keys + [#""\#(repeated)":0"#]).joined(separator: ",") + "}"
            #expect(throws: ChatError.self) { try JSONReader.parse(Array(text.utf8)) }
        }
        let distinct = "{" + keys.joined(separator: ",") + "}"
        guard case .object(let object) = try JSONReader.parse(Array(distinct.utf8)) else {
            Issue.record("not an object")
            return
        }
        #expect(object.fields.count == 40)
    }

    @Test func aLeadingByteOrderMarkIsSkippedAndOnlyThere() throws {
        #expect(
            try JSONReader.parse([0xEF, 0xBB, 0xBF] + Array(#"{"a":1}"#.utf8))
                == .object(try JSONFields(parsing: Array(#"{"a":1}"#.utf8)).fields)
        )
        #expect(throws: ChatError.self) { try JSONReader.parse(Array(" ".utf8) + [0xEF, 0xBB, 0xBF] + Array("{}".utf8)) }
        #expect(throws: ChatError.self) { try JSONReader.parse([0xEF, 0xBB, 0xBF, 0xEF, 0xBB, 0xBF] + Array("{}".utf8)) }
        #expect(throws: ChatError.self) { try JSONReader.parse([0xEF, 0xBB, 0xBF]) }
    }

    @Test func invalidUTF8IsRefused() {
        for bytes: [UInt8] in [[0x22, 0xFF, 0x22], [0x22, 0xC3, 0x22], [0x22, 0xED, 0xA0, 0x80, 0x22]] {
            #expect(throws: ChatError.self) { try JSONReader.parse(bytes) }
        }
    }

    @Test func hotTypesDecodeLikeCodable() throws {
        let message = JSONWriterTests.message("hi \"x\" \u{1} 🎉", clientMessageID: "c-1")
        let bytes = ChatJSON.encode(ServiceAPI.SendResult(message: message, duplicate: false))
        let ours = try ChatJSON.decode(ServiceAPI.SendResult.self, from: bytes)
        let theirs = try JSONDecoder().decode(ServiceAPI.SendResult.self, from: Data(bytes))
        #expect(ours.message == theirs.message && ours.duplicate == theirs.duplicate && ours.message == message)

        let history = ServiceAPI.HistoryResult(
            roomID: message.roomID,
            messages: [message, JSONWriterTests.message("two", clientMessageID: nil)],
            hasMore: true,
            lastSeq: 42
        )
        let historyBytes = ChatJSON.encode(history)
        #expect(historyBytes == (try JSONWriterTests.plain(history)), "byte-identical to JSONEncoder's sorted output")
        let readBack = try ChatJSON.decode(ServiceAPI.HistoryResult.self, from: historyBytes)
        #expect(readBack.messages == history.messages && readBack.hasMore && readBack.lastSeq == 42 && readBack.roomID == history.roomID)
        let frame = try #require(try JSONSerialization.jsonObject(with: Data(ServerFrame.history(history))) as? [String: Any])
        #expect(frame["type"] as? String == "history" && frame["has_more"] as? Bool == true && (frame["messages"] as? [Any])?.count == 2)
        #expect(throws: ChatError.self) {
            try ChatJSON.decode(
                ChatMessage.self,
                from: Array(
                    #"{"message_id":"m","room_id":"not-a-uuid","user_id":"x","username":"u","content":"c","timestamp":"t","seq":1}"#.utf8
                )
            )
        }
        #expect(throws: ChatError.self) { try ChatJSON.decode(ChatMessage.self, from: Array(#"{"seq":-1}"#.utf8)) }
        do {
            _ = try ChatJSON.decode(ServiceAPI.Send.self, from: Array(#"{"room_id":"r","user_id":"u","username":"n","content":5}"#.utf8))
            Issue.record("a number as content must be refused")
        } catch {
            #expect(error.code == .invalidRequest)
            #expect(error.error.contains("content"))
        }
    }

    static func same(_ ours: JSONValue, _ theirs: Any) -> Bool {
        switch ours {
        case .null: return theirs is NSNull
        case .bool(let value): return (theirs as? Bool) == value
        case .number(let text): return (theirs as? NSNumber).map { $0.doubleValue == Double(text) } ?? false
        case .string(let text): return (theirs as? String) == text
        case .array(let values):
            guard let array = theirs as? [Any], array.count == values.count else { return false }
            return zip(values, array).allSatisfy { same($0, $1) }
        case .object(let parsed):
            let fields = parsed.dictionary
            guard let object = theirs as? [String: Any], object.count == fields.count else { return false }
            return fields.allSatisfy { key, value in object[key].map { same(value, $0) } ?? false }
        }
    }
}
