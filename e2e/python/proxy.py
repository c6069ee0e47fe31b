"""A TCP proxy on a loopback port that a test can cut and restore, to break one process's NATS
connection without touching the others (the process reconnects through the proxy once restored), or
freeze, to make a connection half-open (nothing passes, nothing is closed)."""

from __future__ import annotations

import socket
import threading


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.blocked = False
        self.closed = False
        self.flowing = threading.Event()  # cleared by `freeze`
        self.flowing.set()
        self.lock = threading.Lock()
        self.sockets: set[socket.socket] = set()
        self.connections = 0
        threading.Thread(target=self._accept, name=f"proxy-{self.port}", daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.blocked:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=2)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets.update((client, upstream))
                self.connections += 1
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                while not self.flowing.wait(0.5):
                    if self.closed:
                        return
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                self._drop(sock)

    def _drop(self, sock: socket.socket) -> None:
        with self.lock:
            self.sockets.discard(sock)
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()

    def cut(self) -> None:
        """Drops every proxied connection and refuses new ones until `restore`."""
        self.blocked = True
        with self.lock:
            sockets = list(self.sockets)
        for sock in sockets:
            self._drop(sock)

    def restore(self) -> None:
        self.blocked = False

    def freeze(self) -> None:
        """Half-open: the connections stay open but nothing is forwarded either way (a peer that vanished
        without FIN or RST, e.g. a phone that lost its network); bytes read meanwhile are held back."""
        self.flowing.clear()

    def thaw(self) -> None:
        self.flowing.set()

    def close(self) -> None:
        self.closed = True
        self.cut()
        self.listener.close()
