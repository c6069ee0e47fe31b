import Foundation
import NATS
import Testing

@Suite("Consumer configuration on the wire")
struct ConsumerConfigurationTests {
    static func json(_ config: ConsumerConfiguration) throws -> [String: Any] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return try JSONSerialization.jsonObject(with: encoder.encode(config)) as? [String: Any] ?? [:]
    }

    @Test func policiesAreTheServerStringsAndDurationsNanoseconds() throws {
        var config = ConsumerConfiguration(durableName: "worker")
        config.deliverPolicy = .byStartSequence(42)
        config.ackPolicy = .all
        config.ackWait = .milliseconds(1500)
        config.inactiveThreshold = .seconds(10)
        let json = try Self.json(config)
        #expect(json["durable_name"] as? String == "worker")
        #expect(json["deliver_policy"] as? String == "by_start_sequence")
        #expect(json["opt_start_seq"] as? Int == 42)
        #expect(json["ack_policy"] as? String == "all")
        #expect(json["ack_wait"] as? Int == 1_500_000_000)
        #expect(json["inactive_threshold"] as? Int == 10_000_000_000)
        #expect(json["replay_policy"] as? String == "instant")
    }

    @Test func defaultsLeaveOptionalFieldsOut() throws {
        var config = ConsumerConfiguration(durableName: nil)
        config.deliverPolicy = .lastPerSubject
        let json = try Self.json(config)
        #expect(json["deliver_policy"] as? String == "last_per_subject")
        #expect(json["ack_policy"] as? String == "explicit")
        #expect(json["ack_wait"] as? Int == 30_000_000_000)
        for key in ["durable_name", "opt_start_seq", "inactive_threshold", "filter_subject", "headers_only", "mem_storage"] {
            #expect(json[key] == nil, "\(key)")
        }
    }

    @Test func decodesWhatItEncodes() throws {
        var config = ConsumerConfiguration(durableName: "d")
        config.deliverPolicy = .byStartSequence(7)
        config.ackPolicy = .none
        config.replayPolicy = .original
        config.inactiveThreshold = .milliseconds(250)
        config.filterSubject = "a.>"
        let decoded = try JSONDecoder().decode(ConsumerConfiguration.self, from: JSONEncoder().encode(config))
        #expect(decoded == config)
    }
}
