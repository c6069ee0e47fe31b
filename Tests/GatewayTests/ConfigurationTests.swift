import Gateway
import ServiceSupport
import Testing

@Suite("NATS settings from the environment")
struct ConfigurationTests {
    @Test func gatewayDeliveryPoolDefaultsAndOverrides() throws {
        #expect(try GatewayConfiguration.fromEnvironment(Settings([:])).nats.deliveryThreads == GatewayConfiguration.defaultDeliveryThreads)
        #expect(try GatewayConfiguration.fromEnvironment(Settings(["NATS_DELIVERY_THREADS": "0"])).nats.deliveryThreads == 0)
        #expect(try GatewayConfiguration.fromEnvironment(Settings(["NATS_DELIVERY_THREADS": "2"])).nats.deliveryThreads == 2)
        // The services keep a thread per subscription unless told otherwise.
        #expect(try Settings([:]).nats(name: "chat-service").deliveryThreads == 0)
    }

    @Test(arguments: [
        ["NATS_DELIVERY_THREADS": "many"], ["NATS_DELIVERY_THREADS": "65"], ["NATS_DELIVERY_THREADS": "-1"],
        ["NATS_REQUEST_TIMEOUT_MS": "0"], ["NATS_REQUEST_TIMEOUT_MS": "5s"], ["NATS_SEND_ASAP": "maybe"],
        ["NATS_INBOX_PREFIX": "_INBOX.>"], ["NATS_INBOX_PREFIX": "a b"], ["NATS_INBOX_PREFIX": "a..b"],
    ])
    func mistypedValuesFailStartUp(_ environment: [String: String]) {
        #expect(throws: ConfigurationError.self) { try Settings(environment).nats(name: "gateway") }
        #expect(throws: ConfigurationError.self) { try GatewayConfiguration.fromEnvironment(Settings(environment)) }
    }

    @Test func valuesAreRead() throws {
        let nats = try Settings(["NATS_REQUEST_TIMEOUT_MS": "250", "NATS_SEND_ASAP": "false", "NATS_URL": "nats://a:1,nats://b:2"]).nats(
            name: "x"
        )
        #expect(nats.requestTimeout == .milliseconds(250))
        #expect(nats.sendAsap == false)
        #expect(nats.servers == ["nats://a:1", "nats://b:2"])
    }

    @Test func inboxPrefixIsTheServicesOwn() throws {
        #expect(try GatewayConfiguration.fromEnvironment(Settings([:])).nats.inboxPrefix == "_INBOX_gateway")
        #expect(
            try GatewayConfiguration.fromEnvironment(Settings(["NATS_INBOX_PREFIX": "_INBOX_gw.eu"])).nats.inboxPrefix == "_INBOX_gw.eu"
        )
    }

    @Test func requestBodyTimeout() throws {
        #expect(try GatewayConfiguration.fromEnvironment(Settings([:])).requestBodyTimeout == .seconds(10))
        #expect(
            try GatewayConfiguration.fromEnvironment(Settings(["REQUEST_BODY_TIMEOUT_MS": "700"])).requestBodyTimeout == .milliseconds(700)
        )
        #expect(throws: ConfigurationError.self) { try GatewayConfiguration.fromEnvironment(Settings(["REQUEST_BODY_TIMEOUT_MS": "soon"])) }
    }

    @Test func presenceSyncMaxEntries() throws {
        #expect(try GatewayConfiguration.fromEnvironment(Settings([:])).presenceSyncMaxEntries == 20_000)
        #expect(try GatewayConfiguration.fromEnvironment(Settings(["PRESENCE_SYNC_MAX_ENTRIES": "500"])).presenceSyncMaxEntries == 500)
        // Above 20,000 ids a request would pass NATS's default 1 MB payload limit.
        for bad in ["0", "20001", "many"] {
            #expect(throws: ConfigurationError.self) {
                try GatewayConfiguration.fromEnvironment(Settings(["PRESENCE_SYNC_MAX_ENTRIES": bad]))
            }
        }
    }
}
