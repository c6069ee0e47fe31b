import NATSTesting
import Testing

@testable import NATS

@Suite("KV pages: a bucket's keys read page by page in write order")
struct KeyValuePageTests {
    /// Pages of 4 over 10 keys (one deleted, one of another pattern): every live key once, in write
    /// order, `more` exactly while keys follow.
    @Test func pagesCoverEveryKeyOnceInWriteOrder() async throws {
        let server = try NATSServerProcess()
        let connection = try await server.connect()
        let kv = try await connection.keyValue(KeyValueConfiguration(bucket: "paged"))
        var written: [String] = []
        for n in 0..<10 {
            try await kv.put("id.k\(n)", [UInt8(n)])
            written.append("id.k\(n)")
        }
        try await kv.put("other", [1])
        try await kv.delete("id.k3")
        written.removeAll { $0 == "id.k3" }

        var seen: [String] = []
        var after: UInt64 = 0
        var pages = 0
        while true {
            let (entries, more) = try await kv.page(matching: "id.*", after: after, limit: 4)
            pages += 1
            seen += entries.map(\.key)
            #expect(entries.allSatisfy { $0.value == [UInt8($0.key.dropFirst(4))!] })
            guard more, let last = entries.last else { break }
            after = last.revision
            #expect(pages < 10)
        }
        #expect(seen == written)
        #expect(pages == 3)

        // After the last key: an empty page with nothing more.
        let (rest, more) = try await kv.page(matching: "id.*", after: 1_000, limit: 4)
        #expect(rest.isEmpty && !more)
        await #expect(throws: NATSError.self) { _ = try await kv.page(matching: "id.*", after: 0, limit: 0) }
    }
}
