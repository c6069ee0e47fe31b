import ChatCore
import Foundation
import Testing

@Suite struct RoomPolicyTests {
    static let roles: [RoomRole?] = [.owner, .admin, .member, nil]

    func room(_ visibility: RoomVisibility, archived: Bool = false) -> Room {
        Room(id: RoomID.random(), name: "r", createdAt: "t", visibility: visibility, archived: archived)
    }

    @Test func aPrivateOrDirectRoomIsNotFoundForEveryOperationOffItsRoster() {
        for visibility in [RoomVisibility.private, .direct] {
            for operation in RoomPolicy.Operation.allCases {
                for standing in [RoomPolicy.Standing.anonymous, .init(verified: true), .init(verified: false, role: .owner)] {
                    #expect(RoomPolicy.check(operation, room: room(visibility), standing: standing)?.code == .roomNotFound, "\(operation)")
                }
            }
        }
    }

    @Test func everyoneMayReadAndJoinAPublicRoomButOnlyVerifiedUsersManageIt() {
        let open = room(.public)
        for operation in [RoomPolicy.Operation.view, .history, .members, .join, .send] {
            #expect(RoomPolicy.check(operation, room: open, standing: .anonymous) == nil, "\(operation)")
        }
        for operation in [RoomPolicy.Operation.update, .delete, .invite, .removeMember, .leaveRoster, .setRole, .moderate] {
            #expect(RoomPolicy.check(operation, room: open, standing: .anonymous)?.code == .authRequired, "\(operation)")
        }
    }

    @Test func rolesDecideManagement() {
        let secret = room(.private)
        func check(_ operation: RoomPolicy.Operation, _ role: RoomRole, target: RoomRole? = nil) -> ChatErrorCode? {
            RoomPolicy.check(operation, room: secret, standing: .init(verified: true, role: role), target: target)?.code
        }
        #expect(check(.delete, .owner) == nil)
        #expect(check(.delete, .admin) == .forbidden)
        #expect(check(.setRole, .admin) == .forbidden)
        #expect(check(.update, .admin) == nil)
        #expect(check(.update, .member) == .forbidden)
        #expect(check(.invite, .admin) == nil)
        #expect(check(.invite, .member) == .forbidden)
        #expect(check(.removeMember, .admin, target: .member) == nil)
        #expect(check(.removeMember, .admin, target: .admin) == .forbidden, "an admin cannot remove another admin")
        #expect(check(.moderate, .admin, target: .owner) == .forbidden)
        #expect(check(.moderate, .owner, target: .admin) == nil)
        #expect(check(.leaveRoster, .member) == nil)
        #expect(check(.leaveRoster, .owner) == .forbidden, "the owner transfers ownership first")
        #expect(RoomPolicy.check(.invite, room: room(.public), standing: .init(verified: true, role: .owner))?.code == .invalidRequest)
        #expect(RoomPolicy.check(.invite, room: room(.direct), standing: .init(verified: true, role: .member))?.code == .forbidden)
        #expect(RoomPolicy.check(.leaveRoster, room: room(.direct), standing: .init(verified: true, role: .member)) == nil)
    }

    @Test func bansMutesAndArchivingRefuseWithTheirOwnCodes() {
        let ban = Restriction(userID: .random(), by: .random(), untilMilliseconds: 4_102_444_800_000)
        let open = room(.public)
        let banned = RoomPolicy.check(.join, room: open, standing: .init(verified: true, ban: ban))
        #expect(banned?.code == .banned && banned?.until == "2100-01-01T00:00:00.000Z")
        #expect(RoomPolicy.check(.send, room: open, standing: .init(verified: true, mute: ban))?.code == .muted)
        #expect(RoomPolicy.check(.history, room: open, standing: .init(verified: true, mute: ban)) == nil, "muted users read")
        #expect(RoomPolicy.check(.send, room: room(.public, archived: true), standing: .anonymous)?.code == .roomArchived)
        #expect(RoomPolicy.check(.history, room: room(.public, archived: true), standing: .anonymous) == nil)
        #expect(!ban.inForce(atMilliseconds: 4_102_444_800_000) && ban.inForce(atMilliseconds: 0))
    }

    /// A chat-service from before private rooms decodes rooms requiring `name`: a private record must
    /// not decode there (it answers room_not_found instead of serving the room as public).
    @Test func aStoredPrivateRoomIsUnreadableToTheReleaseBeforeIt() throws {
        struct OldRoom: Decodable {
            var id: String
            var name: String
            var created_at: String
        }
        let secret = Room(id: .random(), name: "Plans", createdAt: "2026-12-04T00:00:00.000Z", visibility: .private, ownerID: .random())
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(OldRoom.self, from: Data(secret.storedJSON)) }
        #expect(try ChatJSON.decode(Room.self, from: secret.storedJSON) == secret)
        let open = Room(id: .random(), name: "Lobby", createdAt: "2026-12-04T00:00:00.000Z")
        #expect(try JSONDecoder().decode(OldRoom.self, from: Data(open.storedJSON)).name == "Lobby")
    }
}
