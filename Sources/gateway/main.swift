import Foundation
import Gateway
import Logging
import ServiceLifecycle
import ServiceSupport

Observability.bootstrapLogging()
let logger = Logger(label: "gateway")
do {
    let configuration = try GatewayConfiguration.fromEnvironment()
    let (app, core) = try await buildGateway(configuration: configuration, logger: logger)
    // The core is last: on SIGTERM it shuts down first and closes every socket with 1001.
    let group = ServiceGroup(configuration: .init(services: [app, core], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
    try await group.run()
} catch let error as ConfigurationError {
    logger.critical("invalid configuration: \(error)")
    exit(2)
} catch {
    logger.critical("gateway stopped: \(error)")
    exit(1)
}
