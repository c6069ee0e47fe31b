/// What a gateway checks of a delivery before its bytes go to sockets. Deliveries are frames the
/// broadcaster built from stored events (only the broadcaster user may publish `chat.deliver.>`), and
/// the gateway forwards them without re-encoding; this check is what keeps anything else — a
/// misconfigured publisher, a frame for another room — from reaching a client. Once per event and
/// gateway, not per socket.
public enum DeliveryCheck {
    /// A `message`, `user_joined` or `user_left` frame of `room`; a message carries the `seq` of its
    /// `Chat-Seq` header.
    public static func isRoomFrame(_ payload: [UInt8], room: RoomID, seq: UInt64?) -> Bool {
        guard let fields = object(payload), case .string(room.rawValue)? = fields["room_id"], case .string(let type)? = fields["type"]
        else { return false }
        switch type {
        case "message":
            guard let seq, case .number(let text)? = fields["seq"] else { return false }
            return UInt64(text) == seq
        case "user_joined", "user_left":
            return true
        default:
            return false
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
