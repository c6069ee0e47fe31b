/// The frames of membership and moderation events (`AccessEvent`).
extension ServerFrame {
    static func access(_ type: ChatEventType, _ event: AccessEvent) -> EventDelivery {
        let room = event.roomID
        switch type {
        case .memberAdded:
            let user = event.userID.map { user in (user, Self.added(event)) }
            return EventDelivery(frame: memberFrame("member_added", event), room: room, forUser: user)
        case .memberRemoved:
            let user = event.userID.map { user in (user, Self.removed(roomID: room, reason: event.reason ?? "removed")) }
            return EventDelivery(frame: memberFrame("member_removed", event), room: room, forUser: user)
        case .roleChanged:
            return EventDelivery(frame: memberFrame("role_changed", event), room: room)
        case .roomUpdated:
            struct Body: Encodable {
                var room_id: RoomID
                var room: Room?
            }
            return EventDelivery(frame: encode(type: "room_updated", Body(room_id: room, room: event.room)), room: room)
        case .roomDeleted:
            return EventDelivery(frame: encode(type: "room_deleted", ["room_id": room.rawValue]), room: room)
        case .userMuted:
            struct Body: Encodable {
                var room_id: RoomID
                var until: String?
                var until_ms: Int64?
            }
            let frame = encode(type: "muted", Body(room_id: room, until: event.until, until_ms: event.untilMilliseconds))
            return EventDelivery(frame: nil, room: room, forUser: event.userID.map { ($0, frame) })
        case .userUnmuted:
            let frame = encode(type: "unmuted", ["room_id": room.rawValue])
            return EventDelivery(frame: nil, room: room, forUser: event.userID.map { ($0, frame) })
        default:
            return EventDelivery(frame: nil, room: room)
        }
    }

    private static func memberFrame(_ type: String, _ event: AccessEvent) -> [UInt8] {
        struct Body: Encodable {
            var room_id: RoomID
            var user_id: UserID?
            var username: String?
            var role: RoomRole?
            var reason: String?
        }
        return encode(
            type: type,
            Body(room_id: event.roomID, user_id: event.userID, username: event.username, role: event.role, reason: event.reason)
        )
    }

    /// To the user just put on a roster: the room they can now see and join.
    static func added(_ event: AccessEvent) -> [UInt8] {
        struct Body: Encodable {
            var room_id: RoomID
            var room: Room?
            var role: RoomRole?
        }
        var room = event.room
        room?.myRole = event.role
        return encode(type: "added", Body(room_id: event.roomID, room: room, role: event.role))
    }

    /// To a user taken out of a room (`removed`, `left`, `banned`): nothing of the room follows.
    public static func removed(roomID: RoomID, reason: String) -> [UInt8] {
        encode(type: "removed", ["room_id": roomID.rawValue, "reason": reason])
    }
}
