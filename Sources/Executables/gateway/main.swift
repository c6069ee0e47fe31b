import Gateway
import ServiceLifecycle
import ServiceSupport

await ServiceMain.run("gateway") { logger in
    let (app, core) = try await buildGateway(configuration: try GatewayConfiguration.fromEnvironment(), logger: logger)
    // The core is last: on SIGTERM it shuts down first and closes every socket with 1001.
    let group = ServiceGroup(configuration: .init(services: [app, core], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
    try await group.run()
}
