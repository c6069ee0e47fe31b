/// Stable machine-readable error codes, shared by the chat-service replies, REST and WebSocket errors.
public enum ChatErrorCode: String, Codable, Sendable, CaseIterable {
    case invalidRequest = "invalid_request"
    case roomNotFound = "room_not_found"
    case roomExists = "room_exists"
    case notMember = "not_member"
    case notInRoom = "not_in_room"
    case contentTooLong = "content_too_long"
    case contentInvalid = "content_invalid"
    case nameInvalid = "name_invalid"
    case usernameInvalid = "username_invalid"
    case tooManyRooms = "too_many_rooms"
    /// The chat-service's `CHAT_MAX_ROOMS` is reached: no new rooms.
    case roomLimitReached = "room_limit_reached"
    /// `MAX_CONNECTIONS_PER_IP`: this client address has too many WebSockets open on this gateway.
    case tooManyConnections = "too_many_connections"
    /// `MAX_CONNECTIONS`: this gateway holds as many WebSockets as it may.
    case serverFull = "server_full"
    case rateLimited = "rate_limited"
    case frameTooLarge = "frame_too_large"
    case unauthorized
    /// An `auth` frame on a socket in username mode: there is no token to refresh.
    case authNotEnabled = "auth_not_enabled"
    case forbidden
    /// A REST write whose body is not `application/json`.
    case unsupportedMediaType = "unsupported_media_type"
    case notFound = "not_found"
    /// Private rooms, direct messages, management and the directory need a verified user (token mode).
    case authRequired = "auth_required"
    /// Banned from the room: cannot join it (`until` when the ban ends).
    case banned
    /// Muted in the room: may read, may not send (`until`).
    case muted
    /// The room is archived: read-only.
    case roomArchived = "room_archived"
    /// `CHAT_MAX_ROSTER`: the room's roster is full.
    case rosterFull = "roster_full"
    /// `CHAT_MAX_OWNED_ROOMS`: the user owns as many rooms as they may.
    case ownedRoomLimit = "owned_room_limit"
    /// The user id is not in the directory (has never used the system with a token).
    case userNotFound = "user_not_found"
    case unavailable
    case `internal`

    /// The HTTP status for REST and for `Nats-Service-Error-Code`.
    public var httpStatus: Int {
        switch self {
        case .invalidRequest, .authNotEnabled, .contentTooLong, .contentInvalid, .nameInvalid, .usernameInvalid, .notInRoom, .frameTooLarge:
            400
        case .unauthorized, .authRequired: 401
        case .forbidden, .notMember, .banned, .muted, .roomArchived: 403
        case .roomNotFound, .notFound, .userNotFound: 404
        case .roomExists, .rosterFull, .ownedRoomLimit: 409
        case .unsupportedMediaType: 415
        case .tooManyRooms, .roomLimitReached: 409
        case .rateLimited, .tooManyConnections: 429
        case .unavailable, .serverFull: 503
        case .internal: 500
        }
    }
}

public struct ChatError: Error, Codable, Sendable, Equatable, CustomStringConvertible {
    public var code: ChatErrorCode
    public var error: String
    /// With `room_exists`: the room that already has the name.
    public var room: Room?
    /// With `muted` / `banned`: when it ends (RFC 3339); absent when it lasts until lifted.
    public var until: String?

    public init(_ code: ChatErrorCode, _ error: String, room: Room? = nil, until: String? = nil) {
        self.code = code
        self.error = error
        self.room = room
        self.until = until
    }

    public var description: String { "\(code.rawValue): \(error)" }
}
