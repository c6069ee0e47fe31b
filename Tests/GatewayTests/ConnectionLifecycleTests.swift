import Testing

@testable import Gateway

@Suite("Connection lifecycle (one close state per socket)")
struct ConnectionLifecycleTests {
    @Test func itOnlyMovesForward() {
        var lifecycle = ConnectionLifecycle.open
        var moved: Bool
        #expect(lifecycle.acceptsFrames)
        moved = lifecycle.advance(to: .closeRequested)
        #expect(moved)
        moved = lifecycle.advance(to: .closeRequested)
        #expect(!moved, "a second close request is not made")
        #expect(lifecycle.acceptsFrames, "frames queued before the close still go out")
        moved = lifecycle.advance(to: .closing)
        #expect(moved)
        #expect(!lifecycle.acceptsFrames)
        moved = lifecycle.advance(to: .open)
        #expect(!moved)
        moved = lifecycle.advance(to: .closed)
        #expect(moved)
        moved = lifecycle.advance(to: .closing)
        #expect(!moved)
        #expect(lifecycle == .closed && !lifecycle.acceptsFrames)
    }

    @Test func aSocketThatClosesSkipsTheSteps() {
        var lifecycle = ConnectionLifecycle.open
        var moved: Bool
        moved = lifecycle.advance(to: .closed)
        #expect(moved)
        moved = lifecycle.advance(to: .closeRequested)
        #expect(!moved, "nothing to close any more")
    }
}
