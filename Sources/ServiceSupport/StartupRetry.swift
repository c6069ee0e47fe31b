import Logging
import NATS

/// Start-up steps against JetStream that can fail while a cluster is still forming: a meta leader
/// may already answer while too few peers are known to place an R3 stream ("no suitable peers for
/// placement"), or JetStream is not yet available. Such failures are retried with backoff until
/// `deadline`; any other error, or the deadline, ends start-up as before. (A 3-node test cluster
/// once refused the event stream this way a moment after electing its meta leader.)
public enum StartupRetry {
    /// JetStream `err_code`s that mean "not yet": no suitable peers, cluster temporarily unavailable,
    /// not the leader (yet).
    static let transientCodes: Set<Int> = [10005, 10008, 10009]

    public static func isTransient(_ error: NATSError) -> Bool {
        switch error.kind {
        case .timeout, .noResponders, .notConnected: true
        case .jetStream: transientCodes.contains(error.jetStreamCode)
        default: false
        }
    }

    public static func run<T>(
        _ what: String,
        deadline: Duration = .seconds(60),
        logger: Logger,
        _ body: () async throws(NATSError) -> T
    ) async throws -> T {
        let end = ContinuousClock.now + deadline
        var pause = Duration.milliseconds(250)
        while true {
            let failure: NATSError
            do {
                return try await body()
            } catch {
                failure = error
            }
            guard isTransient(failure), ContinuousClock.now + pause < end else { throw failure }
            logger.warning("\(what) failed, retrying", metadata: [LogKey.error: "\(failure)", "retry_in": "\(pause)"])
            try await Task.sleep(for: pause)
            pause = min(pause * 2, .seconds(2))
        }
    }
}
