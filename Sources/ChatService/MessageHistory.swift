import ChatCore
import NATS

/// Pages of a room's messages, read from the event stream (`MessageLog` writes them). No state.
struct MessageHistory: Sendable {
    let js: JetStream
    let defaultLimit: Int
    let maxLimit: Int
    /// A page's byte budget (`PageCut.budget`): 200 messages of 4 KiB of quotes encode to 1.7 MB.
    let maxBytes: Int

    /// Newest `limit` messages before `before` (or after `after`), oldest first.
    ///
    /// Cost does not grow with the room's size: the first and last messages of the room's subject are
    /// direct gets; the page start is found by a binary search over stream sequences (each probe a
    /// `next_by_subj` direct get, O(log n) probes, usually one because a room's sequences are dense);
    /// then the page is read forward.
    func page(room id: RoomID, limit requested: Int?, before: UInt64?, after: UInt64?) async throws(ChatError) -> ServiceAPI.HistoryResult {
        let limit = UInt64(min(max(requested ?? defaultLimit, 1), maxLimit))
        do {
            let subject = ChatNames.messageSubject(id)
            let stream = ChatNames.eventStream
            // The room's newest and oldest message, both at once.
            async let newestMessage = js.lastMessage(stream: stream, subject: subject)
            async let oldestMessage = js.directGet(stream: stream, sequence: 1, nextBySubject: subject)
            guard let last = try await newestMessage, let first = try await oldestMessage else {
                return ServiceAPI.HistoryResult(roomID: id, messages: [], hasMore: false, lastSeq: 0)
            }
            let newest = MessageLog.roomSeq(last)
            let oldest = MessageLog.roomSeq(first)
            let lower: UInt64
            let upper: UInt64
            let hasMore: Bool
            if let after {
                lower = max(after &+ 1, oldest)
                upper = min(newest, lower &+ limit - 1)
                hasMore = upper < newest
            } else {
                upper = min(newest, (before ?? UInt64.max) &- 1)
                lower = max(oldest, upper >= limit ? upper - limit + 1 : 1)
                hasMore = lower > oldest
            }
            guard upper >= lower, upper >= oldest, lower <= newest,
                let start = try await locate(lower, subject: subject, first: first, oldest: oldest, last: last, newest: newest)
            else {
                return ServiceAPI.HistoryResult(roomID: id, messages: [], hasMore: false, lastSeq: newest)
            }
            var messages: [ChatMessage] = []
            let stored = try await js.messages(stream: stream, subject: subject, from: start, limit: Int(upper - lower + 1))
            for item in stored {
                guard let message = try? ChatJSON.decode(ChatMessage.self, from: item.payload), message.seq <= upper else { break }
                messages.append(message)
            }
            // Over the byte budget, the page keeps the messages next to its cursor — the oldest after
            // `after`, the newest before `before` — and says there is more, so paging on loses nothing.
            if after != nil {
                let kept = PageCut.fitting(messages, maxBytes: maxBytes)
                if kept < messages.count { return Self.result(id, Array(messages.prefix(kept)), hasMore: true, newest) }
            } else {
                let kept = PageCut.fitting(Array(messages.reversed()), maxBytes: maxBytes)
                if kept < messages.count { return Self.result(id, Array(messages.suffix(kept)), hasMore: true, newest) }
            }
            return Self.result(id, messages, hasMore: hasMore, newest)
        } catch {
            throw ChatStorage.chatError(error)
        }
    }

    private static func result(_ id: RoomID, _ messages: [ChatMessage], hasMore: Bool, _ newest: UInt64) -> ServiceAPI.HistoryResult {
        ServiceAPI.HistoryResult(roomID: id, messages: messages, hasMore: hasMore, lastSeq: newest)
    }

    /// Stream sequence of the room's message with `seq == target` (oldest ≤ target ≤ newest).
    private func locate(
        _ target: UInt64,
        subject: String,
        first: JetStream.StoredMessage,
        oldest: UInt64,
        last: JetStream.StoredMessage,
        newest: UInt64
    ) async throws(NATSError) -> UInt64? {
        if target == oldest { return first.sequence }
        if target == newest { return last.sequence }
        // Each room message has its own stream sequence, so S(target) lies within [low, high].
        var low = first.sequence + (target - oldest)
        var high = last.sequence - (newest - target)
        // In a room with no interleaved traffic the low bound is exactly right: one probe.
        var probe = low
        while low <= high {
            let next = try await js.directGet(stream: ChatNames.eventStream, sequence: probe, nextBySubject: subject)
            guard let found = next else { return nil }
            let seq = MessageLog.roomSeq(found)
            if seq == target { return found.sequence }
            if seq < target {
                low = found.sequence + 1
            } else {
                high = probe - 1  // the first room message at or after `probe` is already past the target
            }
            guard low <= high else { break }
            probe = low + (high - low) / 2
        }
        return nil
    }
}
