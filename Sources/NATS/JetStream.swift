import Foundation

/// JetStream over the JSON API (`$JS.API.>`), using the connection's non-blocking request path, so
/// publishes pipeline and no thread waits for an acknowledgement.
public struct JetStream: Sendable {
    public let connection: NATSConnection

    public init(connection: NATSConnection) { self.connection = connection }

    private static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }()

    // MARK: API plumbing

    func api<Response: Decodable>(_ subject: String, body: (some Encodable)?, as type: Response.Type) async throws(NATSError) -> Response {
        var payload: [UInt8] = []
        if let body {
            do { payload = Array(try Self.encoder.encode(body)) } catch { throw NATSError.invalid("encode \(subject): \(error)") }
        }
        let reply: NATSMessage
        do {
            reply = try await connection.request("$JS.API." + subject, payload: payload)
        } catch  where error.kind == .noResponders {
            throw NATSError(.jetStream, status: error.status, message: "JetStream not enabled or not reachable (\(subject))")
        }
        return try Self.decode(reply.payload, as: Response.self, context: subject)
    }

    static func decode<Response: Decodable>(_ payload: [UInt8], as type: Response.Type, context: String) throws(NATSError) -> Response {
        let data = Data(payload)
        let decoder = JSONDecoder()
        if let envelope = try? decoder.decode(APIErrorEnvelope.self, from: data), let error = envelope.error {
            let code = error.errCode ?? 0
            let kind: NATSError.Kind =
                code == JetStreamErrorCode.wrongLastSequence
                ? .wrongLastSequence
                : (error.code == 404 ? .notFound : .jetStream)
            throw NATSError(kind, jetStreamCode: code, message: "\(context): \(error.description ?? "error \(error.code)")")
        }
        do {
            return try decoder.decode(Response.self, from: data)
        } catch {
            throw NATSError(.protocolError, message: "\(context): unexpected reply \(String(decoding: payload.prefix(200), as: UTF8.self))")
        }
    }
}
