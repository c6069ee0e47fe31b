import Logging
import NATS
import ServiceSupport
import Synchronization
import Testing

@Suite("Start-up retries JetStream's \"not yet\" errors and nothing else")
struct StartupRetryTests {
    let logger = Logger(label: "test")

    @Test func transientErrorsAreRetriedUntilTheStepSucceeds() async throws {
        let attempts = Mutex(0)
        let placement = NATSError(.jetStream, jetStreamCode: 10005, message: "no suitable peers for placement")
        let value = try await StartupRetry.run("creating", logger: logger) { () throws(NATSError) -> Int in
            let attempt = attempts.withLock {
                $0 += 1
                return $0
            }
            if attempt == 1 { throw placement }
            if attempt == 2 { throw NATSError(.noResponders, message: "JetStream not ready") }
            return 42
        }
        #expect(value == 42)
        #expect(attempts.withLock { $0 } == 3)
    }

    @Test func otherErrorsEndStartUpAtOnce() async {
        let attempts = Mutex(0)
        let refused = NATSError(.jetStream, jetStreamCode: 10058, message: "stream name already in use with a different configuration")
        await #expect(throws: NATSError.self) {
            try await StartupRetry.run("creating", logger: logger) { () throws(NATSError) in
                attempts.withLock { $0 += 1 }
                throw refused
            }
        }
        #expect(attempts.withLock { $0 } == 1)
        #expect(!StartupRetry.isTransient(NATSError(.invalidArgument, message: "bad")))
        #expect(StartupRetry.isTransient(NATSError(.jetStream, jetStreamCode: 10008, message: "temporarily unavailable")))
    }

    @Test func theDeadlineEndsRetrying() async {
        let attempts = Mutex(0)
        await #expect(throws: NATSError.self) {
            try await StartupRetry.run("creating", deadline: .milliseconds(600), logger: logger) { () throws(NATSError) in
                attempts.withLock { $0 += 1 }
                throw NATSError(.timeout, message: "no answer")
            }
        }
        // 250 ms, then 500 ms would pass the deadline: two attempts.
        #expect(attempts.withLock { $0 } == 2)
    }
}
