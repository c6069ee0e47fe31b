import NATS
import NATSTesting
import Testing

@Suite("NATSHeaders keep every value of a key, in order")
struct NATSHeadersTests {
    @Test func valuesReplacementAndEquality() {
        var headers: NATSHeaders = ["A": "1", "B": "2"]
        headers.add("A", "3")
        #expect(headers["A"] == "1")
        #expect(headers.values("A") == ["1", "3"])
        #expect(headers.values("missing") == [])
        headers["A"] = "9"
        #expect(headers.values("A") == ["9"])
        headers["B"] = nil
        #expect(headers["B"] == nil && !headers.isEmpty)
        // Across keys the order does not count; within a key it does.
        var one = NATSHeaders()
        var two = NATSHeaders()
        one.add("X", "1")
        one.add("Y", "2")
        one.add("X", "3")
        two.add("Y", "2")
        two.add("X", "1")
        two.add("X", "3")
        #expect(one == two)
        var three = NATSHeaders()
        three.add("X", "3")
        three.add("X", "1")
        three.add("Y", "2")
        #expect(one != three)
    }

    @Test func repeatedKeysSurviveTheRoundTripThroughLibnats() async throws {
        let server = try NATSServerProcess()
        let connection = try await server.connect()
        let subscription = try connection.subscribe("h")
        try await connection.flush()
        var headers = NATSHeaders()
        headers.add("Multi", "first")
        headers.add("Single", "only")
        headers.add("Multi", "second")
        try connection.publish("h", payload: [1], headers: headers)
        let received = await collect(subscription, count: 1)
        #expect(received.first?.headers.values("Multi") == ["first", "second"])
        #expect(received.first?.headers["Single"] == "only")
        await connection.drain()
    }
}
