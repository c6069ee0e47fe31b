import NATS
import NATSTesting
import Testing

@Suite("Cancelling requests against a real nats-server")
struct RequestCancellationTests {
    /// A task cancelled before its request is registered (the cancellation handler then runs before
    /// the request has an id) ends at once with `.cancelled` instead of waiting out its timeout.
    @Test func requestOfAnAlreadyCancelledTaskEndsAtOnce() async throws {
        let server = try NATSServerProcess()
        let connection = try await server.connect()
        let silent = try connection.subscribe("silent") { _ in }  // receives, never answers
        try await connection.flush()
        let start = ContinuousClock.now
        let task = Task { () -> NATSError? in
            withUnsafeCurrentTask { $0?.cancel() }
            do throws(NATSError) {
                _ = try await connection.request("silent", timeout: .seconds(20))
                return nil
            } catch {
                return error
            }
        }
        let error = await task.value
        #expect(error?.kind == .cancelled)
        #expect(ContinuousClock.now - start < .seconds(5), "waited \(ContinuousClock.now - start)")
        silent.unsubscribe()
    }

    /// A request cancelled while it waits for its reply ends with `.cancelled`.
    @Test func requestCancelledWhileWaitingEnds() async throws {
        let server = try NATSServerProcess()
        let connection = try await server.connect()
        let received = AsyncStream.makeStream(of: Void.self)
        let silent = try connection.subscribe("silent") { _ in received.continuation.yield() }
        try await connection.flush()
        let task = Task { () -> NATSError? in
            do throws(NATSError) {
                _ = try await connection.request("silent", timeout: .seconds(20))
                return nil
            } catch {
                return error
            }
        }
        for await _ in received.stream { break }  // the request was sent: it is registered
        let start = ContinuousClock.now
        task.cancel()
        let error = await task.value
        #expect(error?.kind == .cancelled)
        #expect(ContinuousClock.now - start < .seconds(5))
        silent.unsubscribe()
    }
}
