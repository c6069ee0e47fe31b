import ChatCore
import Logging
import ServiceSupport

/// Tells the chat-service which members this gateway holds (`ServiceAPI.PresenceSync`), so it can
/// remove records this gateway no longer backs (lost deletes, records resurrected by a restarted
/// nats-server). A statement over more ids than one request carries goes out in partitions.
struct PresenceStatements: Sendable {
    let chat: ChatServiceClient
    let logger: Logger
    /// Ids per request (`GatewayConfiguration.presenceSyncMaxEntries`).
    let maxEntries: Int

    /// States `ids` (users of `room`, or this gateway's rooms without one), a snapshot taken at
    /// `takenAt`, one request after another; each carries the snapshot's age, so the chat-service never
    /// removes a member who joined after it. A failed request does not stop the others. Returns the
    /// members the chat-service removed; throws the first failure once all were tried.
    func state(gatewayID: String, room: RoomID?, ids: [String], takenAt: ContinuousClock.Instant) async throws(ChatError) -> Int {
        let plan = ServiceAPI.PresenceSync.plan(ids, maxEntries: maxEntries)
        if plan.skipped > 0 {
            logger.warning(
                "presence sync: ids left out of the statement",
                metadata: [
                    "room_id": "\(room.map(\.rawValue) ?? "*")", "ids": "\(plan.skipped)",
                ]
            )
        }
        var removed = 0
        var firstError: ChatError?
        for statement in plan.statements {
            let age = (ContinuousClock.now - takenAt).inMilliseconds
            guard age <= ServiceAPI.PresenceSync.maxSnapshotAgeMilliseconds else { break }  // would remove nothing
            var request =
                room.map { ServiceAPI.PresenceSync(gatewayID: gatewayID, roomID: $0.rawValue, users: statement.ids) }
                ?? ServiceAPI.PresenceSync(gatewayID: gatewayID, rooms: statement.ids)
            request.partition = statement.partition
            request.snapshotAgeMilliseconds = max(0, age)
            do {
                let endpoint: ChatNames.Endpoint = statement.partition == nil ? .presenceSync : .presenceSyncPartition
                let result: ServiceAPI.PresenceSyncResult = try await chat.call(endpoint, request)
                removed += result.removed
            } catch {
                firstError = firstError ?? error
            }
        }
        if let firstError { throw firstError }
        return removed
    }

    /// `state` for one room's users, logging a failure (run in the background, off the room's order).
    func stateRoom(gatewayID: String, room: RoomID, users: [String], takenAt: ContinuousClock.Instant) async {
        do {
            _ = try await state(gatewayID: gatewayID, room: room, ids: users, takenAt: takenAt)
        } catch {
            logger.warning("presence sync failed", metadata: ["room_id": "\(room)", LogKey.error: "\(error)"])
        }
    }
}
