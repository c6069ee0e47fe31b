// Every call into libnats lives in this folder; the rest of the NATS module is plain Swift.
import CNATS

#if canImport(Glibc)
import Glibc
#endif

enum LibNATS {
    /// libnats keeps global state (timers, the delivery pool); open it once per process.
    static let opened: Void = {
        _ = nats_Open(-1)
    }()

    static var version: String { String(cString: nats_GetVersion()) }

    /// Wraps a non-OK status with the thread-local last error text libnats recorded for it.
    static func error(_ status: natsStatus, _ context: String) -> NATSError {
        var lastStatus = NATS_OK
        let detail = nats_GetLastError(&lastStatus).map { String(cString: $0) } ?? ""
        let text = String(cString: natsStatus_GetText(status))
        let message = detail.isEmpty || detail == text ? "\(context): \(text)" : "\(context): \(text) — \(detail)"
        return NATSError(kind(of: status), status: Int32(status.rawValue), message: message)
    }

    static func check(_ status: natsStatus, _ context: @autoclosure () -> String) throws(NATSError) {
        if status != NATS_OK { throw error(status, context()) }
    }

    static func kind(of status: natsStatus) -> NATSError.Kind {
        switch status {
        case NATS_TIMEOUT: .timeout
        case NATS_NO_RESPONDERS: .noResponders
        case NATS_CONNECTION_CLOSED: .connectionClosed
        case NATS_NOT_YET_CONNECTED, NATS_CONNECTION_DISCONNECTED: .notConnected
        case NATS_NOT_FOUND: .notFound
        case NATS_ILLEGAL_STATE: .illegalState
        case NATS_INVALID_ARG, NATS_INVALID_SUBJECT: .invalidArgument
        default: .other
        }
    }

    /// Destroys a message, freeing it on this thread.
    ///
    /// `natsMsg_Destroy` hands every message libnats allocated (received ones, and those built to publish
    /// with headers) to the library's garbage-collector thread, and wakes that thread whenever it is
    /// idle: on a busy service, a futex wake-up and a context switch per message, with the memory freed
    /// on another thread than the one that allocated it. A message opens with libnats' `natsGCItem
    /// { next, freeCb }`; when the second word holds the address of libnats' own `natsMsg_free`, clearing
    /// it makes `natsMsg_Destroy` call `natsMsg_free` here, which is what the collector would have done.
    /// The check is on that value, not on a version: were the layout different, the word would not
    /// hold that address and the message would take the collector's path as before.
    static func destroy(_ msg: OpaquePointer) {
        if natsMsgFree != 0 {
            let slot = UnsafeMutableRawPointer(msg).advanced(by: MemoryLayout<UInt>.stride)
            if slot.load(as: UInt.self) == natsMsgFree { slot.storeBytes(of: 0, as: UInt.self) }
        }
        natsMsg_Destroy(msg)
    }

    /// Whether `destroy` frees this message itself (tests check the layout assumption still holds).
    static func destroyFreesDirectly(_ msg: OpaquePointer) -> Bool {
        natsMsgFree != 0 && UnsafeRawPointer(msg).load(fromByteOffset: MemoryLayout<UInt>.stride, as: UInt.self) == natsMsgFree
    }

    /// The address of libnats' `natsMsg_free` (0 if it cannot be found: then messages take the collector's path).
    private static let natsMsgFree: UInt = dlsym(nil, "natsMsg_free").map { UInt(bitPattern: $0) } ?? 0

    /// Copies a libnats message into Swift values. Does not destroy `msg`.
    static func copyMessage(_ msg: OpaquePointer) -> NATSMessage {
        let subject = String(cString: natsMsg_GetSubject(msg))
        let reply = natsMsg_GetReply(msg).flatMap { $0.pointee == 0 ? nil : String(cString: $0) }
        let length = Int(natsMsg_GetDataLength(msg))
        let payload: [UInt8]
        if length > 0, let data = natsMsg_GetData(msg) {
            payload = [UInt8](UnsafeRawBufferPointer(start: data, count: length))
        } else {
            payload = []
        }
        return NATSMessage(subject: subject, reply: reply, headers: copyHeaders(msg), payload: payload)
    }

    static func copyHeaders(_ msg: OpaquePointer) -> NATSHeaders {
        var keys: UnsafeMutablePointer<UnsafePointer<CChar>?>? = nil
        var count: Int32 = 0
        guard natsMsgHeader_Keys(msg, &keys, &count) == NATS_OK, let keys else { return NATSHeaders() }
        var headers = NATSHeaders(capacity: Int(count))
        defer { free(UnsafeMutableRawPointer(keys)) }
        for index in 0..<Int(count) {
            guard let keyPointer = keys[index] else { continue }
            var values: UnsafeMutablePointer<UnsafePointer<CChar>?>? = nil
            var valueCount: Int32 = 0
            guard natsMsgHeader_Values(msg, keyPointer, &values, &valueCount) == NATS_OK, let values else { continue }
            let key = String(cString: keyPointer)
            for valueIndex in 0..<Int(valueCount) {
                if let value = values[valueIndex] { headers.add(key, String(cString: value)) }
            }
            free(UnsafeMutableRawPointer(values))
        }
        return headers
    }

    /// Builds a libnats message with headers; the caller publishes and destroys it.
    static func makeMessage(
        subject: String,
        reply: String?,
        headers: NATSHeaders,
        payload: UnsafeRawBufferPointer
    ) throws(NATSError) -> OpaquePointer {
        var msg: OpaquePointer? = nil
        let status = payload.withMemoryRebound(to: CChar.self) { bytes in
            natsMsg_Create(&msg, subject, reply, bytes.baseAddress, Int32(bytes.count))
        }
        try check(status, "create message for \(subject)")
        guard let msg else { throw NATSError(.other, message: "natsMsg_Create returned no message") }
        for (key, value) in headers.entries {
            let status = natsMsgHeader_Add(msg, key, value)
            if status != NATS_OK {
                destroy(msg)
                throw error(status, "set header \(key)")
            }
        }
        return msg
    }

    /// `<prefix>.<unique>`: the unique part is libnats' NUID (what follows `_INBOX.` in its own inboxes).
    static func newInbox(prefix: String) -> String {
        var inbox: UnsafeMutablePointer<natsInbox>? = nil
        guard natsInbox_Create(&inbox) == NATS_OK, let inbox else {
            return "\(prefix).\(UInt64.random(in: 0...UInt64.max))"
        }
        defer { natsInbox_Destroy(inbox) }
        let made = String(cString: UnsafeRawPointer(inbox).assumingMemoryBound(to: CChar.self))
        return prefix + "." + (made.split(separator: ".").last.map(String.init) ?? made)
    }
}
