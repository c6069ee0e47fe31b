// swift-tools-version: 6.2
// The benchmark tools of nats-chat, kept out of the product package (../Package.swift), which they use by path.
//
//   swift build --package-path Benchmarks                              debug, into Benchmarks/.build
//   swift build -c release --package-path Benchmarks --scratch-path Benchmarks/.build-bench
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "nats-chat-benchmarks",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "chat-bench", targets: ["chat-bench"]),
        .executable(name: "chat-baseline", targets: ["chat-baseline"]),
        .executable(name: "nats-bench", targets: ["nats-bench"]),
        .executable(name: "chat-history-bench", targets: ["chat-history-bench"]),
    ],
    dependencies: [
        .package(name: "nats-chat", path: ".."),
        // traits: [] keeps SwiftPM from reordering trait flags (full rebuilds) and drops swift-configuration
        // (as in ../Package.swift; both must agree on hummingbird's version).
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", exact: "2.28.1", traits: []),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket.git", exact: "2.8.1"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
    ],
    targets: [
        // chat-bench: a load generator speaking only the public WebSocket protocol (plain SwiftNIO, no TLS).
        .target(
            name: "ChatBench",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(name: "chat-bench", dependencies: ["ChatBench"], swiftSettings: swiftSettings),
        // chat-baseline: a single-process in-memory broadcast server on the same stack (benchmark fixture).
        .executableTarget(
            name: "chat-baseline",
            dependencies: [
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        // nats-bench: the NATS module against raw libnats (CNATS) in the same run.
        .executableTarget(
            name: "nats-bench",
            dependencies: [
                .product(name: "CNATS", package: "nats-chat"),
                .product(name: "NATS", package: "nats-chat"),
                .product(name: "NATSTesting", package: "nats-chat"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "chat-history-bench",
            dependencies: [
                .product(name: "ChatService", package: "nats-chat"),
                .product(name: "ChatCore", package: "nats-chat"),
                .product(name: "NATS", package: "nats-chat"),
                .product(name: "NATSTesting", package: "nats-chat"),
                .product(name: "ServiceSupport", package: "nats-chat"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "ChatBenchTests", dependencies: ["ChatBench"], swiftSettings: swiftSettings),
    ],
    swiftLanguageModes: [.v6]
)
