import Foundation
import NATS
import NATSTesting
import Testing

@Suite("NATS service API ($SRV)")
struct ServiceTests {
    @Test func answersPingInfoStatsAndReportsErrors() async throws {
        let server = try NATSServerProcess()
        let connection = try await server.connect()
        let service = NATSService(connection: connection, name: "calc", version: "1.2.3", description: "adds", logger: connection.logger)
        service.addEndpoint(name: "add", subject: "calc.add") { message in
            let numbers = String(decoding: message.payload, as: UTF8.self).split(separator: "+").compactMap { Int($0) }
            guard numbers.count == 2 else {
                return .error(code: 400, description: "need a+b", payload: Array("{\"code\":\"invalid_request\"}".utf8))
            }
            return ServiceReply(payload: Array("\(numbers[0] + numbers[1])".utf8))
        }
        let running = Task { try await service.run() }
        defer { running.cancel() }
        try await eventually("service up") { (try? await connection.request("$SRV.PING.calc", timeout: .milliseconds(200))) != nil }

        let sum = try await connection.request("calc.add", payload: Array("2+3".utf8))
        #expect(String(decoding: sum.payload, as: UTF8.self) == "5")
        let bad = try await connection.request("calc.add", payload: Array("oops".utf8))
        #expect(bad.headers["Nats-Service-Error-Code"] == "400")
        #expect(bad.headers["Nats-Service-Error"] == "need a+b")

        func json(_ subject: String) async throws -> [String: Any] {
            let reply = try await connection.request(subject)
            return try #require(try JSONSerialization.jsonObject(with: Data(reply.payload)) as? [String: Any])
        }
        for subject in ["$SRV.PING", "$SRV.PING.calc", "$SRV.PING.calc.\(service.id)"] {
            let ping = try await json(subject)
            #expect(ping["type"] as? String == "io.nats.micro.v1.ping_response")
            #expect(ping["name"] as? String == "calc")
            #expect(ping["version"] as? String == "1.2.3")
        }
        let info = try await json("$SRV.INFO.calc")
        let endpoints = try #require(info["endpoints"] as? [[String: Any]])
        #expect(endpoints.first?["subject"] as? String == "calc.add")
        #expect(endpoints.first?["queue_group"] as? String == "q")
        let stats = try await json("$SRV.STATS.calc.\(service.id)")
        let endpointStats = try #require((stats["endpoints"] as? [[String: Any]])?.first)
        #expect(endpointStats["num_requests"] as? Int == 2)
        #expect(endpointStats["num_errors"] as? Int == 1)
        #expect(endpointStats["last_error"] as? String == "400: need a+b")
        #expect((endpointStats["processing_time"] as? Int ?? 0) > 0)
    }
}
