import NATS
import NATSTesting
let server = try NATSServerProcess()
let c = try await server.connect()
var config = StreamConfiguration(name: "EVENTS", subjects: ["events.>"])
config.maxMessagesPerSubject = 1000
try await c.jetStream.createOrUpdateStream(config)
do {
    let ack = try await c.jetStream.publish("events.a", payload: [1], options: .init(messageID: "one"))
    print(ack)
} catch { print(error) }
