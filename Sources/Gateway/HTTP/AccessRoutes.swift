import ChatCore
import Hummingbird

/// Room management, rosters, moderation, direct rooms and the user directory (docs/rest.md#rooms-people-own).
/// The gateway only shapes requests: the chat-service decides every one from the caller's token, and
/// ids in a body name whom an operation acts on, never who the caller is.
func addAccessRoutes(to api: RouterGroup<GatewayRequestContext>, core: GatewayCore) {
    api.patch("rooms/:id") { request, context -> Response in
        struct Body: Decodable {
            var name: String?
            var topic: String?
            var archived: Bool?
        }
        let body: Body = try await REST.json(request, context, core)
        let update = ServiceAPI.UpdateRoom(
            roomID: try REST.roomID(context).rawValue,
            name: body.name,
            topic: body.topic,
            archived: body.archived
        )
        let room: Room = try await REST.call(core, .updateRoom, update, for: request)
        return REST.reply(ChatJSON.encode(room))
    }
    api.delete("rooms/:id") { request, context -> Response in
        let ok: ServiceAPI.Ok = try await REST.call(
            core,
            .deleteRoom,
            ServiceAPI.RoomRef(roomID: try REST.roomID(context).rawValue),
            for: request
        )
        return REST.reply(ChatJSON.encode(ok))
    }
    api.get("rooms/:id/members") { request, context -> Response in
        let query = FormQuery.parse(request.uri.query ?? "")
        let page: (limit: Int?, after: String?)
        do throws(ChatError) {
            page = try PageQuery.parse(limit: query["limit"].map { $0 ?? "" }, after: query["after"].map { $0 ?? "" })
        } catch {
            throw GatewayHTTPError(error)
        }
        let list: ServiceAPI.MemberList = try await REST.call(
            core,
            .members,
            ServiceAPI.ListMembers(roomID: try REST.roomID(context).rawValue, limit: page.limit, after: page.after),
            for: request
        )
        return REST.reply(ChatJSON.encode(list))
    }
    api.post("rooms/:id/members") { request, context -> Response in
        struct Body: Decodable {
            var user_id: String
            var role: String?
        }
        let body: Body = try await REST.json(request, context, core)
        let change = ServiceAPI.MemberChange(roomID: try REST.roomID(context).rawValue, userID: body.user_id, role: body.role)
        let entry: RosterEntry = try await REST.call(core, .invite, change, for: request)
        return REST.reply(ChatJSON.encode(entry), status: .created)
    }
    api.delete("rooms/:id/members/:user_id") { request, context -> Response in
        let change = ServiceAPI.MemberChange(roomID: try REST.roomID(context).rawValue, userID: try REST.userID(context))
        let ok: ServiceAPI.Ok = try await REST.call(core, .removeMember, change, for: request)
        return REST.reply(ChatJSON.encode(ok))
    }
    api.put("rooms/:id/members/:user_id") { request, context -> Response in
        struct Body: Decodable { var role: String }
        let body: Body = try await REST.json(request, context, core)
        let change = ServiceAPI.MemberChange(roomID: try REST.roomID(context).rawValue, userID: try REST.userID(context), role: body.role)
        let entry: RosterEntry = try await REST.call(core, .setRole, change, for: request)
        return REST.reply(ChatJSON.encode(entry))
    }
    for (path, add, lift) in [("bans", ChatNames.Endpoint.ban, ChatNames.Endpoint.unban), ("mutes", .mute, .unmute)] {
        api.post("rooms/:id/\(path)") { request, context -> Response in
            struct Body: Decodable {
                var user_id: String
                var seconds: Int?
            }
            let body: Body = try await REST.json(request, context, core)
            let restrict = ServiceAPI.Restrict(roomID: try REST.roomID(context).rawValue, userID: body.user_id, seconds: body.seconds)
            let result: ServiceAPI.RestrictionResult = try await REST.call(core, add, restrict, for: request)
            return REST.reply(ChatJSON.encode(result), status: .created)
        }
        api.delete("rooms/:id/\(path)/:user_id") { request, context -> Response in
            let restrict = ServiceAPI.Restrict(roomID: try REST.roomID(context).rawValue, userID: try REST.userID(context))
            let ok: ServiceAPI.Ok = try await REST.call(core, lift, restrict, for: request)
            return REST.reply(ChatJSON.encode(ok))
        }
    }
    api.post("dms") { request, context -> Response in
        struct Body: Decodable { var user_id: String }
        let body: Body = try await REST.json(request, context, core)
        let room: Room = try await REST.call(core, .openDirect, ServiceAPI.OpenDirect(userID: body.user_id), for: request)
        return REST.reply(ChatJSON.encode(room))
    }
    api.get("users") { request, context -> Response in
        try REST.limitDirectory(request, context, core)
        let query = FormQuery.parse(request.uri.query ?? "")
        let limit: Int?
        do throws(ChatError) {
            limit = try PageQuery.parse(limit: query["limit"].map { $0 ?? "" }, after: nil).limit
        } catch {
            throw GatewayHTTPError(error)
        }
        let search = ServiceAPI.SearchUsers(prefix: query["prefix"].flatMap { $0 }, limit: limit, after: query["after"].flatMap { $0 })
        let list: ServiceAPI.UserList = try await REST.call(core, .searchUsers, search, for: request)
        return REST.reply(ChatJSON.encode(list))
    }
    api.get("users/:user_id") { request, context -> Response in
        try REST.limitDirectory(request, context, core)
        let user: DirectoryUser = try await REST.call(core, .getUser, ServiceAPI.UserRef(userID: try REST.userID(context)), for: request)
        return REST.reply(ChatJSON.encode(user))
    }
}

extension REST {
    /// The JSON body of a management request, decoded into the route's own fields (others are ignored).
    static func json<T: Decodable>(
        _ request: Request,
        _ context: GatewayRequestContext,
        _ core: GatewayCore
    ) async throws(GatewayHTTPError) -> T {
        let body = try await REST.body(of: request, upTo: context.maxUploadSize, within: core.configuration.requestBodyTimeout)
        do throws(ChatError) {
            return try JSONBody.decode(T.self, from: body)
        } catch {
            throw GatewayHTTPError(error)
        }
    }

    static func userID(_ context: GatewayRequestContext) throws(GatewayHTTPError) -> String {
        guard let text = context.parameters.get("user_id"), UserID(text) != nil else {
            throw GatewayHTTPError(.notFound, ChatError(.userNotFound, "user not found (user ids are UUIDs)"))
        }
        return text
    }

    /// `USER_DIRECTORY_PER_MIN` per client address: 429 `rate_limited` with `Retry-After`.
    static func limitDirectory(_ request: Request, _ context: GatewayRequestContext, _ core: GatewayCore) throws(GatewayHTTPError) {
        let address = core.connectionLimiter.clientAddress(request, channel: context.channel)
        guard case .limited(let retryAfter) = core.limits.directoryLookups.take(address) else { return }
        core.metrics.error(.rateLimited).increment()
        let seconds = String((retryAfter + 999) / 1000)
        throw GatewayHTTPError(
            .tooManyRequests,
            ChatError(.rateLimited, "too many directory lookups; try again in \(seconds) s"),
            headers: [.retryAfter: seconds]
        )
    }
}
