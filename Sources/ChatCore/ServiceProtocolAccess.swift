/// Bodies of the room management, membership, moderation and directory endpoints. Each acts for the
/// user whose token the request carries (`Chat-User-Token`): none of them takes a user id for the caller.
extension ServiceAPI {
    public struct UpdateRoom: Codable, Sendable {
        public var roomID: String
        public var name: String?
        public var topic: String?
        public var archived: Bool?
        public init(roomID: String, name: String? = nil, topic: String? = nil, archived: Bool? = nil) {
            (self.roomID, self.name, self.topic, self.archived) = (roomID, name, topic, archived)
        }
        enum CodingKeys: String, CodingKey {
            case name, topic, archived
            case roomID = "room_id"
        }
    }

    /// Invite (`role` optional, default member), change a role, or remove a user from the roster.
    public struct MemberChange: Codable, Sendable {
        public var roomID: String
        public var userID: String
        public var role: String?
        public init(roomID: String, userID: String, role: String? = nil) { (self.roomID, self.userID, self.role) = (roomID, userID, role) }
        enum CodingKeys: String, CodingKey {
            case role
            case roomID = "room_id"
            case userID = "user_id"
        }
    }

    /// Ban or mute (`seconds` absent: until lifted), or lift one (`seconds` ignored).
    public struct Restrict: Codable, Sendable {
        public static let maxSeconds = 31_536_000
        public var roomID: String
        public var userID: String
        public var seconds: Int?
        public init(roomID: String, userID: String, seconds: Int? = nil) {
            (self.roomID, self.userID, self.seconds) = (roomID, userID, seconds)
        }
        enum CodingKeys: String, CodingKey {
            case seconds
            case roomID = "room_id"
            case userID = "user_id"
        }
    }

    public struct RestrictionResult: Codable, Sendable {
        public var roomID: RoomID
        public var userID: UserID
        public var kind: Restriction.Kind
        public var until: String?
        public init(roomID: RoomID, userID: UserID, kind: Restriction.Kind, until: String?) {
            (self.roomID, self.userID, self.kind, self.until) = (roomID, userID, kind, until)
        }
        enum CodingKeys: String, CodingKey {
            case kind, until
            case roomID = "room_id"
            case userID = "user_id"
        }
    }

    public struct OpenDirect: Codable, Sendable {
        public var userID: String
        public init(userID: String) { self.userID = userID }
        enum CodingKeys: String, CodingKey { case userID = "user_id" }
    }

    public struct SearchUsers: Codable, Sendable {
        public static let defaultLimit = 50
        public static let maxLimit = 200
        public var prefix: String?
        public var limit: Int?
        public var after: String?
        public init(prefix: String? = nil, limit: Int? = nil, after: String? = nil) {
            (self.prefix, self.limit, self.after) = (prefix, limit, after)
        }
    }

    public struct UserRef: Codable, Sendable {
        public var userID: String
        public init(userID: String) { self.userID = userID }
        enum CodingKeys: String, CodingKey { case userID = "user_id" }
    }

    public struct UserList: Codable, Sendable {
        public var users: [DirectoryUser]
        public var hasMore: Bool
        public var next: String?
        public init(users: [DirectoryUser], hasMore: Bool, next: String?) { (self.users, self.hasMore, self.next) = (users, hasMore, next) }
        enum CodingKeys: String, CodingKey {
            case users, next
            case hasMore = "has_more"
        }
    }
}
