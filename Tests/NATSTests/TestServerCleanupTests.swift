import Foundation
import Testing

@testable import NATSTesting

#if canImport(Glibc)
import Glibc
#endif

/// A test process that ends without stopping its servers (a leaked fixture, a crash) must not leave
/// them running: this runs this very test binary again, with one test that starts a server and
/// then leaks it or crashes, and checks that the server is gone once that process has ended.
@Suite("Test servers never outlive the test process")
struct TestServerCleanupTests {
    static let modeVariable = "NATS_TEST_CLEANUP_MODE"
    static let pidFileVariable = "NATS_TEST_CLEANUP_PIDFILE"

    /// A server is tracked from its start until it is stopped. Run again by
    /// `serversDieWithTheTestProcess` as the child, it leaks the server or crashes instead.
    @Test func aServerIsTrackedUntilStoppedOrLeakedByTheChild() throws {
        let server = try NATSServerProcess()
        let pid = try #require(Self.serverPID(port: server.port))
        #expect(LiveServers.shared.contains(pid))
        let environment = ProcessInfo.processInfo.environment
        if let mode = environment[Self.modeVariable], let pidFile = environment[Self.pidFileVariable] {
            _ = Unmanaged.passRetained(server)  // never deinitialized: nothing calls stop()
            try "\(pid)".write(toFile: pidFile, atomically: true, encoding: .utf8)
            if mode == "crash" { fatalError("crashing on purpose, with a nats-server running") }
            return
        }
        server.stop()
        #expect(!LiveServers.shared.contains(pid))
        #expect(!Self.isAlive(pid))
    }

    @Test(arguments: ["leak", "crash"])
    func serversDieWithTheTestProcess(mode: String) throws {
        let pidFile = FileManager.default.temporaryDirectory.appendingPathComponent("nats-cleanup-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: pidFile) }
        let child = Process()
        child.executableURL = URL(fileURLWithPath: try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
        child.arguments = ["--testing-library", "swift-testing", "--filter", "aServerIsTrackedUntilStoppedOrLeakedByTheChild"]
        var environment = ProcessInfo.processInfo.environment
        environment[Self.modeVariable] = mode
        environment[Self.pidFileVariable] = pidFile.path
        environment["SWIFT_BACKTRACE"] = "enable=no"  // a crash report of the deliberate crash is noise
        child.environment = environment
        child.standardOutput = FileHandle.nullDevice
        child.standardError = FileHandle.nullDevice
        try child.run()
        child.waitUntilExit()
        if mode == "crash" { #expect(child.terminationReason == .uncaughtSignal, "the child crashed") }
        let pid = try #require(pid_t(try String(contentsOf: pidFile, encoding: .utf8)), "the child started its server")
        // kill -9 is sent before the child exits; the server is gone once the kernel has reaped it.
        let deadline = Date().addingTimeInterval(10)
        while Self.isAlive(pid), Date() < deadline { usleep(10_000) }  // polling a condition with a deadline
        #expect(!Self.isAlive(pid), "nats-server \(pid) outlived the test process (\(mode))")
        if Self.isAlive(pid) { kill(pid, SIGKILL) }
    }

    /// The nats-server whose command line names a config in the store of the server on `port`.
    static func serverPID(port: Int) -> pid_t? {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        for entry in entries {
            guard let pid = pid_t(entry), let config = try? String(contentsOfFile: "/proc/\(entry)/cmdline", encoding: .utf8),
                config.contains("nats-server"), let path = config.split(separator: "\0").dropFirst(2).first,
                let text = try? String(contentsOfFile: String(path), encoding: .utf8), text.contains("127.0.0.1:\(port)\n")
            else { continue }
            return pid
        }
        return nil
    }

    /// Alive and not a zombie (a killed orphan is reaped by init).
    static func isAlive(_ pid: pid_t) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return false }
        guard let close = stat.lastIndex(of: ")") else { return false }
        return !stat[stat.index(close, offsetBy: 2)...].hasPrefix("Z")
    }
}
