/// Every failure of the NATS layer. `status` is the libnats `natsStatus` code (0 when the error did not
/// come from libnats); `jetStreamCode` is the server's JetStream `err_code` when the server sent one.
public struct NATSError: Error, Sendable, CustomStringConvertible, Equatable {
    public enum Kind: String, Sendable {
        case timeout
        case noResponders = "no_responders"
        case connectionClosed = "connection_closed"
        case notConnected = "not_connected"
        case notFound = "not_found"
        case invalidArgument = "invalid_argument"
        case jetStream = "jetstream"
        case wrongLastSequence = "wrong_last_sequence"
        case protocolError = "protocol"
        case illegalState = "illegal_state"
        case cancelled
        case other
    }

    public var kind: Kind
    public var status: Int32
    public var jetStreamCode: Int
    public var message: String

    public init(_ kind: Kind, status: Int32 = 0, jetStreamCode: Int = 0, message: String) {
        self.kind = kind
        self.status = status
        self.jetStreamCode = jetStreamCode
        self.message = message
    }

    public var description: String {
        var text = "NATSError.\(kind.rawValue)"
        if status != 0 { text += " (natsStatus \(status))" }
        if jetStreamCode != 0 { text += " (err_code \(jetStreamCode))" }
        return text + ": " + message
    }

    static func invalid(_ message: String) -> NATSError { NATSError(.invalidArgument, message: message) }
}
