import ChatCore
import Synchronization

/// `CHAT_INVITES_PER_MIN` per inviting user on this replica: a fixed one-minute window.
final class InviteLimiter: Sendable {
    private let windows = Mutex<[UserID: (start: ContinuousClock.Instant, count: Int)]>([:])

    func allow(_ user: UserID, perMinute: Int, now: ContinuousClock.Instant = .now) -> Bool {
        windows.withLock { windows in
            if windows.count > 100_000 { windows = windows.filter { now - $0.value.start < .seconds(60) } }
            var window = windows[user] ?? (now, 0)
            if now - window.start >= .seconds(60) { window = (now, 0) }
            guard window.count < perMinute else { return false }
            window.count += 1
            windows[user] = window
            return true
        }
    }
}
