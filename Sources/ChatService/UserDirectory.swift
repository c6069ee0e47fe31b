import ChatCore
import NATS
import Synchronization

/// Users who have used the system with a verified token, so people can be invited by name: KV
/// `chat_users`, `id.<user>` → user and `name.<hex(lowercased name)>.<user>` (the search index), plus
/// `owns.<user>.<room>` for each room a user owns (`CHAT_MAX_OWNED_ROOMS`). Username mode has no
/// directory: its user ids last one connection.
public final class UserDirectory: Sendable {
    static let cacheLimit = 100_000
    let bucket: KeyValue
    /// Users recorded (by this replica, with this name): a user is written once, not per request.
    private let recorded = Mutex<[UserID: String]>([:])

    init(bucket: KeyValue) { self.bucket = bucket }

    /// Records the user (and moves the search entry when the name changed). Costs nothing once known.
    public func seen(_ user: UserID, as username: Username) async throws(NATSError) {
        if recorded.withLock({ $0[user] }) == username.rawValue { return }
        let previous = try await bucket.value(ChatNames.userKey(user)).flatMap { try? ChatJSON.decode(DirectoryUser.self, from: $0.value) }
        if previous?.username != username.rawValue {
            try await bucket.put(ChatNames.userKey(user), ChatJSON.encode(DirectoryUser(userID: user, username: username.rawValue)))
            try await bucket.put(ChatNames.userNameKey(username, user), [])
            if let old = previous.flatMap({ Username($0.username) }), old.rawValue.lowercased() != username.rawValue.lowercased() {
                try await bucket.erase(ChatNames.userNameKey(old, user))
            }
        }
        recorded.withLock { recorded in
            if recorded.count >= Self.cacheLimit { recorded.removeAll(keepingCapacity: true) }
            recorded[user] = username.rawValue
        }
    }

    public func user(_ id: UserID) async throws(NATSError) -> DirectoryUser? {
        try await bucket.value(ChatNames.userKey(id)).flatMap { try? ChatJSON.decode(DirectoryUser.self, from: $0.value) }
    }

    /// Users whose name starts with `prefix` (case-insensitive), by name; `after` is the previous
    /// page's `next`. Reads the index's keys (no values), then the page's users.
    public func search(prefix: String, limit: Int, after: String?) async throws(NATSError) -> ServiceAPI.UserList {
        let wanted = "name." + ChatNames.hex(prefix.lowercased())
        let keys = try await bucket.storedKeys(matching: ChatNames.userNamePattern).filter { key in
            key.hasPrefix(wanted) && after.map { key > "name." + $0 } ?? true
        }.sorted()
        let chosen = keys.prefix(limit)
        var users: [DirectoryUser] = []
        for key in chosen {
            guard let id = key.split(separator: ".").last.flatMap({ UserID(String($0)) }), let user = try await user(id) else { continue }
            users.append(user)
        }
        let more = keys.count > chosen.count
        return ServiceAPI.UserList(users: users, hasMore: more, next: more ? chosen.last.map { String($0.dropFirst(5)) } : nil)
    }

    public func ownedCount(_ user: UserID) async throws(NATSError) -> Int {
        try await bucket.storedKeys(matching: ChatNames.ownedRoomsPattern(user)).count
    }

    public func setOwner(_ user: UserID, of room: RoomID, owns: Bool) async throws(NATSError) {
        if owns {
            try await bucket.put(ChatNames.ownedRoomKey(user, room), [])
        } else {
            try await bucket.erase(ChatNames.ownedRoomKey(user, room))
        }
    }
}
