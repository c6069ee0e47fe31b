import ChatCore
import Logging
import NATS
import NIOCore
import ServiceSupport

/// What every room of a gateway shares: its NATS connection, the chat-service, presence statements,
/// metrics, and the owner of background tasks.
struct RoomContext: Sendable {
    let connection: NATSConnection
    let chat: ChatServiceClient
    let presence: PresenceStatements
    let metrics: GatewayMetrics
    let logger: Logger
    let background: BackgroundWork
}

/// One room on one gateway: its two subscriptions (events arrive once per gateway, however many
/// members) and the loop that feeds them, with member adds and removes, in arrival order to the room's
/// `RoomSequencer` and performs what it returns.
final class RoomWorker: Sendable {
    enum Event: Sendable {
        case delivery(NATSMessage)
        case typing(NATSMessage)
        case add(ClientConnection, since: UInt64?, joinSeq: UInt64, restricted: Bool, done: CheckedContinuation<Void, Never>)
        case remove(String)
        case resync
        case rejoin(gatewayID: String)
        case syncPresence(gatewayID: String)
    }

    let room: RoomID
    let inbox: MessageBuffer<Event>
    private let subscriptions: [NATSCallbackSubscription]
    private let context: RoomContext

    private init(room: RoomID, inbox: MessageBuffer<Event>, subscriptions: [NATSCallbackSubscription], context: RoomContext) {
        self.room = room
        self.inbox = inbox
        self.subscriptions = subscriptions
        self.context = context
    }

    /// Subscribes to the room's deliveries and typing notices and starts its loop. The subscriptions
    /// are live on the server only after a flush (`RoomHub.retain` does it).
    static func start(room: RoomID, context: RoomContext) throws(NATSError) -> RoomWorker {
        let inbox = MessageBuffer<Event>(limit: 100_000)
        let dropped = context.metrics.deliveriesDropped
        let deliveries = try context.connection.subscribe(ChatNames.deliverySubject(room)) { message in
            if !inbox.append(.delivery(message)) { dropped.increment() }
        }
        let typing: NATSCallbackSubscription
        do {
            typing = try context.connection.subscribe(ChatNames.typingSubject(room)) { message in
                _ = inbox.append(.typing(message))
            }
        } catch {
            deliveries.unsubscribe()
            throw error
        }
        let worker = RoomWorker(room: room, inbox: inbox, subscriptions: [deliveries, typing], context: context)
        if !context.background.spawn({ await worker.run() }) {
            worker.stop()
            throw NATSError(.connectionClosed, message: "the gateway is shutting down")
        }
        return worker
    }

    /// Ends the room: no more deliveries; the loop ends once the queued events are handled.
    func stop() {
        subscriptions.forEach { $0.unsubscribe() }
        inbox.finish()
    }

    /// Adds a member and returns once its catch-up (messages after `since`, or after `joinSeq`) has
    /// been queued; live messages follow it.
    /// `restricted`: the room is private or direct (see `LoopState.restricted`).
    func add(_ connection: ClientConnection, since: UInt64?, joinSeq: UInt64, restricted: Bool = false) async {
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            if !inbox.append(.add(connection, since: since, joinSeq: joinSeq, restricted: restricted, done: done)) { done.resume() }
        }
    }

    func remove(_ connectionID: String) {
        _ = inbox.append(.remove(connectionID))
    }

    // MARK: The loop (its state lives in `run`)

    private struct LoopState {
        var sequencer = RoomSequencer<ClientConnection>()
        /// Joins waiting for their catch-up, by connection id.
        var joins: [String: CheckedContinuation<Void, Never>] = [:]
        /// Sockets with frames queued by this batch of events, flushed once per event loop.
        var flushes = FlushBatch()
        /// A private or direct room: deliveries must come from a broadcaster that applies membership
        /// events (`ChatNames.broadcasterFeaturesHeader`).
        var restricted = false
    }

    private func run() async {
        var state = LoopState()
        while let batch = await inbox.takeAll() {
            for event in batch {
                await handle(event, &state)
            }
            state.flushes.submit()
        }
        // Finished or cancelled (shutdown): no join may wait forever.
        inbox.finish()
        while let rest = await inbox.takeAll() {
            for case .add(_, _, _, _, let done) in rest { done.resume() }
        }
        for done in state.joins.values { done.resume() }
        state.flushes.submit()
    }

    private func handle(_ event: Event, _ state: inout LoopState) async {
        switch event {
        case .delivery(let message):
            let seq = message.headers[ChatNames.roomSeqHeader].flatMap(UInt64.init)
            // Dropped, a message leaves a gap that is filled from history (frames this gateway writes).
            guard let kind = DeliveryCheck.roomFrame(message.payload, room: room, seq: seq) else {
                context.metrics.deliveriesRefused.increment()
                return
            }
            if state.restricted, message.headers[ChatNames.broadcasterFeaturesHeader] != ChatNames.accessFeature {
                guard !state.sequencer.members.isEmpty else { return }
                context.logger.warning(
                    "a private room's delivery from a broadcaster that predates private rooms: its sockets leave the room",
                    metadata: ["room_id": "\(room)", "fix": "upgrade every broadcaster"]
                )
                let removed = WebSocketFrameBytes.text(ServerFrame.removed(roomID: room, reason: "unavailable"))
                for member in state.sequencer.members.values { state.flushes.send(removed, to: member.client) }
                await revoke(&state, leave: true) { _ in true }
                return
            }
            // A removed or banned user's sockets leave before anything later of the room is sent.
            if case .memberRemoved(let user) = kind { await revoke(&state) { $0.userID == user } }
            let delivery = RoomSequencer<ClientConnection>.Delivery(
                seq: seq,
                streamSeq: message.headers[ChatNames.streamSeqHeader].flatMap(UInt64.init) ?? 0,
                payload: message.payload
            )
            await perform(state.sequencer.delivered(delivery), &state)
            if kind == .roomDeleted { await revoke(&state) { _ in true } }
        case .typing(let message):
            // Rebuilt from validated fields: what reaches the sockets is a frame this gateway wrote.
            guard let notice = TypingNotice.decode(message.payload, room: room) else {
                context.metrics.typingRefused.increment()
                return
            }
            await perform(state.sequencer.typing(from: notice.userID.rawValue, payload: notice.encoded(room: room)), &state)
        case .add(let connection, let since, let joinSeq, let restricted, let done):
            if restricted { state.restricted = true }
            state.joins[connection.id] = done
            let actions = state.sequencer.memberAdded(
                id: connection.id,
                userID: connection.userID.rawValue,
                client: connection,
                since: since,
                joinSeq: joinSeq
            )
            await perform(actions, &state)
        case .remove(let id):
            await perform(state.sequencer.memberRemoved(id: id), &state)
        case .resync:
            await perform(state.sequencer.resync(), &state)
        case .rejoin(let gatewayID):
            await rejoin(state.sequencer.members.values.map(\.client), gatewayID: gatewayID)
        case .syncPresence(let gatewayID):
            // The users as of this point in the room's order; the request does not hold up deliveries.
            let (users, room, presence, takenAt) = (Array(state.sequencer.userIDs), room, context.presence, ContinuousClock.now)
            context.background.spawn { await presence.stateRoom(gatewayID: gatewayID, room: room, users: users, takenAt: takenAt) }
        }
    }

    /// Performs the sequencer's actions in order; a history fetch is awaited and its answer's actions
    /// follow (later events wait in the inbox meanwhile).
    private func perform(_ actions: [RoomSequencer<ClientConnection>.Action], _ state: inout LoopState) async {
        var queue = actions
        var index = 0
        while index < queue.count {
            let action = queue[index]
            index += 1
            switch action {
            case .send(let frame, let clients):
                let bytes: ByteBuffer
                switch frame {
                case .live(let payload):
                    bytes = WebSocketFrameBytes.text(payload)
                case .catchUp(let message):
                    bytes = WebSocketFrameBytes.text(ServerFrame.message(message))
                case .recovered(let message):
                    context.metrics.gapFills.increment()
                    bytes = WebSocketFrameBytes.text(ServerFrame.message(message))
                }
                for client in clients { state.flushes.send(bytes, to: client) }
            case .fetchHistory(let after, let limit, let delay):
                state.flushes.submit()  // what is queued goes out before waiting for history
                if delay > .zero { try? await Task.sleep(for: delay) }
                if let page = await history(after: after, limit: limit) {
                    queue.append(contentsOf: state.sequencer.historyFetched(page.messages, hasMore: page.hasMore))
                } else {
                    queue.append(contentsOf: state.sequencer.historyFailed())
                }
            case .memberReady(let id):
                state.joins.removeValue(forKey: id)?.resume()
            case .duplicateDropped:
                context.metrics.duplicatesDropped.increment()
            case .gapUnfilled(let after, let through):
                context.logger.warning(
                    "gap could not be filled",
                    metadata: ["room_id": "\(room)", "after": "\(after)", "through": "\(through)"]
                )
            case .resyncAbandoned(let after):
                context.logger.warning("resync after reconnect gave up", metadata: ["room_id": "\(room)", "after": "\(after)"])
            }
        }
    }

    /// Takes the matching members out of the room here; their sessions forget the room (`revoke`).
    private func revoke(_ state: inout LoopState, leave: Bool = false, _ matching: (ClientConnection) -> Bool) async {
        for (id, member) in state.sequencer.members where matching(member.client) {
            member.client.revoke(room, leave: leave)
            await perform(state.sequencer.memberRemoved(id: id), &state)
        }
    }

    /// Joins every local member again (the join is idempotent; a removed member is added back and the
    /// room sees `user_joined`). Members stay subscribed here throughout, so nothing is missed.
    private func rejoin(_ clients: [ClientConnection], gatewayID: String) async {
        var users: [UserID: ClientConnection] = [:]
        for client in clients { users[client.userID] = client }
        var failed = 0
        for (user, client) in users {
            do {
                let _: ServiceAPI.JoinResult = try await context.chat.call(
                    .join,
                    ServiceAPI.Join(
                        roomID: room.rawValue,
                        userID: user.rawValue,
                        username: client.username.rawValue,
                        gatewayID: gatewayID
                    ),
                    userToken: client.token
                )
            } catch {
                failed += 1
            }
        }
        if failed > 0 {
            context.logger.warning("re-join failed for some members", metadata: ["room_id": "\(room)", "failed": "\(failed)"])
        }
    }

    private func history(after: UInt64, limit: Int) async -> ServiceAPI.HistoryResult? {
        do {
            // The gateway's own read: a private room's history while it holds one of the room's members.
            return try await context.chat.call(
                .history,
                ServiceAPI.History(roomID: room.rawValue, limit: limit, after: after),
                gatewayRead: true
            )
        } catch {
            context.logger.warning("history fetch failed", metadata: ["room_id": "\(room)", "after": "\(after)", LogKey.error: "\(error)"])
            return nil
        }
    }
}
