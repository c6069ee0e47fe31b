import ChatCore

/// The ordering rules of one room on one gateway, without I/O: deliveries, member adds and removes and
/// history pages go in, actions come out (`RoomWorker` performs them). Generic over the member's
/// connection so tests drive it with plain values.
///
/// Guarantees per member: messages in `seq` order, none twice, none missing. A delivery at or below
/// the room's last delivered `seq` (or stream sequence) is a duplicate; one beyond the next expected
/// `seq` means a gap, filled from history before it goes out. A member that joins (or resumes with
/// `since`) is sent what it missed from history, then live messages. While a history fetch is out,
/// later inputs wait in order, so the answer to one fetch never races another event.
struct RoomSequencer<Client> {
    /// One event from the broadcaster. `seq` is the room's sequence (nil for presence and other room
    /// events, which are deduplicated by `streamSeq` alone); `streamSeq` 0 means unknown.
    struct Delivery {
        var seq: UInt64?
        var streamSeq: UInt64
        var payload: [UInt8]
    }

    enum Frame {
        /// The payload as it arrived from NATS: a server frame already encoded.
        case live([UInt8])
        /// A message from history for a member catching up after its join.
        case catchUp(ChatMessage)
        /// A message from history whose live delivery was lost (a gap, or a resync after a reconnect).
        case recovered(ChatMessage)
    }

    enum Action {
        case send(Frame, to: [Client])
        /// Fetch the room's messages after `after`, at most `limit`, waiting `delay` first; answer with
        /// `historyFetched` or `historyFailed`.
        case fetchHistory(after: UInt64, limit: Int, delay: Duration)
        /// The member's join is complete: its catch-up is queued and live messages follow.
        case memberReady(id: String)
        case duplicateDropped
        /// History could not supply (`after`, `through`]; the live message after it goes out anyway.
        case gapUnfilled(after: UInt64, through: UInt64)
        /// The resync after a reconnect stopped at `after` (history stayed unavailable).
        case resyncAbandoned(after: UInt64)
    }

    struct Member {
        var client: Client
        var userID: String
        /// The last `seq` this member has been sent.
        var cursor: UInt64
    }

    static var pageSize: Int { 200 }
    /// Attempts at one page of a gap or a catch-up before it is given up.
    static var pageAttempts: Int { 3 }
    /// Failed pages a resync tolerates (the chat-service may still be reconnecting), `resyncDelay` apart.
    static var resyncAttempts: Int { 40 }
    static var resyncDelay: Duration { .milliseconds(250) }

    private enum Input {
        case delivery(Delivery)
        case typing(senderUserID: String, payload: [UInt8])
        case add(id: String, member: Member, since: UInt64?, joinSeq: UInt64)
        case remove(id: String)
        case resync
    }

    /// The history fetch that is out, and what its answer completes.
    private enum Fetch {
        case gap(cursor: UInt64, through: UInt64, then: Delivery, failures: Int)
        case catchUp(id: String, member: Member, target: UInt64, failures: Int)
        case resync(cursor: UInt64, failures: Int)
    }

    private(set) var members: [String: Member] = [:]
    /// Highest `seq` delivered to the room's members; nil until the first member's join tells it.
    private(set) var lastSeq: UInt64?
    private var lastStreamSeq: UInt64 = 0
    /// Deliveries that arrived before `lastSeq` was known.
    private var early: [Delivery] = []
    private var fetch: Fetch?
    /// Inputs that arrived while `fetch` was out, oldest first from `waitingHead`.
    private var waiting: [Input] = []
    private var waitingHead = 0

    init() {}

    var isFetching: Bool { fetch != nil }
    var userIDs: Set<String> { Set(members.values.map(\.userID)) }

    // MARK: Inputs

    mutating func delivered(_ delivery: Delivery) -> [Action] { process(.delivery(delivery)) }

    /// A typing notice goes to every member but its sender, in order with deliveries.
    mutating func typing(from senderUserID: String, payload: [UInt8]) -> [Action] {
        process(.typing(senderUserID: senderUserID, payload: payload))
    }

    /// A member joined at the chat-service, whose room was at `joinSeq` then; `since` is a resuming
    /// client's last seen `seq`.
    mutating func memberAdded(id: String, userID: String, client: Client, since: UInt64?, joinSeq: UInt64) -> [Action] {
        process(.add(id: id, member: Member(client: client, userID: userID, cursor: 0), since: since, joinSeq: joinSeq))
    }

    mutating func memberRemoved(id: String) -> [Action] { process(.remove(id: id)) }

    /// After a NATS reconnect: deliveries published while this gateway was away are lost (core NATS is
    /// at most once) and, if no later message comes, nothing reveals the gap; so history is read
    /// beyond the last delivered `seq`.
    mutating func resync() -> [Action] { process(.resync) }

    /// `hasMore`: the page was cut short (by its byte budget) and more follows; a resync goes on.
    mutating func historyFetched(_ page: [ChatMessage], hasMore: Bool = false) -> [Action] {
        guard let current = fetch else { return [] }
        var actions: [Action] = []
        switch current {
        case .gap(var cursor, let through, let then, _):
            let start = cursor
            for message in page where message.seq > cursor && message.seq <= through {
                recover(message, &actions)
                cursor = message.seq
            }
            if cursor >= through {
                finishGap(cursor: cursor, then: then, &actions)
            } else if cursor > start {
                fetch = .gap(cursor: cursor, through: through, then: then, failures: 0)
                actions.append(.fetchHistory(after: cursor, limit: Self.limit(cursor, through), delay: .zero))
            } else {
                // An empty page (or one without progress) will not get better by asking again.
                actions.append(.gapUnfilled(after: cursor, through: through))
                finishGap(cursor: cursor, then: then, &actions)
            }
        case .catchUp(let id, var member, let target, _):
            var progressed = false
            for message in page where message.seq > member.cursor && message.seq <= target {
                actions.append(.send(.catchUp(message), to: [member.client]))
                member.cursor = message.seq
                progressed = true
            }
            if member.cursor < target, progressed {
                fetch = .catchUp(id: id, member: member, target: target, failures: 0)
                actions.append(.fetchHistory(after: member.cursor, limit: Self.limit(member.cursor, target), delay: .zero))
            } else {
                finishAdd(id: id, member: member, &actions)
            }
        case .resync(var cursor, _):
            for message in page where message.seq > cursor {
                recover(message, &actions)
                cursor = message.seq
            }
            if page.count < Self.pageSize, !hasMore {
                fetch = nil
                lastSeq = max(lastSeq ?? 0, cursor)
            } else {
                fetch = .resync(cursor: cursor, failures: 0)
                actions.append(.fetchHistory(after: cursor, limit: Self.pageSize, delay: .zero))
            }
        }
        drain(&actions)
        return actions
    }

    mutating func historyFailed() -> [Action] {
        guard let current = fetch else { return [] }
        var actions: [Action] = []
        switch current {
        case .gap(let cursor, let through, let then, let failures):
            if failures + 1 < Self.pageAttempts {
                fetch = .gap(cursor: cursor, through: through, then: then, failures: failures + 1)
                actions.append(.fetchHistory(after: cursor, limit: Self.limit(cursor, through), delay: .zero))
            } else {
                actions.append(.gapUnfilled(after: cursor, through: through))
                finishGap(cursor: cursor, then: then, &actions)
            }
        case .catchUp(let id, let member, let target, let failures):
            if failures + 1 < Self.pageAttempts {
                fetch = .catchUp(id: id, member: member, target: target, failures: failures + 1)
                actions.append(.fetchHistory(after: member.cursor, limit: Self.limit(member.cursor, target), delay: .zero))
            } else {
                finishAdd(id: id, member: member, &actions)
            }
        case .resync(let cursor, let failures):
            if failures + 1 < Self.resyncAttempts {
                fetch = .resync(cursor: cursor, failures: failures + 1)
                actions.append(.fetchHistory(after: cursor, limit: Self.pageSize, delay: Self.resyncDelay))
            } else {
                fetch = nil
                lastSeq = max(lastSeq ?? 0, cursor)
                actions.append(.resyncAbandoned(after: cursor))
            }
        }
        drain(&actions)
        return actions
    }

    // MARK: Applying inputs in order

    private mutating func process(_ input: Input) -> [Action] {
        if fetch != nil {
            waiting.append(input)
            return []
        }
        var actions: [Action] = []
        apply(input, &actions)
        drain(&actions)
        return actions
    }

    /// Applies waiting inputs until one starts a fetch.
    private mutating func drain(_ actions: inout [Action]) {
        while fetch == nil, waitingHead < waiting.count {
            let input = waiting[waitingHead]
            waitingHead += 1
            apply(input, &actions)
        }
        if waitingHead == waiting.count {
            waiting.removeAll(keepingCapacity: true)
            waitingHead = 0
        }
    }

    private mutating func apply(_ input: Input, _ actions: inout [Action]) {
        switch input {
        case .delivery(let delivery):
            if lastSeq == nil {
                early.append(delivery)
            } else {
                deliver(delivery, &actions)
            }
        case .typing(let sender, let payload):
            let recipients = members.values.filter { $0.userID != sender }.map(\.client)
            if !recipients.isEmpty { actions.append(.send(.live(payload), to: recipients)) }
        case .add(let id, var member, let since, let joinSeq):
            guard let roomSeq = lastSeq else {
                // The first join tells where the room is: the deliveries that came before it are
                // applied first (most are duplicates of what the joiner gets from history), then the join.
                lastSeq = joinSeq
                let replay = early.map(Input.delivery) + [input]
                early = []
                waiting.replaceSubrange(waitingHead..<waitingHead, with: replay)
                return
            }
            // A resuming client's `since` is taken as it is (it gets every message after it): it may be
            // ahead of this room and of `joinSeq` (it saw seq N on another gateway while the deliveries up
            // to N are still on their way here), and capping it sent it N a second time.
            member.cursor = since ?? min(joinSeq, roomSeq)
            if member.cursor < roomSeq {
                fetch = .catchUp(id: id, member: member, target: roomSeq, failures: 0)
                actions.append(.fetchHistory(after: member.cursor, limit: Self.limit(member.cursor, roomSeq), delay: .zero))
            } else {
                finishAdd(id: id, member: member, &actions)
            }
        case .remove(let id):
            members[id] = nil
        case .resync:
            guard let cursor = lastSeq else { return }
            fetch = .resync(cursor: cursor, failures: 0)
            actions.append(.fetchHistory(after: cursor, limit: Self.pageSize, delay: .zero))
        }
    }

    private mutating func deliver(_ delivery: Delivery, _ actions: inout [Action]) {
        if delivery.streamSeq != 0, delivery.streamSeq <= lastStreamSeq {
            actions.append(.duplicateDropped)
            return
        }
        guard let seq = delivery.seq else {
            lastStreamSeq = max(lastStreamSeq, delivery.streamSeq)
            if !members.isEmpty { actions.append(.send(.live(delivery.payload), to: members.values.map(\.client))) }
            return
        }
        let last = lastSeq ?? 0
        if seq <= last {
            lastStreamSeq = max(lastStreamSeq, delivery.streamSeq)
            actions.append(.duplicateDropped)
            return
        }
        if seq > last + 1 {
            fetch = .gap(cursor: last, through: seq - 1, then: delivery, failures: 0)
            actions.append(.fetchHistory(after: last, limit: Self.limit(last, seq - 1), delay: .zero))
            return
        }
        fanOut(delivery, seq: seq, &actions)
    }

    /// Sends a live message to every member not past it yet.
    private mutating func fanOut(_ delivery: Delivery, seq: UInt64, _ actions: inout [Action]) {
        let recipients = advanceMembers(to: seq)
        if !recipients.isEmpty { actions.append(.send(.live(delivery.payload), to: recipients)) }
        lastSeq = seq
        lastStreamSeq = max(lastStreamSeq, delivery.streamSeq)
    }

    /// Sends a message read from history (it never arrived live) to every member not past it yet.
    private mutating func recover(_ message: ChatMessage, _ actions: inout [Action]) {
        let recipients = advanceMembers(to: message.seq)
        if !recipients.isEmpty { actions.append(.send(.recovered(message), to: recipients)) }
    }

    /// The members whose cursor is below `seq`, with their cursors moved to it. By index: no hashing
    /// of member ids per delivery.
    private mutating func advanceMembers(to seq: UInt64) -> [Client] {
        var recipients: [Client] = []
        recipients.reserveCapacity(members.count)
        var index = members.values.startIndex
        while index != members.values.endIndex {
            if members.values[index].cursor < seq {
                recipients.append(members.values[index].client)
                members.values[index].cursor = seq
            }
            members.values.formIndex(after: &index)
        }
        return recipients
    }

    private mutating func finishGap(cursor: UInt64, then delivery: Delivery, _ actions: inout [Action]) {
        fetch = nil
        lastSeq = max(lastSeq ?? 0, cursor)
        if let seq = delivery.seq, seq > (lastSeq ?? 0) {
            fanOut(delivery, seq: seq, &actions)
        }
    }

    private mutating func finishAdd(id: String, member: Member, _ actions: inout [Action]) {
        fetch = nil
        members[id] = member
        actions.append(.memberReady(id: id))
    }

    private static func limit(_ after: UInt64, _ through: UInt64) -> Int {
        Int(min(through - after, UInt64(pageSize)))
    }
}
