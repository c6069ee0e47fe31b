import ChatService
import Foundation
import Logging
import ServiceSupport

Observability.bootstrapLogging()
let logger = Logger(label: "chat-service")
do {
    let configuration = try ChatServiceConfiguration.fromEnvironment()
    let (app, _) = buildChatService(configuration: configuration, logger: logger)
    try await app.runService()
} catch let error as ConfigurationError {
    logger.critical("invalid configuration: \(error)")
    exit(2)
} catch {
    logger.critical("chat-service stopped: \(error)")
    exit(1)
}
