import ChatCore
import Testing

@testable import Gateway

/// The room ordering rules alone: every member sees every message once, in `seq` order, whatever
/// order deliveries, joins and history pages come in.
@Suite("Room sequencer (no I/O)")
struct RoomSequencerTests {
    typealias Sequencer = RoomSequencer<String>

    static let room = RoomID.random()
    static let user = UserID.random()

    /// What the members were sent, as readable lines ("live:3 -> a,b", "catchUp:2 -> c").
    struct Log {
        var sends: [String] = []
        var fetches: [(after: UInt64, limit: Int)] = []
        var ready: [String] = []
        var duplicates = 0
        var unfilled: [(UInt64, UInt64)] = []
        var abandoned: [UInt64] = []
        var delays: [Duration] = []

        mutating func record(_ actions: [Sequencer.Action]) {
            for action in actions {
                switch action {
                case .send(let frame, let clients):
                    let label: String
                    switch frame {
                    case .live(let payload): label = "live:" + String(decoding: payload, as: UTF8.self)
                    case .catchUp(let message): label = "catchUp:\(message.seq)"
                    case .recovered(let message): label = "recovered:\(message.seq)"
                    }
                    sends.append("\(label) -> \(clients.sorted().joined(separator: ","))")
                case .fetchHistory(let after, let limit, let delay):
                    fetches.append((after, limit))
                    delays.append(delay)
                case .memberReady(let id): ready.append(id)
                case .duplicateDropped: duplicates += 1
                case .gapUnfilled(let after, let through): unfilled.append((after, through))
                case .resyncAbandoned(let after): abandoned.append(after)
                }
            }
        }
    }

    /// A live message: its payload is its seq, so the log reads "live:5".
    static func delivery(_ seq: UInt64, stream: UInt64? = nil) -> Sequencer.Delivery {
        Sequencer.Delivery(seq: seq, streamSeq: stream ?? seq + 100, payload: Array("\(seq)".utf8))
    }

    static func messages(_ seqs: ClosedRange<UInt64>) -> [ChatMessage] {
        seqs.map { ChatMessage(messageID: "m\($0)", roomID: room, userID: user, username: "u", content: "c", timestamp: "t", seq: $0) }
    }

    /// A sequencer whose room is at `seq` with members `ids` joined there.
    static func joined(_ ids: [String], at seq: UInt64) -> (Sequencer, Log) {
        var sequencer = Sequencer()
        var log = Log()
        for id in ids {
            log.record(sequencer.memberAdded(id: id, userID: "user-\(id)", client: id, since: nil, joinSeq: seq))
        }
        return (sequencer, log)
    }

    @Test func inOrderDeliveriesReachEveryMemberOnceAndDuplicatesAreDropped() {
        var (sequencer, log) = Self.joined(["a", "b"], at: 0)
        #expect(log.ready == ["a", "b"])
        log.record(sequencer.delivered(Self.delivery(1)))
        log.record(sequencer.delivered(Self.delivery(2)))
        log.record(sequencer.delivered(Self.delivery(2)))  // the same delivery twice
        log.record(sequencer.delivered(Self.delivery(1, stream: 0)))  // an old seq, stream seq unknown
        log.record(sequencer.delivered(Self.delivery(3)))
        #expect(log.sends == ["live:1 -> a,b", "live:2 -> a,b", "live:3 -> a,b"])
        #expect(log.duplicates == 2)
        #expect(log.fetches.isEmpty)
        #expect(sequencer.lastSeq == 3)
    }

    @Test func aGapIsFilledFromHistoryBeforeTheLiveMessage() {
        var (sequencer, log) = Self.joined(["a"], at: 2)
        log.record(sequencer.delivered(Self.delivery(6)))
        #expect(log.fetches.map(\.after) == [2] && log.fetches.map(\.limit) == [3], "asks for 3...5")
        #expect(log.sends.isEmpty, "nothing goes out before the gap is filled")
        // Deliveries during the fetch wait, including one the history page also contains.
        log.record(sequencer.delivered(Self.delivery(7)))
        log.record(sequencer.delivered(Self.delivery(4)))
        #expect(log.sends.isEmpty)
        log.record(sequencer.historyFetched(Self.messages(3...5)))
        #expect(log.sends == ["recovered:3 -> a", "recovered:4 -> a", "recovered:5 -> a", "live:6 -> a", "live:7 -> a"])
        #expect(log.duplicates == 1, "the late 4 is a duplicate")
        #expect(!sequencer.isFetching)
    }

    @Test func aGapLongerThanAPageIsFetchedPageByPage() {
        var (sequencer, log) = Self.joined(["a"], at: 0)
        log.record(sequencer.delivered(Self.delivery(451)))
        log.record(sequencer.historyFetched(Self.messages(1...200)))
        log.record(sequencer.historyFetched(Self.messages(201...400)))
        log.record(sequencer.historyFetched(Self.messages(401...450)))
        #expect(log.fetches.map(\.after) == [0, 200, 400])
        #expect(log.fetches.map(\.limit) == [200, 200, 50])
        #expect(log.sends.count == 451)
        #expect(log.sends.last == "live:451 -> a")
    }

    @Test func aGapHistoryCannotFillIsReportedAndTheLiveMessageStillGoesOut() {
        var (sequencer, log) = Self.joined(["a"], at: 1)
        log.record(sequencer.delivered(Self.delivery(4)))
        for _ in 0..<Sequencer.pageAttempts { log.record(sequencer.historyFailed()) }
        #expect(log.fetches.count == Sequencer.pageAttempts)
        #expect(log.unfilled.map(\.0) == [1] && log.unfilled.map(\.1) == [3])
        #expect(log.sends == ["live:4 -> a"])

        // An empty page: given up at once, not asked again forever.
        var (other, otherLog) = Self.joined(["b"], at: 1)
        otherLog.record(other.delivered(Self.delivery(3)))
        otherLog.record(other.historyFetched([]))
        #expect(otherLog.fetches.count == 1 && otherLog.unfilled.count == 1)
        #expect(otherLog.sends == ["live:3 -> b"])
    }

    @Test func aMemberJoiningMidGapCatchesUpOnceTheGapIsFilled() {
        var (sequencer, log) = Self.joined(["a"], at: 2)
        log.record(sequencer.delivered(Self.delivery(5)))  // gap 3...4
        // "b" joined at the chat-service when the room was at 5; its add waits for the fill.
        log.record(sequencer.memberAdded(id: "b", userID: "user-b", client: "b", since: 1, joinSeq: 5))
        #expect(log.ready == ["a"])
        log.record(sequencer.historyFetched(Self.messages(3...4)))
        // "b" catches up from its `since` (1) to the room's seq (5), then is ready.
        #expect(log.fetches.map(\.after) == [2, 1])
        log.record(sequencer.historyFetched(Self.messages(2...5)))
        log.record(sequencer.delivered(Self.delivery(6)))
        #expect(
            log.sends == [
                "recovered:3 -> a", "recovered:4 -> a", "live:5 -> a",
                "catchUp:2 -> b", "catchUp:3 -> b", "catchUp:4 -> b", "catchUp:5 -> b",
                "live:6 -> a,b",
            ]
        )
        #expect(log.ready == ["a", "b"])
    }

    @Test func deliveriesBeforeTheFirstJoinWaitForItsPosition() {
        var sequencer = Sequencer()
        var log = Log()
        log.record(sequencer.delivered(Self.delivery(4)))
        log.record(sequencer.delivered(Self.delivery(5)))
        #expect(log.sends.isEmpty && sequencer.lastSeq == nil)
        // The join says the room was at 4: 4 is a duplicate of what the joiner has; 5 is applied before
        // the join, so the joiner catches up to it from history.
        log.record(sequencer.memberAdded(id: "a", userID: "user-a", client: "a", since: nil, joinSeq: 4))
        #expect(log.duplicates == 1)
        #expect(sequencer.lastSeq == 5)
        #expect(log.fetches.map(\.after) == [4] && log.fetches.map(\.limit) == [1])
        #expect(log.ready.isEmpty)
        log.record(sequencer.historyFetched(Self.messages(5...5)))
        #expect(log.sends == ["catchUp:5 -> a"])
        #expect(log.ready == ["a"])
    }

    @Test func aResumingMemberAheadOfTheRoomIsNotSentWhatItHas() {
        var (sequencer, log) = Self.joined(["a"], at: 3)
        // "b" saw 5 on another gateway; deliveries 4 and 5 are still on their way here.
        log.record(sequencer.memberAdded(id: "b", userID: "user-b", client: "b", since: 5, joinSeq: 3))
        #expect(log.fetches.isEmpty)
        for seq: UInt64 in 4...6 { log.record(sequencer.delivered(Self.delivery(seq))) }
        #expect(log.sends == ["live:4 -> a", "live:5 -> a", "live:6 -> a,b"])
    }

    @Test func aCatchUpThatFailsStillAddsTheMember() {
        var (sequencer, log) = Self.joined(["a"], at: 10)
        log.record(sequencer.memberAdded(id: "b", userID: "user-b", client: "b", since: 2, joinSeq: 10))
        log.record(sequencer.historyFetched(Self.messages(3...4)))
        for _ in 0..<Sequencer.pageAttempts { log.record(sequencer.historyFailed()) }
        #expect(log.ready == ["a", "b"])
        log.record(sequencer.delivered(Self.delivery(11)))
        #expect(log.sends == ["catchUp:3 -> b", "catchUp:4 -> b", "live:11 -> a,b"])
    }

    @Test func aRemoveDuringTheMembersCatchUpAppliesAfterIt() {
        var (sequencer, log) = Self.joined(["a"], at: 3)
        log.record(sequencer.memberAdded(id: "b", userID: "user-b", client: "b", since: 0, joinSeq: 3))
        log.record(sequencer.memberRemoved(id: "b"))
        log.record(sequencer.historyFetched(Self.messages(1...3)))
        #expect(log.ready == ["a", "b"])
        #expect(sequencer.members["b"] == nil)
        log.record(sequencer.delivered(Self.delivery(4)))
        #expect(log.sends.last == "live:4 -> a")
    }

    @Test func resyncAfterALostSubscriptionRecoversWhatNeverArrived() {
        var (sequencer, log) = Self.joined(["a", "b"], at: 0)
        log.record(sequencer.delivered(Self.delivery(1)))
        // Reconnected: 2...201 were published while away (a full page, then one more page).
        log.record(sequencer.resync())
        #expect(log.fetches.map(\.after) == [1])
        log.record(sequencer.historyFailed())  // the chat-service is still reconnecting
        #expect(log.delays.last == Sequencer.resyncDelay)
        log.record(sequencer.historyFetched(Self.messages(2...201)))
        #expect(log.fetches.map(\.after) == [1, 1, 201])
        log.record(sequencer.historyFetched(Self.messages(202...203)))
        #expect(!sequencer.isFetching)
        #expect(sequencer.lastSeq == 203)
        // Their live deliveries arrive late: duplicates.
        log.record(sequencer.delivered(Self.delivery(203)))
        log.record(sequencer.delivered(Self.delivery(204)))
        #expect(log.sends.count == 1 + 202 + 1)
        #expect(log.sends.last == "live:204 -> a,b")
        #expect(log.duplicates == 1)
    }

    @Test func aResyncGoesOnAfterAPageCutShortByItsByteBudget() {
        var (sequencer, log) = Self.joined(["a"], at: 0)
        log.record(sequencer.resync())
        // 1...50 of a longer history: fewer than a page of messages, but the service says there is more.
        log.record(sequencer.historyFetched(Self.messages(1...50), hasMore: true))
        #expect(sequencer.isFetching)
        #expect(log.fetches.map(\.after) == [0, 50])
        log.record(sequencer.historyFetched(Self.messages(51...60), hasMore: false))
        #expect(!sequencer.isFetching)
        #expect(sequencer.lastSeq == 60)
        #expect(log.sends.count == 60)
    }

    @Test func aResyncThatNeverGetsHistoryGivesUp() {
        var (sequencer, log) = Self.joined(["a"], at: 7)
        log.record(sequencer.resync())
        for _ in 0..<Sequencer.resyncAttempts { log.record(sequencer.historyFailed()) }
        #expect(log.abandoned == [7])
        #expect(!sequencer.isFetching)
        log.record(sequencer.delivered(Self.delivery(8)))
        #expect(log.sends == ["live:8 -> a"])
    }

    @Test func roomEventsWithoutSeqAreDeduplicatedByStreamSequence() {
        var (sequencer, log) = Self.joined(["a", "b"], at: 0)
        let joined = Sequencer.Delivery(seq: nil, streamSeq: 10, payload: Array("joined".utf8))
        log.record(sequencer.delivered(joined))
        log.record(sequencer.delivered(joined))
        log.record(sequencer.delivered(Self.delivery(1, stream: 9)))  // older than the last stream seq
        #expect(log.sends == ["live:joined -> a,b"])
        #expect(log.duplicates == 2)
    }

    @Test func typingGoesToEveryoneButItsSender() {
        var (sequencer, log) = Self.joined(["a", "b", "c"], at: 0)
        log.record(sequencer.typing(from: "user-b", payload: Array("typing".utf8)))
        #expect(log.sends == ["live:typing -> a,c"])
        #expect(sequencer.userIDs == ["user-a", "user-b", "user-c"])
    }
}
