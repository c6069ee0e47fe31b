import Foundation
import Testing

@testable import ChatBench

@Suite("chat-bench: when a stepped phase held (fanout steps, send's fixed rates)")
struct HeldTests {
    func phase(errors: [String: Int] = [:], missing: Int = 0, unacked: Int = 0) throws -> PhaseResult {
        let percentiles = #"{"count":1,"p50":1,"p90":1,"p99":1,"p999":1,"max":1,"mean":1}"#
        let json = """
            {"scenario":"send","label":"send 1000/s","server":"x","rooms":1,"membersPerRoom":1,"senders":1,"targetRate":1000,
             "window":0,"seconds":1,"sent":1000,"acks":1000,"sendErrors":0,"delivered":1000,"sentPerSecond":1000,
             "acksPerSecond":1000,"deliveredPerSecond":1000,"latency":\(percentiles),"ackLatency":\(percentiles),
             "checks":{"missing":\(missing),"duplicates":0,"reordered":0,"stale":0,"foreignRoom":0,"unexpectedCloses":0,\
            "unacked":\(unacked)},
             "errors":\(String(decoding: try JSONEncoder().encode(errors), as: UTF8.self)),"processes":[]}
            """
        return try JSONDecoder().decode(PhaseResult.self, from: Data(json.utf8))
    }

    @Test func heldNeedsTheP99WithinTheLimit() throws {
        let p = try phase()
        #expect(p.holds(p99: 19.9, limit: 20, achieved: 1000, offered: 1000))
        #expect(p.holds(p99: 20, limit: 20, achieved: 1000, offered: 1000))
        #expect(!p.holds(p99: 20.1, limit: 20, achieved: 1000, offered: 1000))
    }

    @Test func heldNeedsNinetyPercentOfTheOfferedRate() throws {
        let p = try phase()
        #expect(p.holds(p99: 1, limit: 20, achieved: 9000, offered: 10_000))
        #expect(!p.holds(p99: 1, limit: 20, achieved: 8999, offered: 10_000))
    }

    @Test func anyLossOrErrorMeansNotHeld() throws {
        #expect(!(try phase(missing: 1)).holds(p99: 1, limit: 20, achieved: 1000, offered: 1000))
        #expect(!(try phase(unacked: 1)).holds(p99: 1, limit: 20, achieved: 1000, offered: 1000))
        #expect(!(try phase(errors: ["rate_limited": 1])).holds(p99: 1, limit: 20, achieved: 1000, offered: 1000))
    }

    @Test func theLimitDefaultsToTheScenariosTarget() throws {
        #expect(try Options.parse(["send"]).p99Limit == 20)
        #expect(try Options.parse(["fanout"]).p99Limit == 50)
        #expect(try Options.parse(["send", "--p99-limit-ms", "7.5"]).p99Limit == 7.5)
        #expect(throws: BenchError.self) { try Options.parse(["send", "--p99-limit-ms", "0"]) }
    }
}
