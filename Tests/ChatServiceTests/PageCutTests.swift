import ChatCore
import Testing

@testable import ChatService

@Suite("PageCut: list pages bounded by count and bytes")
struct PageCutTests {
    @Test func cutsWhereTheEncodedItemsPassTheBudget() {
        let rooms = (0..<100).map { _ in
            Room(id: RoomID.random(), name: String(repeating: "😀", count: 64), createdAt: "2024-01-15T10:30:00.000Z")
        }
        let size = ChatJSON.encode(rooms[0]).count + 1
        #expect(PageCut.fitting(rooms, maxBytes: size * 10) == 10)
        #expect(PageCut.fitting(rooms, maxBytes: size * 10 - 1) == 9)
        #expect(PageCut.fitting(rooms, maxBytes: 1_000_000) == 100)
        // Always at least one item, so a page moves the cursor on.
        #expect(PageCut.fitting(rooms, maxBytes: 1) == 1)
        #expect(PageCut.fitting([Room](), maxBytes: 1) == 0)
    }

    @Test func budgetStaysBelowMaxPayload() {
        #expect(PageCut.budget(maxPayload: 1024 * 1024) == 512 * 1024)
        #expect(PageCut.budget(maxPayload: 8 * 1024 * 1024) == 512 * 1024)
        #expect(PageCut.budget(maxPayload: 256 * 1024) == 128 * 1024)
    }

    @Test func limitsAndHasMore() throws {
        #expect(try PageCut.limit(nil) == ServiceAPI.Page.defaultLimit)
        #expect(try PageCut.limit(5) == 5)
        #expect(try PageCut.limit(1_000_000) == ServiceAPI.Page.maxLimit)
        #expect(throws: ChatError.self) { try PageCut.limit(0) }
        #expect(PageCut.hasMore(false, paged: false) == nil)
        #expect(PageCut.hasMore(true, paged: false) == true)
        #expect(PageCut.hasMore(false, paged: true) == false)
    }
}
