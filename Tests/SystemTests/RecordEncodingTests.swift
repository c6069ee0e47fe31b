import Foundation
import NATS
import Testing

@testable import ChatService
@testable import ServiceSupport

/// Stored records are encoded or the write fails: an empty value would be read as no record (a lease
/// free for the taking) or as garbage (a gateway record the sweeper skips for good).
@Suite("records that cannot be encoded are not stored empty")
struct RecordEncodingTests {
    /// JSONEncoder refuses non-finite numbers: a value that cannot be encoded.
    struct Unencodable: Encodable { var value = Double.nan }

    @Test func gatewayRecordsThrow() throws {
        #expect(throws: NATSError.self) { try PresenceRegistry.encoded(Unencodable()) }
        let record = PresenceRegistry.GatewayRecord(gatewayID: "gw", lastSeenMilliseconds: 7, connections: 1)
        let decoded = try JSONDecoder().decode(PresenceRegistry.GatewayRecord.self, from: Data(PresenceRegistry.encoded(record)))
        #expect(decoded.lastSeenMilliseconds == 7)
    }

    @Test func leaseRecordsThrow() throws {
        #expect(throws: NATSError.self) { try Lease.encoded(Unencodable()) }
        let record = LeaseRecord(holder: "a", expiresAtMilliseconds: 9)
        #expect(try JSONDecoder().decode(LeaseRecord.self, from: Data(Lease.encoded(record))) == record)
    }
}
