import ChatCore
import Hummingbird
import Metrics
import NIOCore
import ServiceSupport

/// JSON helpers of the REST routes.
enum REST {
    static func reply(_ bytes: [UInt8], status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    /// `request`: the client's request, whose `Authorization: Bearer` token (token mode) goes to the
    /// chat-service, which decides what the caller may see and do; without one the caller is anonymous.
    static func call<T: Decodable>(
        _ core: GatewayCore,
        _ endpoint: ChatNames.Endpoint,
        _ body: some Encodable,
        for request: Request
    ) async throws(GatewayHTTPError) -> T {
        do {
            let token = core.auth.requiresToken ? Authenticator.bearerToken(request) : nil
            return try await core.chat.call(endpoint, body, userToken: token?.isEmpty == true ? nil : token)
        } catch {
            core.metrics.error(error.code).increment()
            throw GatewayHTTPError(error)
        }
    }

    private static let bodyTimeouts = Counter(label: "gateway_request_body_timeouts_total")

    /// The request body, at most `limit` bytes, complete within `timeout` of starting to read it. A
    /// client that trickles its body (a slowloris past the head; each byte resets the idle timeout)
    /// gets 408 `Connection: close`, after which the connection closes (`RequestBodyDeadlineHandler`
    /// closes it a second later if nothing else did).
    static func body(of request: Request, upTo limit: Int, within timeout: Duration) async throws(GatewayHTTPError) -> ByteBuffer {
        enum Outcome: Sendable {
            case body(ByteBuffer)
            case tooLarge, unreadable, timedOut
        }
        let outcome = await withTaskGroup(of: Outcome.self) { group in
            group.addTask {
                var request = request
                do {
                    return .body(try await request.collectBody(upTo: limit))
                } catch is NIOTooManyBytesError {
                    return .tooLarge
                } catch {
                    return .unreadable  // the connection failed or closed mid-body
                }
            }
            group.addTask {
                do {
                    try await Task.sleep(for: timeout)
                    return .timedOut
                } catch {
                    return .unreadable  // cancelled: the body came first, or the server is stopping
                }
            }
            let first = await group.next() ?? .timedOut
            group.cancelAll()
            return first
        }
        switch outcome {
        case .body(let body): return body
        case .tooLarge: throw GatewayHTTPError(.contentTooLarge, ChatError(.invalidRequest, "request body larger than \(limit) bytes"))
        case .unreadable: throw GatewayHTTPError(.badRequest, ChatError(.invalidRequest, "request body could not be read"))
        case .timedOut:
            bodyTimeouts.increment()
            throw GatewayHTTPError(
                .requestTimeout,
                ChatError(.invalidRequest, "request body not complete within \(timeout.inMilliseconds) ms"),
                headers: [.connection: "close"]
            )
        }
    }

    /// `ROOM_CREATE_PER_MIN` per client address and, in token mode, per verified user (`WriteGuard`):
    /// 429 `rate_limited` with `Retry-After`.
    static func limitRoomCreation(
        _ request: Request,
        _ context: GatewayRequestContext,
        _ core: GatewayCore,
        user: String? = nil
    ) throws(GatewayHTTPError) {
        let address = core.connectionLimiter.clientAddress(request, channel: context.channel)
        guard case .limited(let retryAfter) = core.limits.createRoom(address: address, user: user) else { return }
        core.metrics.error(.rateLimited).increment()
        throw GatewayHTTPError(
            .tooManyRequests,
            ChatError(.rateLimited, "too many rooms created; try again in \((retryAfter + 999) / 1000) s"),
            headers: [.retryAfter: String((retryAfter + 999) / 1000)]
        )
    }

    static func roomID(_ context: GatewayRequestContext) throws(GatewayHTTPError) -> RoomID {
        guard let text = context.parameters.get("id"), let id = RoomID(text) else {
            throw GatewayHTTPError(.notFound, ChatError(.roomNotFound, "room not found (room ids are UUIDs)"))
        }
        return id
    }
}

func addRESTRoutes(to router: Router<GatewayRequestContext>, core: GatewayCore) {
    let api = router.group("api/v1").add(middleware: WriteGuard(auth: core.auth))
    api.get("rooms") { request, _ -> Response in
        let query = FormQuery.parse(request.uri.query ?? "")
        let page: (limit: Int?, after: String?)
        do throws(ChatError) {
            page = try PageQuery.parse(limit: query["limit"].map { $0 ?? "" }, after: query["after"].map { $0 ?? "" })
        } catch {
            throw GatewayHTTPError(error)
        }
        let list: ServiceAPI.RoomList = try await REST.call(
            core,
            .listRooms,
            ServiceAPI.ListRooms(limit: page.limit, after: page.after),
            for: request
        )
        return REST.reply(ChatJSON.encode(list))
    }
    api.post("rooms") { request, context -> Response in
        try REST.limitRoomCreation(request, context, core, user: context.verifiedUserID?.rawValue)
        let body = try await REST.body(of: request, upTo: context.maxUploadSize, within: core.configuration.requestBodyTimeout)
        let create: ServiceAPI.CreateRoom
        do throws(ChatError) {
            create = try JSONBody.decode(ServiceAPI.CreateRoom.self, from: body)
        } catch {
            throw GatewayHTTPError(error)
        }
        let endpoint: ChatNames.Endpoint = (create.visibility ?? "public") == "public" ? .createRoom : .createPrivateRoom
        let room: Room = try await REST.call(core, endpoint, create, for: request)
        return REST.reply(ChatJSON.encode(room), status: .created)
    }
    api.get("rooms/:id") { request, context -> Response in
        let room: Room = try await REST.call(core, .getRoom, ServiceAPI.RoomRef(roomID: try REST.roomID(context).rawValue), for: request)
        return REST.reply(ChatJSON.encode(room))
    }
    api.get("rooms/:id/history") { request, context -> Response in
        let id = try REST.roomID(context)
        let query = FormQuery.parse(request.uri.query ?? "")
        let limit: Int?
        let before: UInt64?
        do throws(ChatError) {
            (limit, before) = try HistoryQuery.parse(limit: query["limit"].map { $0 ?? "" }, before: query["before"].map { $0 ?? "" })
        } catch {
            throw GatewayHTTPError(error)
        }
        let result: ServiceAPI.HistoryResult = try await REST.call(
            core,
            .history,
            ServiceAPI.History(roomID: id.rawValue, limit: limit, before: before),
            for: request
        )
        struct Body: Encodable {
            var room_id: RoomID
            var messages: [ChatMessage]
            var has_more: Bool
        }
        return REST.reply(ChatJSON.encode(Body(room_id: result.roomID, messages: result.messages, has_more: result.hasMore)))
    }
    addAccessRoutes(to: api, core: core)
}
