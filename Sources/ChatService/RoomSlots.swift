import ChatCore
import Foundation
import Logging
import NATS

/// `CHAT_MAX_ROOMS`, exact across replicas: the key `count` of KV `chat_rooms` holds the number of
/// rooms, and a create takes a slot (count + 1, compare-and-set on the key's revision) before it
/// writes the room, so two creates can never both take the last slot.
///
/// A create that took a slot and then found its name taken gives the slot back. A crash between
/// taking a slot and writing the room leaves the count one above the rooms that exist; when the
/// count says the limit is reached and has not changed for `staleAfter`, it is recounted from the
/// rooms' records (`id.*`: private rooms have no name entry; no create takes that long between its slot and its record).
struct RoomSlots: Sendable {
    let rooms: KeyValue
    let maxRooms: Int
    let logger: Logger

    static let staleAfter: Duration = .seconds(30)
    /// Each lost compare-and-set means another create took a slot, so this bounds a storm, not a loop.
    static let maxAttempts = 1000

    /// Takes a slot; `room_limit_reached` when every slot is taken.
    func take() async throws {
        for _ in 0..<Self.maxAttempts {
            // The leader's answer: a replica behind it would only make the compare-and-set fail.
            let entry = try await rooms.get(ChatNames.roomCountKey, leader: true)
            guard let entry, entry.operation == .put, let count = Self.decode(entry.value) else {
                // First use (a bucket from before the count, or a corrupt value): start from the rooms.
                let existing = try await rooms.storedKeys(matching: ChatNames.roomKeyPattern).count
                if let entry {
                    _ = try await rooms.updateIfRevision(ChatNames.roomCountKey, Self.encode(existing), revision: entry.revision)
                } else {
                    _ = try await rooms.createIfAbsent(ChatNames.roomCountKey, Self.encode(existing))
                }
                continue
            }
            if maxRooms > 0, count >= maxRooms {
                if try await recounted(entry, count: count) { continue }
                throw ChatError(
                    .roomLimitReached,
                    "this server already has \(count) rooms, the limit (\(maxRooms)); no new rooms can be created"
                )
            }
            if try await rooms.updateIfRevision(ChatNames.roomCountKey, Self.encode(count + 1), revision: entry.revision) != nil {
                return
            }
        }
        throw ChatError(.unavailable, "too many rooms being created at once; try again")
    }

    /// Returns a slot taken by a create that did not create its room. Best effort: a failure leaves
    /// the count high, which the recount at the limit corrects.
    func giveBack() async {
        do {
            for _ in 0..<Self.maxAttempts {
                guard let entry = try await rooms.value(ChatNames.roomCountKey, leader: true), let count = Self.decode(entry.value)
                else { return }
                let lowered = Self.encode(max(0, count - 1))
                if try await rooms.updateIfRevision(ChatNames.roomCountKey, lowered, revision: entry.revision) != nil { return }
            }
        } catch {
            logger.warning("room slot not given back; the room count stays one high until recounted", metadata: ["error": "\(error)"])
        }
    }

    /// At the limit: true when the count had not changed for `staleAfter` and was above the rooms
    /// that exist, and has been set to their number.
    private func recounted(_ entry: KeyValueEntry, count: Int) async throws -> Bool {
        let writtenAt = Double(entry.createdNanoseconds) / 1e9
        guard Date().timeIntervalSince1970 - writtenAt >= Double(Self.staleAfter.components.seconds) else { return false }
        let existing = try await rooms.storedKeys(matching: ChatNames.roomKeyPattern).count
        guard existing < count else { return false }
        logger.warning("room count was above the rooms that exist; recounted", metadata: ["count": "\(count)", "rooms": "\(existing)"])
        return try await rooms.updateIfRevision(ChatNames.roomCountKey, Self.encode(existing), revision: entry.revision) != nil
    }

    static func encode(_ count: Int) -> [UInt8] { Array(String(count).utf8) }
    static func decode(_ value: [UInt8]) -> Int? { Int(String(decoding: value, as: UTF8.self)).flatMap { $0 >= 0 ? $0 : nil } }
}
