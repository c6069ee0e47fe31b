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
    case forbidden
    /// A REST write whose body is not `application/json`.
    case unsupportedMediaType = "unsupported_media_type"
    case notFound = "not_found"
    case unavailable
    case `internal`

    /// The HTTP status for REST and for `Nats-Service-Error-Code`.
    public var httpStatus: Int {
        switch self {
        case .invalidRequest, .contentTooLong, .contentInvalid, .nameInvalid, .usernameInvalid, .notInRoom, .frameTooLarge: 400
        case .unauthorized: 401
        case .forbidden, .notMember: 403
        case .roomNotFound, .notFound: 404
        case .roomExists: 409
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

    public init(_ code: ChatErrorCode, _ error: String, room: Room? = nil) {
        self.code = code
        self.error = error
        self.room = room
    }

    public var description: String { "\(code.rawValue): \(error)" }
}
