import Foundation
import NATS

#if canImport(Glibc)
import Glibc
#endif

/// A real `nats-server -js` for tests: a free loopback port, a private temporary store directory, started
/// and awaited (by connecting, with a deadline), stopped on `stop()` or deinit. Each instance is
/// independent, so tests can run in parallel. `restart()` brings the same server back on the same port
/// with the same store, for reliability tests.
public final class NATSServerProcess: @unchecked Sendable {
    // @unchecked: the mutable `process` is only touched by the owning test through start/stop/restart.
    public let port: Int
    public let storeDirectory: URL
    public let extraConfiguration: String
    private var process: Process?
    private let logFile: URL

    public var url: String { "nats://127.0.0.1:\(port)" }

    /// - Parameter configuration: extra nats-server config text (e.g. `authorization { … }`).
    public init(configuration: String = "") throws {
        port = try Self.freePort()
        storeDirectory = FileManager.default.temporaryDirectory.appendingPathComponent("nats-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: storeDirectory, withIntermediateDirectories: true)
        logFile = storeDirectory.appendingPathComponent("server.log")
        extraConfiguration = configuration
        try start()
    }

    deinit {
        stop()
        if ProcessInfo.processInfo.environment["NATS_TEST_KEEP"] == nil { try? FileManager.default.removeItem(at: storeDirectory) }
    }

    public static var executable: String {
        if let path = ProcessInfo.processInfo.environment["NATS_SERVER_BIN"] { return path }
        for directory in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/usr/sbin").split(separator: ":") {
            let candidate = "\(directory)/nats-server"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return "/usr/sbin/nats-server"
    }

    public func start() throws {
        let config = """
            listen: 127.0.0.1:\(port)
            jetstream { store_dir: "\(storeDirectory.appendingPathComponent("js").path)" }
            \(ProcessInfo.processInfo.environment["NATS_TEST_TRACE"] != nil ? "trace: true" : "")
            \(extraConfiguration)
            """
        let configFile = storeDirectory.appendingPathComponent("server.conf")
        try config.write(to: configFile, atomically: true, encoding: .utf8)
        _ = FileManager.default.createFile(atPath: logFile.path, contents: nil)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.executable)
        process.arguments = ["-c", configFile.path, "-l", logFile.path]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        self.process = process
        LiveServers.shared.add(process.processIdentifier)
        try waitUntilReady(deadline: Date().addingTimeInterval(15))
    }

    /// Waits until the server logs that it is ready (JetStream included) and accepts TCP connections.
    private func waitUntilReady(deadline: Date) throws {
        while Date() < deadline {
            guard let process, process.isRunning else {
                throw TestServerError("nats-server exited during start-up: \(log())")
            }
            if log().contains("Server is ready"), Self.canConnect(port: port) { return }
            usleep(10_000)  // polling a condition with a deadline, not sleeping as synchronisation
        }
        throw TestServerError("nats-server not ready on port \(port) within the deadline: \(log())")
    }

    public func log() -> String { (try? String(contentsOf: logFile, encoding: .utf8)) ?? "" }

    /// Stops the server. `kill: true` sends SIGKILL (a crash), otherwise SIGTERM (a clean shutdown).
    public func stop(kill: Bool = false) {
        guard let process else { return }
        if process.isRunning {
            Glibc.kill(process.processIdentifier, kill ? SIGKILL : SIGTERM)
            Glibc.kill(process.processIdentifier, SIGCONT)  // a paused server must run to handle SIGTERM
            process.waitUntilExit()
        }
        LiveServers.shared.remove(process.processIdentifier)
        self.process = nil
    }

    public func restart(kill: Bool = false) throws {
        stop(kill: kill)
        try start()
    }

    public var isRunning: Bool { process?.isRunning ?? false }

    /// Freezes the server (SIGSTOP): its connections stay open but nothing is answered — a server
    /// that hangs, as opposed to one that is gone.
    public func pause() {
        if let process, process.isRunning { Glibc.kill(process.processIdentifier, SIGSTOP) }
    }

    /// Lets a paused server run again (SIGCONT).
    public func resume() {
        if let process, process.isRunning { Glibc.kill(process.processIdentifier, SIGCONT) }
    }

    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestServerError("socket() failed") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        guard bound == 0 else { throw TestServerError("bind() failed") }
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0 else { throw TestServerError("getsockname() failed") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    static func canConnect(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        } == 0
    }

    /// A connection to this server for tests (one attempt; fails fast).
    public func connect(name: String = "test") async throws -> NATSConnection {
        try await NATSConnection.connect(NATSConfiguration(url: url, name: name), retryUntilConnected: false)
    }
}

public struct TestServerError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Polls `condition` until it holds or `timeout` passes: the way tests wait, instead of sleeping.
public func eventually(
    _ what: String = "condition",
    timeout: Duration = .seconds(10),
    poll: Duration = .milliseconds(20),
    _ condition: @Sendable () async throws -> Bool
) async throws {
    let deadline = ContinuousClock.now.advanced(by: timeout)
    while ContinuousClock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: poll)
    }
    throw TestServerError("timed out after \(timeout) waiting for \(what)")
}

/// Reads up to `count` messages from `subscription`, giving up at `timeout` (so a failing test ends).
public func collect(_ subscription: NATSSubscription, count: Int, timeout: Duration = .seconds(10)) async -> [NATSMessage] {
    await withTaskGroup(of: [NATSMessage]?.self) { group in
        group.addTask {
            var messages: [NATSMessage] = []
            for await message in subscription {
                messages.append(message)
                if messages.count == count { break }
            }
            return messages
        }
        group.addTask {
            try? await Task.sleep(for: timeout)
            return nil
        }
        let first = await group.next() ?? nil
        group.cancelAll()
        return first ?? []
    }
}

/// The servers this process started and has not stopped, killed when the process ends however it
/// ends: a fixture that is never deinitialized (a test that leaks it) or a crashing test would
/// otherwise leave its nats-server running after the test process (seen: one per such run).
/// `atexit` covers a normal exit; on a crash or termination signal they are killed first and the
/// signal then goes to the handler that was installed before (Swift's backtracer, or the default).
final class LiveServers: @unchecked Sendable {
    // @unchecked: `slots` is written under `lock`; the signal handler only reads it (pid_t stores
    // are single machine words) and calls kill(2), sigaction(2) and raise(3), which are
    // async-signal-safe. `previous` is written once, before the handlers are installed.
    static let shared = LiveServers()
    static let capacity = 1024
    let slots = UnsafeMutablePointer<pid_t>.allocate(capacity: LiveServers.capacity)
    let previous = UnsafeMutablePointer<sigaction>.allocate(capacity: 65)
    private let lock = NSLock()
    /// Faults come back by themselves when the handler returns (the instruction runs again); the
    /// others are raised again.
    private static let faults = [SIGSEGV, SIGBUS, SIGILL, SIGFPE]
    private static let raised = [SIGABRT, SIGTRAP, SIGTERM, SIGINT, SIGHUP]

    private init() {
        slots.initialize(repeating: 0, count: Self.capacity)
        previous.initialize(repeating: sigaction(), count: 65)
        atexit { LiveServers.killAll() }
        for signal in Self.faults + Self.raised {
            var action = sigaction()
            if Self.faults.contains(signal) {
                action.__sigaction_handler.sa_handler = { signal in
                    LiveServers.killAll()
                    sigaction(signal, LiveServers.shared.previous + Int(signal), nil)
                }
            } else {
                action.__sigaction_handler.sa_handler = { signal in
                    LiveServers.killAll()
                    sigaction(signal, LiveServers.shared.previous + Int(signal), nil)
                    raise(signal)
                }
            }
            sigaction(signal, &action, previous + Int(signal))
        }
    }

    func add(_ pid: pid_t) {
        lock.withLock {
            guard let free = (0..<Self.capacity).first(where: { slots[$0] == 0 }) else { return }
            slots[free] = pid
        }
    }

    func remove(_ pid: pid_t) {
        lock.withLock {
            for index in 0..<Self.capacity where slots[index] == pid { slots[index] = 0 }
        }
    }

    func contains(_ pid: pid_t) -> Bool {
        lock.withLock { (0..<Self.capacity).contains { slots[$0] == pid } }
    }

    static func killAll() {
        let slots = shared.slots
        for index in 0..<capacity where slots[index] > 0 { kill(slots[index], SIGKILL) }
    }
}
