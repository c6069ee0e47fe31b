import Testing

@testable import NATS

@Suite("KV keys and timestamps")
struct KeyValueKeyTests {
    @Test(arguments: ["a", "room.user", "id.0f-3A_b=c/d", "x.y.z"])
    func validKeys(_ key: String) { #expect(KeyValue.isValidKey(key)) }

    @Test(arguments: ["", ".a", "a.", "a..b", "a b", "a.*", "a.>", "ü", "a\u{0}b", "a\nb", "$KV"])
    func invalidKeys(_ key: String) { #expect(!KeyValue.isValidKey(key)) }

    @Test func timestamps() {
        #expect(parseRFC3339Nanoseconds("1970-01-01T00:00:00Z") == 0)
        #expect(parseRFC3339Nanoseconds("1970-01-01T00:00:01.5Z") == 1_500_000_000)
        #expect(parseRFC3339Nanoseconds("2026-11-26T19:38:36.123456789Z") == 1_795_721_916_123_456_789)
        #expect(parseRFC3339Nanoseconds("2000-02-29T12:00:00.000000001Z") == 951_825_600_000_000_001)
        #expect(parseRFC3339Nanoseconds("2026-11-26 19:38:36Z") == nil)
        #expect(parseRFC3339Nanoseconds("2026-13-26T19:38:36Z") == nil)
        #expect(parseRFC3339Nanoseconds("2026-11-26T19:38:36.Z") == nil)
    }
}
