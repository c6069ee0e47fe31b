import Hummingbird
import Synchronization

/// The methods of the gateway's routes, read from the router once every route is added, so a known
/// path asked with another method is answered `405` with `Allow` (Hummingbird's router answers 404 for
/// it). A test asks the running gateway each method of each route.
final class KnownRoutes: Sendable {
    private let table = Mutex<[(path: RouterPath, methods: [HTTPRequest.Method])]>([])

    func load<Context>(from router: Router<Context>) {
        var table: [(path: RouterPath, methods: [HTTPRequest.Method])] = []
        for route in router.routes {
            if let index = table.firstIndex(where: { $0.path == route.path }) {
                table[index].methods.append(route.method)
            } else {
                table.append((route.path, [route.method]))
            }
        }
        self.table.withLock { $0 = table }
    }

    func methods(path: String) -> [HTTPRequest.Method]? {
        let parts = path.split(separator: "/")
        return table.withLock { table in
            table.first { route in
                route.path.count == parts.count && zip(route.path, parts).allSatisfy { element, part in element ~= part }
            }?.methods
        }
    }
}
