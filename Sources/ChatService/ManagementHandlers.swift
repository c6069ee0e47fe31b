import ChatCore
import NATS

/// The management endpoints: rooms, rosters, roles, moderation, direct rooms and the user directory.
/// Each acts for the verified user of the request's token (`RoomAdmin`); `RoomPolicy` decides.
extension ChatHandlers {
    func registerManagement(on service: NATSService) {
        add(.updateRoom, on: service) { (request: ServiceAPI.UpdateRoom, caller: Caller) throws(ChatError) in
            try await admin.update(request, by: try await principal(caller))
        }
        add(.deleteRoom, on: service) { (request: ServiceAPI.RoomRef, caller: Caller) throws(ChatError) in
            try await admin.delete(request, by: try await principal(caller))
        }
        add(.invite, on: service) { (request: ServiceAPI.MemberChange, caller: Caller) throws(ChatError) in
            try await admin.invite(request, by: try await principal(caller))
        }
        add(.removeMember, on: service) { (request: ServiceAPI.MemberChange, caller: Caller) throws(ChatError) in
            try await admin.removeMember(request, by: try await principal(caller))
        }
        add(.setRole, on: service) { (request: ServiceAPI.MemberChange, caller: Caller) throws(ChatError) in
            try await admin.setRole(request, by: try await principal(caller))
        }
        add(.ban, on: service) { (request: ServiceAPI.Restrict, caller: Caller) throws(ChatError) in
            try await admin.restrict(.ban, request, by: try await principal(caller))
        }
        add(.unban, on: service) { (request: ServiceAPI.Restrict, caller: Caller) throws(ChatError) in
            try await admin.lift(.ban, request, by: try await principal(caller))
        }
        add(.mute, on: service) { (request: ServiceAPI.Restrict, caller: Caller) throws(ChatError) in
            try await admin.restrict(.mute, request, by: try await principal(caller))
        }
        add(.unmute, on: service) { (request: ServiceAPI.Restrict, caller: Caller) throws(ChatError) in
            try await admin.lift(.mute, request, by: try await principal(caller))
        }
        add(.openDirect, on: service) { (request: ServiceAPI.OpenDirect, caller: Caller) throws(ChatError) in
            try await admin.openDirect(request, by: try await principal(caller))
        }
        add(.searchUsers, on: service) { (request: ServiceAPI.SearchUsers, caller: Caller) throws(ChatError) in
            guard try await principal(caller) != nil else { throw ChatError(.authRequired, "the user directory needs a signed-in user") }
            let limit = request.limit ?? ServiceAPI.SearchUsers.defaultLimit
            guard (1...ServiceAPI.SearchUsers.maxLimit).contains(limit) else {
                throw ChatError(.invalidRequest, "limit must be 1 to \(ServiceAPI.SearchUsers.maxLimit)")
            }
            let prefix = request.prefix ?? ""
            guard prefix.count <= Username.maxLength, !prefix.unicodeScalars.contains(where: MessageContent.isForbiddenInContent) else {
                throw ChatError(.invalidRequest, "prefix must be at most \(Username.maxLength) characters without control characters")
            }
            if let after = request.after,
                !after.utf8.allSatisfy({ $0 == 0x2e || $0 == 0x2d || (0x30...0x39).contains($0) || (0x61...0x66).contains($0) })
            {
                throw ChatError(.invalidRequest, "after must be the next of the previous page")
            }
            return try await storage { try await directory.search(prefix: prefix, limit: limit, after: request.after) }
        }
        add(.getUser, on: service) { (request: ServiceAPI.UserRef, caller: Caller) throws(ChatError) in
            guard try await principal(caller) != nil else { throw ChatError(.authRequired, "the user directory needs a signed-in user") }
            let id = try Self.user(request.userID)
            guard let user = try await storage({ try await directory.user(id) }) else {
                throw ChatError(.userNotFound, "no user \(id) in the directory")
            }
            return user
        }
    }
}
