import Foundation
import Logging
import Metrics
import NATS
import Prometheus

/// Reads typed settings from environment variables; an unparsable value fails start-up with a clear error.
public struct Settings: Sendable {
    public let values: [String: String]

    public init(_ values: [String: String] = ProcessInfo.processInfo.environment) { self.values = values }

    public func string(_ key: String, default value: String) -> String {
        values[key].flatMap { $0.isEmpty ? nil : $0 } ?? value
    }

    public func optional(_ key: String) -> String? { values[key].flatMap { $0.isEmpty ? nil : $0 } }

    public func int(_ key: String, default value: Int, range: ClosedRange<Int> = Int.min...Int.max) throws -> Int {
        guard let text = optional(key) else { return value }
        guard let parsed = Int(text), range.contains(parsed) else {
            throw ConfigurationError("\(key)=\(text) must be an integer in \(range.lowerBound)...\(range.upperBound)")
        }
        return parsed
    }

    /// A duration given in milliseconds; `allowZero` for settings where 0 means "off" or "none".
    public func milliseconds(_ key: String, default value: Duration, allowZero: Bool = false) throws -> Duration {
        guard optional(key) != nil else { return value }
        return .milliseconds(try int(key, default: 0, range: (allowZero ? 0 : 1)...Int(Int32.max)))
    }

    /// The NATS connection settings (`NATSConfiguration.fromEnvironment`), with the numeric ones checked:
    /// a mistyped `NATS_DELIVERY_THREADS` or `NATS_REQUEST_TIMEOUT_MS` fails start-up instead of being ignored.
    /// `inboxPrefix` is the service's default `NATS_INBOX_PREFIX` (`_INBOX_chat`, `_INBOX_broadcaster`,
    /// `_INBOX_gateway`: the prefixes deploy/auth.conf lets each user subscribe to).
    public func nats(name: String, inboxPrefix: String = "_INBOX", defaultDeliveryThreads: Int = 0) throws -> NATSConfiguration {
        var configuration = NATSConfiguration.fromEnvironment(values, name: name)
        configuration.inboxPrefix = optional("NATS_INBOX_PREFIX") ?? inboxPrefix
        guard NATSConfiguration.isValidInboxPrefix(configuration.inboxPrefix) else {
            throw ConfigurationError("NATS_INBOX_PREFIX must be 1–64 characters of A-Z a-z 0-9 _ - (dots between tokens allowed)")
        }
        configuration.deliveryThreads = try int("NATS_DELIVERY_THREADS", default: defaultDeliveryThreads, range: 0...64)
        configuration.requestTimeout = try milliseconds("NATS_REQUEST_TIMEOUT_MS", default: configuration.requestTimeout)
        configuration.sendAsap = try bool("NATS_SEND_ASAP", default: configuration.sendAsap)
        return configuration
    }

    public func bool(_ key: String, default value: Bool) throws -> Bool {
        guard let text = optional(key)?.lowercased() else { return value }
        switch text {
        case "1", "true", "yes", "on": return true
        case "0", "false", "no", "off": return false
        default: throw ConfigurationError("\(key)=\(text) must be true or false")
        }
    }
}

public struct ConfigurationError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Process-wide logging and metrics set-up, done once (tests boot several apps in one process).
public enum Observability {
    /// The registry `/metrics` renders. Bootstrapped as the global metrics factory on first use.
    public static let registry: PrometheusCollectorRegistry = {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = [
            .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5),
            .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
            .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5),
        ]
        MetricsSystem.bootstrap(factory)
        return registry
    }()

    /// Call before creating any metric.
    public static func bootstrapMetrics() { _ = registry }

    private static let loggingBootstrapped: Void = {
        let level = ProcessInfo.processInfo.environment["LOG_LEVEL"].flatMap { Logger.Level(rawValue: $0.lowercased()) } ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }()

    /// Logs to stderr at `LOG_LEVEL` (trace…critical, default info). Executables call this first.
    public static func bootstrapLogging() { _ = loggingBootstrapped }

    public static func renderMetrics() -> String { registry.emitToString() }
}

/// Log metadata keys used across services, in one place.
public enum LogKey {
    public static let connectionID = "conn_id"
    public static let userID = "user_id"
    public static let username = "username"
    public static let roomID = "room_id"
    public static let requestID = "request_id"
    public static let endpoint = "endpoint"
    public static let error = "error"
    public static let errorCode = "error_code"
    public static let gatewayID = "gateway_id"
    public static let instance = "instance"
}

extension Metrics.Timer {
    /// Records the time since `start`.
    public func recordInterval(since start: ContinuousClock.Instant) {
        let elapsed = ContinuousClock.now - start
        recordNanoseconds(elapsed.components.seconds * 1_000_000_000 + elapsed.components.attoseconds / 1_000_000_000)
    }
}
