/// A typing notice as it crosses NATS (`chat.typing.<room>`, published by gateways). Any holder of a
/// gateway credential can publish there, so a receiving gateway never forwards the bytes it got: it
/// decodes them, checks every field and writes a fresh `typing` frame (`ServerFrame.typing`). Anything
/// else — another frame type, a foreign room, a malformed id or name, extra fields — is dropped.
public struct TypingNotice: Sendable, Equatable {
    public var userID: UserID
    public var username: Username

    public init(userID: UserID, username: Username) {
        self.userID = userID
        self.username = username
    }

    /// The wire form: the `typing` frame itself, so gateways of either side of an upgrade understand it.
    public func encoded(room: RoomID) -> [UInt8] {
        ServerFrame.typing(roomID: room, userID: userID, username: username.rawValue)
    }

    /// The notice in `payload` if it is exactly a valid `typing` frame for `room`: the four string
    /// fields and nothing else.
    public static func decode(_ payload: [UInt8], room: RoomID) -> TypingNotice? {
        guard payload.count <= 1024, let fields = try? ChatJSON.decode([String: String].self, from: payload), fields.count == 4,
            fields["type"] == "typing", fields["room_id"] == room.rawValue,
            let user = fields["user_id"].flatMap(UserID.init), let name = fields["username"].flatMap(Username.init)
        else { return nil }
        return TypingNotice(userID: user, username: name)
    }
}
