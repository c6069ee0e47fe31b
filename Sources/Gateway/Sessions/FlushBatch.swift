import NIOCore

/// Collects the sockets a fan-out queued frames for, then flushes each event loop's sockets in one
/// task: one `execute` per loop per batch of room events instead of one per socket per frame.
struct FlushBatch {
    private var byLoop: [ObjectIdentifier: (loop: any EventLoop, clients: [ClientConnection])] = [:]

    /// Queues an encoded frame (`WebSocketFrameBytes`) for `client`.
    mutating func send(_ frame: ByteBuffer, to client: ClientConnection) {
        guard case .needsFlush = client.enqueue(frame) else { return }
        let loop = client.channel.eventLoop
        byLoop[ObjectIdentifier(loop), default: (loop, [])].clients.append(client)
    }

    mutating func submit() {
        for (loop, clients) in byLoop.values {
            loop.execute { for client in clients { client.flush() } }
        }
        byLoop.removeAll(keepingCapacity: true)
    }
}
