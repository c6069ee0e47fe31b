import Broadcaster
import ServiceSupport

await ServiceMain.run("broadcaster") { logger in
    let (app, _) = buildBroadcaster(configuration: try BroadcasterConfiguration.fromEnvironment(), logger: logger)
    try await app.runService()
}
