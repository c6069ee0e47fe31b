import Testing

@testable import ChatCore

@Suite("Presence sync: a long statement is split into partitions, each complete for its prefix")
struct PresenceSyncPlanTests {
    typealias Sync = ServiceAPI.PresenceSync

    func ids(_ count: Int) -> [String] { (0..<count).map { _ in UserID.random().rawValue } }

    /// Every id stated exactly once, in a partition it starts with; partitions neither overlap nor
    /// leave a gap (together they cover every possible id once).
    func expectSound(_ plan: Sync.Plan, _ ids: [String], maxEntries: Int) {
        let stated = plan.statements.flatMap(\.ids)
        #expect(stated.sorted() == ids.sorted())
        for statement in plan.statements {
            #expect(statement.ids.count <= maxEntries)
            let partition = try! #require(statement.partition)
            #expect(Sync.isValidPartition(partition))
            #expect(statement.ids.allSatisfy { $0.hasPrefix(partition) })
        }
        // Coverage: the partitions' shares of the id space add up to exactly 1.
        let share = plan.statements.reduce(0.0) { $0 + 1 / Double(1 << (4 * $1.partition!.count)) }
        #expect(abs(share - 1) < 1e-12)
    }

    @Test func aStatementThatFitsIsOneRequestWithoutPartition() {
        let list = ids(20)
        #expect(Sync.plan(list, maxEntries: 20) == Sync.Plan(statements: [Sync.Statement(partition: nil, ids: list)], skipped: 0))
        #expect(Sync.plan([], maxEntries: 1) == Sync.Plan(statements: [Sync.Statement(partition: nil, ids: [])], skipped: 0))
    }

    @Test func aLongerOneIsSplitByLeadingHexDigits() {
        let list = ids(400)
        let plan = Sync.plan(list, maxEntries: 100)
        #expect(plan.skipped == 0)
        #expect(plan.statements.count >= 16)
        expectSound(plan, list, maxEntries: 100)
    }

    @Test func crowdedPartitionsAreSplitAgainAndEmptyOnesAreStillStated() {
        // Ten ids sharing the first digit: that partition splits by the second digit; the other 15 are empty.
        let list = (0..<10).map { "a\($0)" + String(UserID.random().rawValue.dropFirst(2)) }
        let plan = Sync.plan(list, maxEntries: 1)
        #expect(plan.skipped == 0)
        #expect(plan.statements.filter { $0.partition!.count == 1 }.count == 15)
        #expect(plan.statements.filter { $0.partition!.count == 1 }.allSatisfy { $0.ids.isEmpty })
        #expect(plan.statements.filter { $0.partition!.count == 2 }.count == 16)
        expectSound(plan, list, maxEntries: 1)
    }

    @Test func idsThatCannotBeSeparatedAreCountedAsSkipped() {
        let same = "abcdef01-0000-4000-8000-000000000000"
        let twins = [same, "abcdef01-1111-4111-8111-111111111111"]  // equal in all 8 partition digits
        let plan = Sync.plan(twins + ids(1) + ["not-a-uuid"], maxEntries: 1)
        #expect(plan.skipped == 3)
        #expect(!plan.statements.flatMap(\.ids).contains(same))
    }

    @Test(arguments: ["0", "a", "0123abcd", "ff"]) func validPartitions(_ text: String) {
        #expect(Sync.isValidPartition(text))
    }

    @Test(arguments: ["", "A", "g", "0123abcde", "0-", ">", "*", "a.b"]) func invalidPartitions(_ text: String) {
        #expect(!Sync.isValidPartition(text))
    }
}
