import ChatCore
import Logging
import NATS
import NIOCore
import ServiceSupport
import Synchronization

/// The gateway's rooms: a room exists here only while it has local members. Each has one delivery
/// subscription (events arrive once per gateway, however many members) and one worker task that
/// handles its deliveries and membership changes strictly in order.
final class RoomHub: Sendable {
    private struct Entry {
        var worker: RoomWorker
        var members: Int
    }

    let connection: NATSConnection
    let chat: ChatServiceClient
    let logger: Logger
    let metrics: GatewayMetrics
    /// Ids per presence-sync request (`GatewayConfiguration.presenceSyncMaxEntries`).
    let presenceSyncMaxEntries: Int
    private let rooms = Mutex<[RoomID: Entry]>([:])

    init(connection: NATSConnection, chat: ChatServiceClient, logger: Logger, metrics: GatewayMetrics, presenceSyncMaxEntries: Int = ServiceAPI.PresenceSync.maxEntries) {
        self.connection = connection
        self.chat = chat
        self.logger = logger
        self.metrics = metrics
        self.presenceSyncMaxEntries = presenceSyncMaxEntries
    }

    /// States `ids` (users of `room`, or this gateway's rooms without one), a snapshot taken at
    /// `takenAt`, in as many requests as `presenceSyncMaxEntries` needs, one after another; each carries
    /// the snapshot's age, so the chat-service never removes a member who joined after it. A failed
    /// request does not stop the others. Returns the members the chat-service removed; throws the first
    /// failure once all were tried.
    func statePresence(gatewayID: String, room: RoomID?, ids: [String], takenAt: ContinuousClock.Instant) async throws(ChatError) -> Int {
        let plan = ServiceAPI.PresenceSync.plan(ids, maxEntries: presenceSyncMaxEntries)
        if plan.skipped > 0 {
            logger.warning("presence sync: ids left out of the statement", metadata: ["room_id": "\(room.map(\.rawValue) ?? "*")", "ids": "\(plan.skipped)"])
        }
        var removed = 0
        var firstError: ChatError?
        for statement in plan.statements {
            let age = (ContinuousClock.now - takenAt).inMilliseconds
            var request = room.map { ServiceAPI.PresenceSync(gatewayID: gatewayID, roomID: $0.rawValue, users: statement.ids) }
                ?? ServiceAPI.PresenceSync(gatewayID: gatewayID, rooms: statement.ids)
            request.partition = statement.partition
            request.snapshotAgeMilliseconds = max(0, age)
            guard age <= ServiceAPI.PresenceSync.maxSnapshotAgeMilliseconds else { break }  // would remove nothing
            do {
                let result: ServiceAPI.PresenceSyncResult = try await chat.call(statement.partition == nil ? .presenceSync : .presenceSyncPartition, request)
                removed += result.removed
            } catch {
                firstError = firstError ?? error
            }
        }
        if let firstError { throw firstError }
        return removed
    }

    var roomCount: Int { rooms.withLock { $0.count } }

    /// Counts one more local member of `room`, creating its worker and subscriptions when it is the first.
    /// The subscription is confirmed by the server before this returns, so no delivery for a join made
    /// afterwards can be missed.
    func retain(_ room: RoomID) async throws(NATSError) -> RoomWorker {
        let (worker, created) = rooms.withLock { rooms -> (RoomWorker, Bool) in
            if var entry = rooms[room] {
                entry.members += 1
                rooms[room] = entry
                return (entry.worker, false)
            }
            let worker = RoomWorker(room: room, hub: self)
            rooms[room] = Entry(worker: worker, members: 1)
            return (worker, true)
        }
        if created {
            do {
                try worker.start()
                try await connection.flush()
            } catch {
                release(room)
                throw error
            }
        }
        return worker
    }

    /// After a NATS reconnect: every room checks history for messages whose deliveries were lost.
    func resyncAll() {
        for worker in rooms.withLock({ $0.values.map(\.worker) }) { worker.resync() }
    }

    /// After the chat-service expired this gateway: every room joins its local members again.
    func rejoinAll(gatewayID: String) {
        for worker in rooms.withLock({ $0.values.map(\.worker) }) { _ = worker.inbox.append(.rejoin(gatewayID: gatewayID)) }
    }

    /// Tells the chat-service which members this gateway holds (`ServiceAPI.PresenceSync`): the list of
    /// its rooms, then each room's users (sent by the room's worker, in order with its adds and removes).
    func syncPresence(gatewayID: String) async {
        let (rooms, workers) = rooms.withLock { rooms in (rooms.keys.map(\.rawValue), rooms.values.map(\.worker)) }
        let takenAt = ContinuousClock.now
        do {
            let removed = try await statePresence(gatewayID: gatewayID, room: nil, ids: rooms, takenAt: takenAt)
            if removed > 0 { logger.notice("presence sync: the chat-service removed members this gateway does not hold", metadata: ["members": "\(removed)"]) }
        } catch {
            logger.warning("presence sync failed", metadata: [LogKey.error: "\(error)"])
        }
        // Paced (5 ms per room, 30 s in all at most) so a gateway with thousands of rooms does not send
        // them all at once to a chat-service that has just reconnected too. Each room takes its snapshot
        // when its event is handled, just before its request: a snapshot must not be older than the
        // chat-service's sync grace when it arrives.
        let pause = Duration.microseconds(min(5_000, 30_000_000 / max(1, workers.count)))
        for worker in workers {
            _ = worker.inbox.append(.syncPresence(gatewayID: gatewayID))
            try? await Task.sleep(for: pause)
        }
    }

    /// Counts one local member less; the last one stops the room's worker and subscriptions.
    func release(_ room: RoomID) {
        let stopped: RoomWorker? = rooms.withLock { rooms in
            guard var entry = rooms[room] else { return nil }
            entry.members -= 1
            if entry.members > 0 {
                rooms[room] = entry
                return nil
            }
            rooms[room] = nil
            return entry.worker
        }
        stopped?.stop()
    }
}

/// One room on one gateway. All state is owned by the worker task; everything reaches it through the
/// inbox in arrival order: deliveries from the broadcaster, typing notices, member adds and removes.
///
/// Guarantees per socket: messages in `seq` order, none twice, none missing. Deliveries at or below
/// the room's last delivered `seq` (or stream sequence) are duplicates and dropped; a delivery beyond
/// the next expected `seq` means a gap, filled from the chat-service's history before going on. A
/// member that joins (or resumes with `since`) gets what it missed from history, then live messages.
final class RoomWorker: Sendable {
    enum Event: Sendable {
        case delivery(NATSMessage)
        case typing(NATSMessage)
        case add(ClientConnection, cursor: UInt64?, joinSeq: UInt64, done: CheckedContinuation<Void, Never>)
        case remove(String)
        case resync
        case rejoin(gatewayID: String)
        case syncPresence(gatewayID: String)
    }

    struct Member {
        var connection: ClientConnection
        /// The last `seq` this member has been sent.
        var cursor: UInt64
    }

    let room: RoomID
    unowned let hub: RoomHub
    let inbox = MessageBuffer<Event>(limit: 100_000)
    private let subscriptions = Mutex<[NATSCallbackSubscription]>([])
    private let started = Mutex<Task<Void, Never>?>(nil)

    init(room: RoomID, hub: RoomHub) {
        self.room = room
        self.hub = hub
    }

    func start() throws(NATSError) {
        let inbox = self.inbox
        let metrics = hub.metrics
        let deliveries = try hub.connection.subscribe(ChatNames.deliverySubject(room)) { message in
            if !inbox.append(.delivery(message)) { metrics.deliveriesDropped.increment() }
        }
        let typing = try hub.connection.subscribe(ChatNames.typingSubject(room)) { message in
            _ = inbox.append(.typing(message))
        }
        subscriptions.withLock { $0 = [deliveries, typing] }
        let task = Task { await self.run() }
        started.withLock { $0 = task }
    }

    func stop() {
        subscriptions.withLock { subscriptions in
            subscriptions.forEach { $0.unsubscribe() }
            subscriptions = []
        }
        inbox.finish()
    }

    /// Adds a member and returns once its catch-up (messages after `cursor`) has been queued.
    func add(_ connection: ClientConnection, cursor: UInt64?, joinSeq: UInt64) async {
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            if !inbox.append(.add(connection, cursor: cursor, joinSeq: joinSeq, done: done)) { done.resume() }
        }
    }

    func remove(_ connectionID: String) {
        _ = inbox.append(.remove(connectionID))
    }

    func resync() {
        _ = inbox.append(.resync)
    }

    // MARK: The worker (state below is only touched by `run`)

    private func run() async {
        var state = RoomState(room: room)
        while let batch = await inbox.takeAll() {
            for event in batch {
                await handle(event, &state)
            }
            state.flushes.submit()
        }
    }

    struct RoomState {
        let room: RoomID
        var members: [String: Member] = [:]
        /// Highest `seq` delivered to the room's members; nil until the first member's join tells us.
        var lastSeq: UInt64?
        var lastStreamSeq: UInt64 = 0
        /// Deliveries that arrived before `lastSeq` was known.
        var early: [NATSMessage] = []
        /// Sockets with frames queued by this batch of events, flushed once per event loop.
        var flushes = FlushBatch()
        init(room: RoomID) { self.room = room }
    }

    private func handle(_ event: Event, _ state: inout RoomState) async {
        switch event {
        case .delivery(let message):
            if state.lastSeq == nil {
                state.early.append(message)
            } else {
                await deliver(message, &state)
            }
        case .typing(let message):
            let sender = message.headers[ChatNames.userHeader]
            let frame = WebSocketFrameBytes.text(message.payload)
            for member in state.members.values where member.connection.userID.rawValue != sender {
                state.flushes.send(frame, to: member.connection)
            }
        case .add(let connection, let cursor, let joinSeq, let done):
            if state.lastSeq == nil {
                state.lastSeq = joinSeq
                let early = state.early
                state.early = []
                for message in early { await deliver(message, &state) }
            }
            let roomSeq = state.lastSeq ?? joinSeq
            // A resuming client's `since` is taken as it is (it gets every message after it, as
            // documented): it may be ahead of this worker and of `joinSeq` (it saw seq N on another
            // gateway while the deliveries up to N are still on their way here, and `joinSeq` comes from
            // a chat-service replica's cached position), and capping it there sent it N a second time.
            let start = cursor ?? min(joinSeq, roomSeq)
            var member = Member(connection: connection, cursor: start)
            if start < roomSeq {
                await catchUp(&member, to: roomSeq)
            }
            state.members[connection.id] = member
            done.resume()
        case .remove(let id):
            state.members[id] = nil
        case .resync:
            await resync(&state)
        case .rejoin(let gatewayID):
            await rejoin(state, gatewayID: gatewayID)
        case .syncPresence(let gatewayID):
            // The users as of this point in the room's order; the request itself does not hold up deliveries.
            let users = Set(state.members.values.map(\.connection.userID.rawValue))
            let (room, hub, takenAt) = (self.room, self.hub, ContinuousClock.now)
            Task {
                do {
                    _ = try await hub.statePresence(gatewayID: gatewayID, room: room, ids: Array(users), takenAt: takenAt)
                } catch {
                    hub.logger.warning("presence sync failed", metadata: ["room_id": "\(room)", LogKey.error: "\(error)"])
                }
            }
        }
    }

    /// Deliveries published while this gateway was disconnected from NATS are lost (core NATS is at
    /// most once), and if no later message comes, nothing reveals the gap. So after a reconnect the
    /// room fetches whatever history has beyond its last delivered `seq` (retrying while the
    /// chat-service itself is still reconnecting); later deliveries of those are dropped by `seq`.
    private func resync(_ state: inout RoomState) async {
        guard var cursor = state.lastSeq else { return }
        state.flushes.submit()
        let pageSize = 200
        var failures = 0
        while true {
            guard let page = await history(after: cursor, limit: pageSize) else {
                failures += 1
                if failures >= 40 {
                    hub.logger.warning("resync after reconnect gave up", metadata: ["room_id": "\(room)", "after": "\(cursor)"])
                    break
                }
                try? await Task.sleep(for: .milliseconds(250))
                continue
            }
            for message in page where message.seq > cursor {
                deliverFromHistory(message, &state)
                cursor = message.seq
            }
            if page.count < pageSize { break }
        }
        state.lastSeq = max(state.lastSeq ?? 0, cursor)
    }

    /// Joins every local member again (the join is idempotent; a removed member is added back and the
    /// room sees `user_joined`). Members stay subscribed here throughout, so nothing is missed.
    private func rejoin(_ state: RoomState, gatewayID: String) async {
        var users: [UserID: Username] = [:]
        for member in state.members.values { users[member.connection.userID] = member.connection.username }
        var failed = 0
        for (user, username) in users {
            do {
                let _: ServiceAPI.JoinResult = try await hub.chat.call(.join, ServiceAPI.Join(
                    roomID: room.rawValue, userID: user.rawValue, username: username.rawValue, gatewayID: gatewayID
                ))
            } catch {
                failed += 1
            }
        }
        if failed > 0 { hub.logger.warning("re-join failed for some members", metadata: ["room_id": "\(room)", "failed": "\(failed)"]) }
    }

    /// Sends `member` the messages after its cursor up to `target`, from history.
    private func catchUp(_ member: inout Member, to target: UInt64) async {
        while member.cursor < target {
            guard let page = await history(after: member.cursor, limit: Int(min(target - member.cursor, 200))), !page.isEmpty else { return }
            for message in page where message.seq > member.cursor && message.seq <= target {
                member.connection.send(ServerFrame.message(message))
                member.cursor = message.seq
            }
        }
    }

    private func deliver(_ message: NATSMessage, _ state: inout RoomState) async {
        let streamSeq = message.headers[ChatNames.streamSeqHeader].flatMap(UInt64.init) ?? 0
        if streamSeq != 0, streamSeq <= state.lastStreamSeq {
            hub.metrics.duplicatesDropped.increment()
            return
        }
        guard let seq = message.headers[ChatNames.roomSeqHeader].flatMap(UInt64.init) else {
            // Presence and other room events: no per-room seq, deduplicated by stream sequence.
            state.lastStreamSeq = max(state.lastStreamSeq, streamSeq)
            let frame = WebSocketFrameBytes.text(message.payload)
            for member in state.members.values { state.flushes.send(frame, to: member.connection) }
            return
        }
        let last = state.lastSeq ?? 0
        if seq <= last {
            hub.metrics.duplicatesDropped.increment()
            state.lastStreamSeq = max(state.lastStreamSeq, streamSeq)
            return
        }
        if seq > last + 1 {
            await fillGap(from: last, to: seq - 1, &state)
        }
        let frame = WebSocketFrameBytes.text(message.payload)
        // By index: no hashing of member ids per delivery.
        var index = state.members.values.startIndex
        while index != state.members.values.endIndex {
            if state.members.values[index].cursor < seq {
                state.flushes.send(frame, to: state.members.values[index].connection)
                state.members.values[index].cursor = seq
            }
            state.members.values.formIndex(after: &index)
        }
        state.lastSeq = seq
        state.lastStreamSeq = max(state.lastStreamSeq, streamSeq)
    }

    /// Sends a message read from history (it never arrived live) to every member not past it yet.
    private func deliverFromHistory(_ message: ChatMessage, _ state: inout RoomState) {
        hub.metrics.gapFills.increment()
        let frame = WebSocketFrameBytes.text(ServerFrame.message(message))
        var index = state.members.values.startIndex
        while index != state.members.values.endIndex {
            if state.members.values[index].cursor < message.seq {
                state.flushes.send(frame, to: state.members.values[index].connection)
                state.members.values[index].cursor = message.seq
            }
            state.members.values.formIndex(after: &index)
        }
    }

    /// Fetches and delivers the messages (`after`, `through`] that never arrived live.
    private func fillGap(from after: UInt64, to through: UInt64, _ state: inout RoomState) async {
        state.flushes.submit()  // what is queued goes out before waiting for history
        var cursor = after
        while cursor < through {
            guard let page = await history(after: cursor, limit: Int(min(through - cursor, 200))), !page.isEmpty else {
                hub.logger.warning("gap could not be filled", metadata: ["room_id": "\(room)", "after": "\(cursor)", "through": "\(through)"])
                break
            }
            for message in page where message.seq > cursor && message.seq <= through {
                deliverFromHistory(message, &state)
                cursor = message.seq
            }
        }
        state.lastSeq = max(state.lastSeq ?? 0, cursor)
    }

    private func history(after: UInt64, limit: Int) async -> [ChatMessage]? {
        for attempt in 0..<3 {
            do {
                let result: ServiceAPI.HistoryResult = try await hub.chat.call(.history, ServiceAPI.History(roomID: room.rawValue, limit: limit, after: after))
                return result.messages
            } catch {
                hub.logger.warning("history fetch failed", metadata: ["room_id": "\(room)", "attempt": "\(attempt)", "error": "\(error)"])
            }
        }
        return nil
    }
}
