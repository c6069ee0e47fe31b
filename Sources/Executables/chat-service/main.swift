import ChatService
import ServiceSupport

await ServiceMain.run("chat-service") { logger in
    let (app, _) = buildChatService(configuration: try ChatServiceConfiguration.fromEnvironment(), logger: logger)
    try await app.runService()
}
