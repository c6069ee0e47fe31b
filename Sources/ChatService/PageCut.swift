import ChatCore

/// Where a list page ends: at its item limit, or earlier where its encoded items would pass the byte
/// budget, so that no reply can outgrow the connection's `max_payload` whatever is stored.
enum PageCut {
    /// The budget for a connection with this `max_payload`: half of it, at most `Page.maxBytes`,
    /// leaving room for the reply's envelope (the gateway adds a frame type, the REST body `total`).
    static func budget(maxPayload: Int) -> Int {
        max(16 * 1024, min(ServiceAPI.Page.maxBytes, maxPayload / 2))
    }

    /// The number of leading items whose encoded JSON (with a separator each) fits `maxBytes`; at
    /// least one, so a page always moves the cursor on (a single item is far below any budget).
    static func fitting<Item: Encodable>(_ items: [Item], maxBytes: Int) -> Int {
        var used = 0
        for (index, item) in items.enumerated() {
            used += ChatJSON.encode(item).count + 1
            if used > maxBytes { return max(1, index) }
        }
        return items.count
    }

    /// The service's page size: the default when absent, at most `Page.maxLimit`.
    static func limit(_ requested: Int?) throws(ChatError) -> Int {
        guard let requested else { return ServiceAPI.Page.defaultLimit }
        guard requested >= 1 else { throw ChatError(.invalidRequest, "limit must be at least 1") }
        return min(requested, ServiceAPI.Page.maxLimit)
    }

    /// `has_more` as the reply shows it: absent on the last page of an unpaged request, so a small
    /// list reads exactly as it did before paging.
    static func hasMore(_ more: Bool, paged: Bool) -> Bool? {
        more || paged ? more : nil
    }
}
