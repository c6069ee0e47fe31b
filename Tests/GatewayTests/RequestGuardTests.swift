import Foundation
import Hummingbird
import Testing

@testable import Gateway

@Suite("REST write and static file guards (pure parts)")
struct RequestGuardTests {
    @Test(arguments: [
        ("application/json", true), ("Application/JSON", true), ("application/json; charset=utf-8", true), (" application/json ;x=y", true),
        ("text/plain", false), ("application/jsonx", false), ("application/json-patch+json", false), ("", false),
        ("multipart/form-data; boundary=application/json", false),
    ])
    func contentTypes(_ value: String, _ isJSON: Bool) {
        #expect(WriteGuard<GatewayRequestContext>.isJSON(value) == isJSON)
    }

    @Test func noContentTypeIsNotJSON() {
        #expect(!WriteGuard<GatewayRequestContext>.isJSON(nil))
    }

    @Test func symlinksOutsideTheRootEscapeAndOnesInsideDoNot() throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("static-guard-\(UUID().uuidString)")
        let root = base.appendingPathComponent("root")
        let outside = base.appendingPathComponent("outside")
        defer { try? FileManager.default.removeItem(at: base) }
        for directory in [root.appendingPathComponent("sub"), outside] {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        }
        try Data("x".utf8).write(to: outside.appendingPathComponent("secret.txt"))
        try Data("x".utf8).write(to: outside.appendingPathComponent("index.html"))
        try Data("x".utf8).write(to: root.appendingPathComponent("sub/inner.txt"))
        let files = FileManager.default
        try files.createSymbolicLink(
            atPath: root.appendingPathComponent("leak.txt").path,
            withDestinationPath: outside.path + "/secret.txt"
        )
        try files.createSymbolicLink(atPath: root.appendingPathComponent("leakdir").path, withDestinationPath: outside.path)
        try files.createSymbolicLink(atPath: root.appendingPathComponent("inner.txt").path, withDestinationPath: "sub/inner.txt")
        typealias Guard = StaticFileGuard<BasicRequestContext>
        for path in ["/leak.txt", "/leakdir/secret.txt", "/leakdir/", "/leakdir"] {
            #expect(Guard.escapes(path, root: root.path), "\(path)")
        }
        for path in ["/sub/inner.txt", "/inner.txt", "/sub/", "/missing.txt", "/leakdir/missing.txt"] {
            #expect(!Guard.escapes(path, root: root.path), "\(path)")
        }
        // The root may itself be reached through a symlink: paths are compared with its real path.
        let rootLink = base.appendingPathComponent("root-link")
        try files.createSymbolicLink(atPath: rootLink.path, withDestinationPath: root.path)
        #expect(!Guard.escapes("/sub/inner.txt", root: rootLink.path))
        #expect(Guard.escapes("/leak.txt", root: rootLink.path))
    }
}
