// libFuzzer target for ChatCore: the WebSocket frame decoder and every validator of untrusted text.
// Built by scripts/fuzz together with Sources/ChatCore/*.swift (one module, so internal helpers are
// reachable) with `swiftc -sanitize=fuzzer,address`; it is not part of Package.swift, so the main build
// never compiles it. Each input is fed to every target below; a violated invariant is a crash.
import Foundation

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    fuzzFrame(bytes)
    let text = String(decoding: bytes, as: UTF8.self)
    fuzzIdentifiers(text)
    fuzzNames(text)
    fuzzContent(text)
    fuzzQuery(text)
    fuzzServiceBodies(bytes)
    return 0
}

func require(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String) {
    if !condition() { fatalError("invariant violated: \(message())") }
}

/// No subject token built from a validated value may contain a wildcard, separator or whitespace.
func requireSafeToken(_ token: String) {
    require(
        !token.isEmpty
            && token.utf8.allSatisfy {
                $0 > 0x20 && $0 < 0x7f && $0 != UInt8(ascii: ".") && $0 != UInt8(ascii: "*") && $0 != UInt8(ascii: ">")
            },
        "unsafe subject token \(token.debugDescription)"
    )
}

// MARK: frames

/// The JSON a well-behaved client would send for `frame` (the inverse of `ClientFrame.parse`).
func encode(_ frame: ClientFrame) -> [UInt8] {
    var object: [String: Any] = ["type": frame.type]
    switch frame {
    case .join(let room, let since):
        object["room_id"] = room
        if let since { object["since"] = NSNumber(value: since) }
    case .leave(let room):
        if let room { object["room_id"] = room }
    case .message(let content, let room, let clientMessageID):
        object["content"] = content
        if let room { object["room_id"] = room }
        if let clientMessageID { object["client_msg_id"] = clientMessageID }
    case .history(let room, let limit, let before):
        object["room_id"] = room
        if let limit { object["limit"] = NSNumber(value: limit) }
        if let before { object["before"] = NSNumber(value: before) }
    case .members(let room, let limit, let after):
        object["room_id"] = room
        if let limit { object["limit"] = NSNumber(value: limit) }
        if let after { object["after"] = after }
    case .typing(let room):
        object["room_id"] = room
    case .roomList(let limit, let after):
        if let limit { object["limit"] = NSNumber(value: limit) }
        if let after { object["after"] = after }
    case .auth(let token):
        object["token"] = token
    }
    return Array(try! JSONSerialization.data(withJSONObject: object))
}

func fuzzFrame(_ bytes: [UInt8]) {
    do throws(ChatError) {
        let frame = try ClientFrame.parse(bytes)
        // Accepted: it re-encodes to JSON that parses to the same frame.
        let again = encode(frame)
        do throws(ChatError) {
            let reparsed = try ClientFrame.parse(again)
            require(reparsed == frame, "re-encoded frame differs: \(frame) vs \(reparsed)")
        } catch {
            fatalError("re-encoded frame refused: \(frame) → \(String(decoding: again, as: UTF8.self)): \(error)")
        }
        if let text = frame.roomID, let room = RoomID(text) {
            for subject in [ChatNames.messageSubject(room), ChatNames.deliverySubject(room), ChatNames.typingSubject(room)] {
                subject.split(separator: ".").forEach { requireSafeToken(String($0)) }
            }
        }
        if case .message(_, _, let id?) = frame, let valid = ClientMessageID(id) { requireSafeToken(valid.rawValue) }
    } catch {
        // Refused: an invalid_request with a short, non-empty explanation, and the error frame is JSON.
        require(error.code == .invalidRequest, "parse failed with \(error.code)")
        require(!error.error.isEmpty && error.error.utf8.count <= 400, "error text of \(error.error.utf8.count) bytes")
        let frame = ServerFrame.error(error, roomID: "r")
        guard let object = try? JSONSerialization.jsonObject(with: Data(frame)) as? [String: Any] else {
            fatalError("error frame is not a JSON object: \(String(decoding: frame, as: UTF8.self))")
        }
        require(object["type"] as? String == "error" && object["code"] as? String == "invalid_request", "error frame \(object)")
    }
}

// MARK: identifiers and names

func fuzzIdentifiers(_ text: String) {
    if let room = RoomID(text) {
        require(room.rawValue.utf8.count == 36 && RoomID(room.rawValue) == room, "room id \(room.rawValue)")
        require(room.rawValue.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) || $0 == 0x2d }, "room id chars")
        requireSafeToken(room.rawValue)
    }
    if let user = UserID(text) { require(UserID(user.rawValue) == user, "user id round trip") }
    for valid in [GatewayID(text)?.rawValue, ClientMessageID(text)?.rawValue].compactMap({ $0 }) {
        require(valid.utf8.count <= 64, "token too long")
        requireSafeToken(valid)
    }
}

func checkName(_ name: String, maxLength: Int, maxBytes: Int) {
    require(!name.isEmpty && name.count <= maxLength && name.utf8.count <= maxBytes, "name length \(name.count)/\(name.utf8.count)")
    require(!name.unicodeScalars.contains(where: isForbiddenInName), "forbidden character in \(name.debugDescription)")
    require(!name.first!.isWhitespace && !name.last!.isWhitespace, "untrimmed \(name.debugDescription)")
}

func fuzzNames(_ text: String) {
    if let username = Username(text) {
        checkName(username.rawValue, maxLength: Username.maxLength, maxBytes: Username.maxBytes)
        require(Username(username.rawValue) == username, "username not idempotent: \(username.rawValue.debugDescription)")
        let key = ChatNames.idempotencyKey(RoomID.random(), .username(username), ClientMessageID("c")!)
        key.split(separator: ".").forEach { requireSafeToken(String($0)) }
    }
    if let name = RoomName(text) {
        checkName(name.rawValue, maxLength: RoomName.maxLength, maxBytes: RoomName.maxBytes)
        require(RoomName(name.rawValue) == name, "room name not idempotent")
        let key = ChatNames.roomNameKey(name)
        require(
            key.hasPrefix("name.") && key.dropFirst(5).utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) },
            "name key \(key)"
        )
    }
}

func fuzzContent(_ text: String) {
    do throws(ChatError) {
        try MessageContent.validate(text, maxBytes: 4096)
        require(text.utf8.count <= 4096 && !text.allSatisfy(\.isWhitespace), "accepted content breaks the size/empty rule")
        require(!text.unicodeScalars.contains(where: MessageContent.isForbiddenInContent), "accepted content with a control character")
    } catch {
        require(error.code == .contentInvalid || error.code == .contentTooLong, "content refused with \(error.code)")
    }
}

// MARK: query strings

func fuzzQuery(_ text: String) {
    for (_, value) in FormQuery.parse(text) {
        if let value {
            // Percent-encoding every byte of a decoded value decodes back to it.
            let encoded = value.utf8.map { ($0 < 16 ? "%0" : "%") + String($0, radix: 16) }.joined()
            require(FormQuery.decode(Array(encoded.utf8)) == value, "percent round trip of \(value.debugDescription)")
        }
    }
    let half = text.firstIndex(of: "&") ?? text.endIndex
    do throws(ChatError) {
        let parsed = try HistoryQuery.parse(
            limit: String(text[..<half]),
            before: half == text.endIndex ? nil : String(text[text.index(after: half)...])
        )
        if let limit = parsed.limit {
            require(limit >= 1 && String(limit) == String(text[..<half]).drop { $0 == "0" }.description, "limit \(limit)")
        }
    } catch {
        require(error.code == .invalidRequest, "history query refused with \(error.code)")
    }
}

// MARK: chat-service request bodies and stream events

func fuzzServiceBodies(_ bytes: [UInt8]) {
    func decode<T: Decodable>(_ type: T.Type) {
        do throws(ChatError) { _ = try ChatJSON.decode(type, from: bytes) } catch {
            require(error.code == .invalidRequest, "body refused with \(error.code)")
        }
    }
    decode(ServiceAPI.CreateRoom.self)
    decode(ServiceAPI.Join.self)
    decode(ServiceAPI.Send.self)
    decode(ServiceAPI.History.self)
    decode(ServiceAPI.Heartbeat.self)
    decode(ServiceAPI.UpdateRoom.self)
    decode(ServiceAPI.MemberChange.self)
    decode(ServiceAPI.Restrict.self)
    let types = [
        "MessageSent.v1", "UserJoined.v1", "UserLeft.v1", "RoomCreated.v1", "MemberAdded.v1", "MemberRemoved.v1", "RoleChanged.v1",
        "RoomUpdated.v1", "RoomDeleted.v1", "UserMuted.v1", "UserUnmuted.v1", "UserUnbanned.v1", "x",
    ]
    for type in types {
        if let event = ServerFrame.forEvent(type: type, payload: bytes) {
            for frame in [event.frame, event.forUser?.frame].compactMap({ $0 }) {
                let object = try? JSONSerialization.jsonObject(with: Data(frame)) as? [String: Any]
                require(object?["type"] is String, "event frame without type")
            }
        }
    }
    _ = DeliveryCheck.userFrame(bytes)
    if let room = RoomID("00000000-0000-4000-8000-000000000000") { _ = DeliveryCheck.roomFrame(bytes, room: room, seq: 1) }
}
