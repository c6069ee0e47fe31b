import Logging
import Synchronization

/// The keys user tokens are checked against: the `AUTH_JWT_SECRET` key and the current JWKS. When a
/// token names a `kid` the set does not have, the set is loaded again (a key server rotating keys
/// publishes the new one before signing with it) — at most once per `RefetchGate` interval, and one
/// load at a time, which every token waiting for it shares.
final class TokenKeys: Sendable {
    let secret: VerificationKey?
    let source: KeySetSource?
    private let logger: Logger
    private struct State {
        var set: KeySet
        var gate: RefetchGate
        var loading: Task<Void, Never>?
    }
    private let state: Mutex<State>

    init(secret: VerificationKey?, source: KeySetSource?, set: KeySet, refetchInterval: Duration, logger: Logger) {
        self.secret = secret
        self.source = source
        self.logger = logger
        self.state = Mutex(State(set: set, gate: RefetchGate(interval: refetchInterval, lastFetch: .now)))
    }

    var set: KeySet { state.withLock { $0.set } }

    /// The JWKS key with this `kid`, loading the set again first when it has none and the gate allows.
    /// nil: no such key (also after a fresh load), or no load allowed yet.
    func key(kid: String) async -> VerificationKey? {
        if let key = state.withLock({ $0.set.byKID[kid] }) { return key }
        guard let source else { return nil }
        let task = state.withLock { state -> Task<Void, Never>? in
            if let loading = state.loading { return loading }
            guard state.gate.admit(now: .now) else { return nil }
            let task = Task { await self.reload(source) }
            state.loading = task
            return task
        }
        guard let task else { return nil }
        await task.value
        return state.withLock { $0.set.byKID[kid] }
    }

    /// A set that cannot be loaded now leaves the current one in place.
    private func reload(_ source: KeySetSource) async {
        let loaded: KeySet?
        do throws(KeySetError) {
            loaded = try await source.load()
        } catch {
            loaded = nil
            logger.warning(
                "reloading the token key set failed; keeping the current keys",
                metadata: ["source": "\(source)", "error": "\(error)"]
            )
        }
        let before = state.withLock { state -> [String] in
            defer {
                if let loaded { state.set = loaded }
                state.loading = nil
            }
            return state.set.kids
        }
        if let loaded {
            logger.info(
                "token key set reloaded",
                metadata: ["source": "\(source)", "kids": "\(loaded.kids)", "before": "\(before)", "skipped": "\(loaded.skipped)"]
            )
        }
    }
}
