/// What a gateway checks of a delivery before its bytes go to sockets. Deliveries are frames the
/// broadcaster built from stored events (only the broadcaster user may publish `chat.deliver.>`), and
/// the gateway forwards them without re-encoding; this check is what keeps anything else — a
/// misconfigured publisher, a frame for another room — from reaching a client. Once per event and
/// gateway, not per socket.
public enum DeliveryCheck {
    /// What a checked room delivery is, as far as the gateway must act on it.
    public enum RoomFrame: Equatable, Sendable {
        case message
        /// Presence and membership news the room's clients are shown.
        case notice
        /// `member_removed`: the user's sockets leave the room before anything else of it is sent.
        case memberRemoved(UserID)
        /// `room_deleted`: every socket leaves the room after being told.
        case roomDeleted
    }

    /// A `message`, presence or membership frame of `room`; a message carries the `seq` of its
    /// `Chat-Seq` header.
    public static func roomFrame(_ payload: [UInt8], room: RoomID, seq: UInt64?) -> RoomFrame? {
        guard let fields = object(payload), case .string(room.rawValue)? = fields["room_id"], case .string(let type)? = fields["type"]
        else { return nil }
        switch type {
        case "message":
            guard let seq, case .number(let text)? = fields["seq"], UInt64(text) == seq else { return nil }
            return .message
        case "user_joined", "user_left", "member_added", "role_changed", "room_updated":
            return .notice
        case "member_removed":
            guard case .string(let text)? = fields["user_id"], let user = UserID(text) else { return nil }
            return .memberRemoved(user)
        case "room_deleted":
            return .roomDeleted
        default:
            return nil
        }
    }

    public static func isRoomFrame(_ payload: [UInt8], room: RoomID, seq: UInt64?) -> Bool {
        roomFrame(payload, room: room, seq: seq) != nil
    }

    /// What a `chat.deliver.users` frame (for the user named in `Chat-User`) is.
    public enum UserFrame: Equatable, Sendable {
        /// `added`, `removed`: shown to the user.
        case notice
        /// `muted`: also the gateway's own record, so it stops the user's typing notices (`nil`: no end).
        case muted(RoomID, untilMilliseconds: Int64?)
        case unmuted(RoomID)
    }

    public static func userFrame(_ payload: [UInt8]) -> UserFrame? {
        guard let fields = object(payload), case .string(let type)? = fields["type"], case .string(let text)? = fields["room_id"],
            let room = RoomID(text)
        else { return nil }
        switch type {
        case "added", "removed": return .notice
        case "muted":
            if case .number(let until)? = fields["until_ms"] { return Int64(until).map { .muted(room, untilMilliseconds: $0) } }
            return .muted(room, untilMilliseconds: nil)
        case "unmuted": return .unmuted(room)
        default: return nil
        }
    }

    /// A `room_created` frame (the room-wide news on `chat.deliver.rooms`).
    public static func isRoomNews(_ payload: [UInt8]) -> Bool {
        guard let fields = object(payload), case .string("room_created")? = fields["type"], case .object? = fields["room"] else {
            return false
        }
        return true
    }

    private static func object(_ payload: [UInt8]) -> JSONObject? {
        guard case .object(let fields)? = try? JSONReader.parse(payload) else { return nil }
        return fields
    }
}
