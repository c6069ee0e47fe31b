import Broadcaster
import Foundation
import Logging
import ServiceSupport

Observability.bootstrapLogging()
let logger = Logger(label: "broadcaster")
do {
    let configuration = try BroadcasterConfiguration.fromEnvironment()
    let (app, _) = buildBroadcaster(configuration: configuration, logger: logger)
    try await app.runService()
} catch let error as ConfigurationError {
    logger.critical("invalid configuration: \(error)")
    exit(2)
} catch {
    logger.critical("broadcaster stopped: \(error)")
    exit(1)
}
