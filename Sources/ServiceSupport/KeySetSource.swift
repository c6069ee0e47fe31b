import Foundation
import Logging

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Where a JWKS comes from: `AUTH_JWKS_FILE` or `AUTH_JWKS_URL`.
public enum KeySetSource: Sendable, Equatable, CustomStringConvertible {
    case file(String)
    case url(URL)

    public var description: String {
        switch self {
        case .file(let path): "AUTH_JWKS_FILE \(path)"
        case .url(let url): "AUTH_JWKS_URL \(url.absoluteString)"
        }
    }

    /// How long one fetch of the URL may take.
    static let fetchTimeout: TimeInterval = 5

    /// Reads and parses the set once.
    func load() async throws(KeySetError) -> KeySet {
        try await KeySet.parse(try await bytes())
    }

    private func bytes() async throws(KeySetError) -> Data {
        switch self {
        case .file(let path):
            do {
                let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
                defer { try? handle.close() }
                return try handle.read(upToCount: KeySet.maxBytes + 1) ?? Data()
            } catch {
                throw KeySetError("cannot read \(path): \(error.localizedDescription)")
            }
        case .url(let url):
            var request = URLRequest(url: url, cachePolicy: .reloadIgnoringLocalCacheData, timeoutInterval: Self.fetchTimeout)
            request.setValue("application/json", forHTTPHeaderField: "Accept")
            let data: Data
            let response: URLResponse
            do {
                (data, response) = try await URLSession.shared.data(for: request)
            } catch {
                throw KeySetError("cannot fetch \(url.absoluteString): \(error.localizedDescription)")
            }
            guard let status = (response as? HTTPURLResponse)?.statusCode, status == 200 else {
                let status = (response as? HTTPURLResponse)?.statusCode.description ?? "no HTTP status"
                throw KeySetError("fetching \(url.absoluteString) answered \(status) (expected 200)")
            }
            return data
        }
    }

    /// The set at start-up. A file that cannot be read or parsed ends start-up (`ConfigurationError`);
    /// a URL is fetched again with backoff while it fails (the key server may start after this service),
    /// each failure logged.
    func loadAtStart(logger: Logger) async throws -> KeySet {
        if case .file = self {
            do throws(KeySetError) {
                return try await load()
            } catch {
                throw ConfigurationError("\(self): \(error)")
            }
        }
        var pause = Duration.milliseconds(250)
        while true {
            do throws(KeySetError) {
                return try await load()
            } catch {
                logger.warning(
                    "loading the token key set failed, retrying",
                    metadata: ["source": "\(self)", "error": "\(error)", "retry_in": "\(pause)"]
                )
            }
            try await Task.sleep(for: pause)
            pause = min(pause * 2, .seconds(10))
        }
    }
}
