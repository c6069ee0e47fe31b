// chat-bench: load generator for the seed chat WebSocket protocol. `chat-bench --help` for usage;
// BENCHMARKS.md for the scenarios, commands and results.
import ChatBench
import Foundation

let options: Options
do {
    options = try Options.parse(Array(CommandLine.arguments.dropFirst()))
} catch {
    FileHandle.standardError.write(Data("\(error)\n".utf8))
    exit(2)
}
// Every run is bounded: the whole process ends after --deadline seconds whatever happens.
Thread.detachNewThread {
    Thread.sleep(forTimeInterval: options.deadline)
    FileHandle.standardError.write(Data("chat-bench: deadline of \(options.deadline) s reached, exiting\n".utf8))
    exit(3)
}
do {
    let bench = try Bench(options: options)
    let ok = try await bench.run()
    exit(ok ? 0 : 1)
} catch {
    FileHandle.standardError.write(Data("chat-bench: \(error)\n".utf8))
    exit(1)
}
