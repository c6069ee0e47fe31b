import ChatCore
import HTTPTypes
import Hummingbird
import NIOCore

/// An HTTP error answered as `{"error": text, "code": code}` (plus `room` for `room_exists`).
struct GatewayHTTPError: HTTPResponseError {
    let status: HTTPResponse.Status
    let error: ChatError
    /// Extra response fields (`Allow` of a 405).
    var headers: HTTPFields = [:]

    init(_ status: HTTPResponse.Status, _ error: ChatError, headers: HTTPFields = [:]) {
        self.status = status
        self.error = error
        self.headers = headers
    }

    init(_ error: ChatError) {
        self.init(HTTPResponse.Status(code: error.code.httpStatus), error)
    }

    func response(from request: Request, context: some RequestContext) throws -> Response {
        var fields: HTTPFields = [.contentType: "application/json", .init("X-Content-Type-Options")!: "nosniff"]
        fields.append(contentsOf: headers)
        return Response(status: status, headers: fields, body: .init(byteBuffer: ByteBuffer(bytes: ChatJSON.encode(error))))
    }
}
