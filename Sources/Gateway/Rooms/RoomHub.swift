import ChatCore
import Logging
import NATS
import ServiceSupport
import Synchronization

/// The gateway's rooms: a room exists here only while it has local members. Each has one
/// `RoomWorker` (one delivery subscription, one loop handling its events strictly in order).
final class RoomHub: Sendable {
    /// A room's lifecycle. `members` counts the local joins holding it, waiters included.
    private enum Room {
        /// The first joiner is subscribing; later joiners wait for the outcome.
        case starting(members: Int, waiters: [CheckedContinuation<Claim, Never>])
        case running(RoomWorker, members: Int)
    }

    private enum Claim {
        case ready(RoomWorker)
        case failed(NATSError)
        case mustStart
    }

    let context: RoomContext
    /// How long the server has to confirm a new room's subscriptions.
    let subscribeTimeout: Duration
    private let rooms = Mutex<[RoomID: Room]>([:])

    init(
        connection: NATSConnection,
        chat: ChatServiceClient,
        logger: Logger,
        metrics: GatewayMetrics,
        presenceSyncMaxEntries: Int = ServiceAPI.PresenceSync.maxEntries,
        subscribeTimeout: Duration = .seconds(5)
    ) {
        self.subscribeTimeout = subscribeTimeout
        self.context = RoomContext(
            connection: connection,
            chat: chat,
            presence: PresenceStatements(chat: chat, logger: logger, maxEntries: presenceSyncMaxEntries),
            metrics: metrics,
            logger: logger,
            background: BackgroundWork()
        )
    }

    /// Runs the rooms' loops and background requests; cancelling it ends them all.
    func run() async {
        await withTaskCancellationHandler {
            await context.background.run()
        } onCancel: {
            for worker in self.workers { worker.stop() }
        }
    }

    /// Starts `job` as a child of `run()`.
    func spawn(_ job: @escaping BackgroundWork.Job) { context.background.spawn(job) }

    /// Rooms held, the ones still subscribing included.
    var roomCount: Int { rooms.withLock { $0.count } }

    private var workers: [RoomWorker] {
        rooms.withLock { rooms in
            rooms.values.compactMap { if case .running(let worker, _) = $0 { worker } else { nil } }
        }
    }

    /// Counts one more local member of `room`, starting its worker when it is the first. Returns once
    /// the room's subscriptions are confirmed by the server (for every joiner, not only the first), so
    /// no delivery for a join made afterwards can be missed; if subscribing fails, every joiner waiting
    /// for it gets the error and the room is gone.
    func retain(_ room: RoomID) async throws(NATSError) -> RoomWorker {
        let claim = await withCheckedContinuation { (continuation: CheckedContinuation<Claim, Never>) in
            let now: Claim? = rooms.withLock { rooms in
                switch rooms[room] {
                case .running(let worker, let members):
                    rooms[room] = .running(worker, members: members + 1)
                    return .ready(worker)
                case .starting(let members, let waiters):
                    rooms[room] = .starting(members: members + 1, waiters: waiters + [continuation])
                    return nil
                case nil:
                    rooms[room] = .starting(members: 1, waiters: [])
                    return .mustStart
                }
            }
            if let now { continuation.resume(returning: now) }
        }
        switch claim {
        case .ready(let worker): return worker
        case .failed(let error): throw error
        case .mustStart: return try await start(room)
        }
    }

    private func start(_ room: RoomID) async throws(NATSError) -> RoomWorker {
        var worker: RoomWorker?
        do {
            worker = try RoomWorker.start(room: room, context: context)
            try await context.connection.flush(timeout: subscribeTimeout)
        } catch {
            worker?.stop()
            let waiters = rooms.withLock { rooms -> [CheckedContinuation<Claim, Never>] in
                guard case .starting(_, let waiters) = rooms[room] else { return [] }
                rooms[room] = nil
                return waiters
            }
            for waiter in waiters { waiter.resume(returning: .failed(error)) }
            throw error
        }
        let started = worker!
        let waiters = rooms.withLock { rooms -> [CheckedContinuation<Claim, Never>] in
            guard case .starting(let members, let waiters) = rooms[room] else { return [] }
            rooms[room] = .running(started, members: members)
            return waiters
        }
        for waiter in waiters { waiter.resume(returning: .ready(started)) }
        return started
    }

    /// Counts one local member less; the last one stops the room's worker and subscriptions.
    func release(_ room: RoomID) {
        let stopped: RoomWorker? = rooms.withLock { rooms in
            switch rooms[room] {
            case .running(let worker, let members) where members > 1:
                rooms[room] = .running(worker, members: members - 1)
                return nil
            case .running(let worker, _):
                rooms[room] = nil
                return worker
            case .starting(let members, let waiters):
                // Joiners hold their count until `retain` returns, so this is not reached while starting.
                rooms[room] = .starting(members: max(1, members - 1), waiters: waiters)
                return nil
            case nil:
                return nil
            }
        }
        stopped?.stop()
    }

    /// After a NATS reconnect: every room checks history for messages whose deliveries were lost.
    func resyncAll() {
        for worker in workers { _ = worker.inbox.append(.resync) }
    }

    /// After the chat-service expired this gateway: every room joins its local members again.
    func rejoinAll(gatewayID: String) {
        for worker in workers { _ = worker.inbox.append(.rejoin(gatewayID: gatewayID)) }
    }

    /// Tells the chat-service which members this gateway holds (`ServiceAPI.PresenceSync`): the list of
    /// its rooms, then each room's users (stated by the room's worker, in order with its adds and removes).
    func syncPresence(gatewayID: String) async {
        let (rooms, workers) = rooms.withLock { rooms in
            (rooms.keys.map(\.rawValue), rooms.values.compactMap { if case .running(let worker, _) = $0 { worker } else { nil } })
        }
        let takenAt = ContinuousClock.now
        do {
            let removed = try await context.presence.state(gatewayID: gatewayID, room: nil, ids: rooms, takenAt: takenAt)
            if removed > 0 {
                context.logger.notice(
                    "presence sync: the chat-service removed members this gateway does not hold",
                    metadata: ["members": "\(removed)"]
                )
            }
        } catch {
            context.logger.warning("presence sync failed", metadata: [LogKey.error: "\(error)"])
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
}
