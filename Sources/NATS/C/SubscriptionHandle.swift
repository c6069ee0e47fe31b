import CNATS

#if canImport(Glibc)
import Glibc
#endif

/// What a subscription does with each message and when libnats is done with it. Handed to C as the
/// callback closure; released in the on-complete callback, after which libnats never calls it again.
final class SubscriptionContext: Sendable {
    let onMessage: @Sendable (NATSMessage) -> Void
    let onComplete: @Sendable () -> Void

    init(onMessage: @escaping @Sendable (NATSMessage) -> Void, onComplete: @escaping @Sendable () -> Void) {
        self.onMessage = onMessage
        self.onComplete = onComplete
    }
}

/// Owns a `natsSubscription*`.
///
/// `@unchecked Sendable` is safe because libnats subscriptions carry their own lock and every function used
/// here (`Unsubscribe`, `Drain`, `GetDropped`, `Destroy`) may be called from any thread.
final class SubscriptionHandle: @unchecked Sendable {
    let pointer: OpaquePointer

    private init(pointer: OpaquePointer) { self.pointer = pointer }

    deinit {
        _ = natsSubscription_Unsubscribe(pointer)
        natsSubscription_Destroy(pointer)
    }

    /// Subscribes with a C callback that runs `context.onMessage` on a libnats delivery thread.
    static func subscribe(
        connection: ConnectionHandle,
        subject: String,
        queue: String?,
        pendingLimit: Int,
        context: SubscriptionContext
    ) throws(NATSError) -> SubscriptionHandle {
        let closure = Unmanaged.passRetained(context).toOpaque()
        let callback: natsMsgHandler = { _, _, msg, closure in
            guard let msg else { return }
            guard let closure else {
                LibNATS.destroy(msg)
                return
            }
            let message = LibNATS.copyMessage(msg)
            LibNATS.destroy(msg)
            Unmanaged<SubscriptionContext>.fromOpaque(closure).takeUnretainedValue().onMessage(message)
        }
        var subscription: OpaquePointer? = nil
        let status: natsStatus
        if let queue {
            status = natsConnection_QueueSubscribe(&subscription, connection.pointer, subject, queue, callback, closure)
        } else {
            status = natsConnection_Subscribe(&subscription, connection.pointer, subject, callback, closure)
        }
        guard status == NATS_OK, let subscription else {
            Unmanaged<SubscriptionContext>.fromOpaque(closure).release()
            throw LibNATS.error(status, "subscribe to \(subject)")
        }
        let completeStatus = natsSubscription_SetOnCompleteCB(
            subscription,
            { closure in
                guard let closure else { return }
                let context = Unmanaged<SubscriptionContext>.fromOpaque(closure).takeRetainedValue()
                context.onComplete()
            },
            closure
        )
        if completeStatus != NATS_OK {
            // Without an on-complete callback the context would leak; keep the leak rather than risk a use after free.
            natsSubscription_Destroy(subscription)
            throw LibNATS.error(completeStatus, "set on-complete for \(subject)")
        }
        // libnats drops messages silently beyond its pending limit; make the limit a deliberate choice.
        _ = natsSubscription_SetPendingLimits(subscription, Int32(clamping: pendingLimit), -1)
        return SubscriptionHandle(pointer: subscription)
    }

    func unsubscribe() { _ = natsSubscription_Unsubscribe(pointer) }

    func drain() { _ = natsSubscription_Drain(pointer) }

    /// Messages libnats dropped because this subscription was a slow consumer.
    var dropped: Int64 {
        var count: Int64 = 0
        _ = natsSubscription_GetDropped(pointer, &count)
        return count
    }
}
