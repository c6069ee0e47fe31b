import Foundation
import Logging

/// The body of each executable: logging set-up, then `body`; a configuration error exits 2 with one
/// clear line, any other failure exits 1.
public enum ServiceMain {
    public static func run(_ label: String, _ body: (Logger) async throws -> Void) async -> Never {
        Observability.bootstrapLogging()
        let logger = Logger(label: label)
        do {
            try await body(logger)
            exit(0)
        } catch let error as ConfigurationError {
            logger.critical("invalid configuration: \(error)")
            exit(2)
        } catch {
            logger.critical("\(label) stopped: \(error)")
            exit(1)
        }
    }
}
