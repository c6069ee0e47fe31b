// swift-tools-version: 6.2
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "nats-chat",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "gateway", targets: ["gateway"]),
        .executable(name: "chat-service", targets: ["chat-service"]),
        .executable(name: "broadcaster", targets: ["broadcaster"]),
        // Libraries for the benchmark tools (Benchmarks/Package.swift depends on this package by path).
        .library(name: "CNATS", targets: ["CNATS"]),
        .library(name: "NATS", targets: ["NATS"]),
        .library(name: "NATSTesting", targets: ["NATSTesting"]),
        .library(name: "ChatCore", targets: ["ChatCore"]),
        .library(name: "ServiceSupport", targets: ["ServiceSupport"]),
        .library(name: "ChatService", targets: ["ChatService"]),
    ],
    dependencies: [
        // traits: [] keeps SwiftPM from reordering trait flags (full rebuilds) and drops swift-configuration.
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", exact: "2.28.1", traits: []),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),  // HMAC for user tokens, SHA-1 for the WebSocket accept, SHA-256 for gateway keys
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/hummingbird-project/swift-websocket.git", from: "1.6.2"),
        // RS256, ES256 and EdDSA signatures and JWK parsing for user tokens from a key set (JWKS).
        .package(url: "https://github.com/vapor/jwt-kit.git", "5.7.1"..<"6.0.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CNATS",
            pkgConfig: "libnats",
            providers: [.apt(["libnats-dev"])]
        ),
        .target(
            name: "NATS",
            dependencies: [
                "CNATS",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "NATSTesting",
            dependencies: ["NATS"],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "ChatCore",
            swiftSettings: swiftSettings
        ),
        .target(
            name: "ServiceSupport",
            dependencies: [
                "NATS", "ChatCore",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Crypto", package: "swift-crypto"),  // SHA-256 of the name-based user ids
                .product(name: "JWTKit", package: "jwt-kit"),  // token signatures (HS256, RS256, ES256, EdDSA)
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "ChatService",
            dependencies: [
                "NATS", "ChatCore", "ServiceSupport",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "Broadcaster",
            dependencies: [
                "NATS", "ChatCore", "ServiceSupport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Hummingbird", package: "hummingbird"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "Gateway",
            dependencies: [
                "NATS", "ChatCore", "ServiceSupport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
            ],
            swiftSettings: swiftSettings
        ),
        // The executables live apart from their libraries: Sources/gateway and Sources/Gateway would be one
        // folder on a case-insensitive file system.
        .executableTarget(
            name: "gateway", dependencies: ["Gateway", "ServiceSupport"], path: "Sources/Executables/gateway",
            swiftSettings: swiftSettings),
        .executableTarget(
            name: "chat-service", dependencies: ["ChatService", "ServiceSupport"], path: "Sources/Executables/chat-service",
            swiftSettings: swiftSettings),
        .executableTarget(
            name: "broadcaster", dependencies: ["Broadcaster", "ServiceSupport"], path: "Sources/Executables/broadcaster",
            swiftSettings: swiftSettings),
        .testTarget(
            name: "NATSTests",
            dependencies: ["NATS", "NATSTesting"],
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "ChatCoreTests", dependencies: ["ChatCore"], swiftSettings: swiftSettings),
        .testTarget(
            name: "GatewayTests",
            dependencies: [
                "Gateway", "ServiceSupport",
                .product(name: "JWTKit", package: "jwt-kit"),  // keys made and tokens signed in the tests
                .product(name: "CryptoExtras", package: "swift-crypto"),  // RSA key generation
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "ChatServiceTests", dependencies: ["ChatService"], swiftSettings: swiftSettings),
        .testTarget(
            name: "SystemTests",
            dependencies: [
                "NATS", "NATSTesting", "ChatCore", "ChatService", "Broadcaster", "Gateway",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "WSClient", package: "swift-websocket"),
            ],
            swiftSettings: swiftSettings
        ),
    ],
    swiftLanguageModes: [.v6]
)
