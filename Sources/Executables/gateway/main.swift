import Gateway
import ServiceLifecycle
import ServiceSupport

await ServiceMain.run("gateway") { logger in
    let (app, core) = try await buildGateway(configuration: try GatewayConfiguration.fromEnvironment(), logger: logger)
    // Shut down in reverse: the core first (it closes every socket with 1001), the NATS connection
    // (its deadline timer, then its drain) last.
    let group = ServiceGroup(
        configuration: .init(services: [core.connection, app, core], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
    )
    try await group.run()
}
