"""Launcher for the whole nats-chat system in black-box tests: a private ``nats-server -js`` plus any
number of ``chat-service``, ``broadcaster`` and ``gateway`` processes (the built binaries).

Everything listens on free loopback ports; each system has its own temp dir with the JetStream store
and one log file per process (restarts append to it). Readiness is polled with deadlines:

- nats-server: the client port accepts connections and ``$JS.API.INFO`` answers;
- chat-service: it answers ``$SRV.PING.chat`` with its own ``INSTANCE_ID`` in the metadata;
- broadcaster: it answers ``$SRV.PING.broadcaster`` with its ``INSTANCE_ID``, and ``/health`` answers;
- gateway: ``GET /health`` is 200.

Any process can be killed (SIGKILL), terminated (SIGTERM), paused (SIGSTOP/SIGCONT) and restarted
with the same ports, store and environment. The blocking methods must not run on an event loop's
thread; async tests use the ``a…`` variants, which run them in a worker thread.

The binaries are copied once per test session into a temp dir, so a concurrent ``swift build`` that
relinks ``.build/debug`` cannot swap a binary under a running test (or leave it missing for a moment).
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

import nats

REPO_ROOT = Path(__file__).resolve().parents[2]
NATS_READY_DEADLINE = 20.0
SERVICE_READY_DEADLINE = 45.0
STOP_GRACE = 10.0
POLL = 0.05

BINARY_ENV = {"chat-service": "CHAT_SERVICE_BIN", "broadcaster": "BROADCASTER_BIN", "gateway": "GATEWAY_BIN"}


class SystemError_(AssertionError):
    """A process did not start, or did not become ready in time (an assertion, so pytest reports it as a failure)."""


# --- small helpers (also used by conftest.py) ---------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:]) or "(empty log)"


def stop_process(process: subprocess.Popen[bytes], grace: float = STOP_GRACE) -> None:
    """SIGTERM, wait up to `grace` seconds, then SIGKILL."""
    if process.poll() is not None:
        return
    try:
        process.send_signal(signal.SIGCONT)  # a paused process cannot handle SIGTERM
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def resolve_binary(value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else REPO_ROOT / path


# nats-server 2.15.1 from PyPI (scripts/bootstrap): a newer server than Debian's for the tests that need one.
NEWER_NATS_SERVER = REPO_ROOT / ".data" / "nats-server-2.15.1" / "bin" / "nats-server"


def nats_server_binary() -> str:
    binary = os.environ.get("NATS_SERVER_BIN") or shutil.which("nats-server") or "/usr/sbin/nats-server"
    if not Path(binary).exists():
        raise SystemError_(f"nats-server not found (tried {binary}); run scripts/bootstrap or set NATS_SERVER_BIN")
    return binary


_binary_lock = threading.Lock()
_binary_copies: dict[str, Path] = {}
_binary_dir: Path | None = None


def service_binary(name: str, source: Path | None = None) -> Path:
    """The binary of `name` (env override or .build/debug/<name>; `source`: another build of it, such as an
    older release's), copied once per session."""
    global _binary_dir
    key = name if source is None else str(source)
    with _binary_lock:
        if key in _binary_copies:
            return _binary_copies[key]
        source = source or resolve_binary(os.environ.get(BINARY_ENV[name], f".build/debug/{name}"))
        # A concurrent `swift build` may be relinking it right now: wait a little for it to reappear.
        deadline = time.monotonic() + 60
        while not (source.is_file() and os.access(source, os.X_OK)):
            if time.monotonic() > deadline:
                raise SystemError_(f"{name} binary not found at {source}: run `swift build` first "
                                   f"or set {BINARY_ENV[name]}")
            time.sleep(0.5)
        if _binary_dir is None:
            _binary_dir = Path(tempfile.mkdtemp(prefix="nats-chat-bin-"))
            # Every user of the copies (pytest, bench.py, chaos.py, slowbench.py) leaves them behind
            # otherwise: ~200 MB per run, hundreds of runs filled /tmp once.
            atexit.register(cleanup_binaries)
        target = _binary_dir / name if key == name else _binary_dir / f"{name}-{len(_binary_copies)}"
        for _ in range(20):
            try:
                shutil.copy2(source, target)
                break
            except OSError:  # relinked while copying
                time.sleep(0.5)
        _binary_copies[key] = target
        return target


def cleanup_binaries() -> None:
    global _binary_dir
    with _binary_lock:
        if _binary_dir is not None:
            shutil.rmtree(_binary_dir, ignore_errors=True)
            _binary_dir = None
            _binary_copies.clear()


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET without raising on 4xx/5xx: (status, body)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def run_async(coro_factory: Callable[[], Any]) -> Any:
    """Runs `await coro_factory()` to completion on a private event loop (from synchronous code)."""
    return asyncio.run(coro_factory())


async def nats_request_all(url: str, subject: str, wait: float = 0.3, payload: bytes = b"") -> list[dict[str, Any]]:
    """Every JSON reply to one request within `wait` seconds (for `$SRV.PING` that is one per instance)."""
    nc = await nats.connect(url, connect_timeout=1, allow_reconnect=False, max_reconnect_attempts=0)
    try:
        inbox = nc.new_inbox()
        subscription = await nc.subscribe(inbox)
        await nc.publish(subject, payload, reply=inbox)
        await nc.flush()
        replies = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while (left := deadline - loop.time()) > 0:
            try:
                message = await subscription.next_msg(timeout=left)
            except Exception:
                break
            try:
                replies.append(json.loads(message.data))
            except ValueError:
                pass
        return replies
    finally:
        await nc.close()


# --- processes ---------------------------------------------------------------------------------------------

class Process:
    """One child process with its log, start/stop/kill/pause/restart and a readiness probe."""

    kind = "process"

    def __init__(self, system: "System", name: str, argv: list[str], env: dict[str, str]):
        self.system = system
        self.name = name
        self.argv = argv
        self.env = env
        self.log = system.dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def __repr__(self) -> str:
        return f"<{self.kind} {self.name} pid={self.pid}>"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def start(self) -> "Process":
        assert not self.running, f"{self.name} is already running"
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"===== {self.name} start #{self.starts} at {time.strftime('%H:%M:%S')} =====\n".encode())
            out.flush()
            self.process = subprocess.Popen(
                self.argv, cwd=REPO_ROOT, env=self.env,
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        return self

    def probe(self) -> bool:
        """True once the process serves; overridden per kind."""
        return True

    def wait_ready(self, deadline: float = SERVICE_READY_DEADLINE) -> "Process":
        end = time.monotonic() + deadline
        while not self.probe():
            if not self.running:
                raise SystemError_(f"{self.name} exited with code {self.returncode} before it was ready:\n{self.tail()}")
            if time.monotonic() > end:
                raise SystemError_(f"{self.name} was not ready within {deadline:.0f} s:\n{self.tail()}")
            time.sleep(POLL)
        return self

    def kill(self) -> None:
        """SIGKILL (kill -9) and reap."""
        if self.running:
            self.process.kill()
            self.process.wait(timeout=5)

    def terminate(self, timeout: float = STOP_GRACE) -> int:
        """SIGTERM and wait for the exit; returns the exit code (fails the test if it does not exit in time)."""
        assert self.process is not None
        if self.running:
            self.process.send_signal(signal.SIGCONT)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
                raise SystemError_(f"{self.name} did not exit within {timeout:.0f} s of SIGTERM:\n{self.tail()}")
        return self.process.returncode

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)

    def pause(self) -> None:
        assert self.running
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.running
        self.process.send_signal(signal.SIGCONT)

    def restart(self, wait: bool = True) -> "Process":
        """Starts again with the same arguments, ports and environment (stopping it first if it runs)."""
        self.stop()
        self.start()
        return self.wait_ready() if wait else self

    def assert_running(self) -> None:
        if not self.running:
            raise SystemError_(f"{self.name} exited with code {self.returncode}; last log lines:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        return tail(self.log, lines)

    # Async variants for use inside a running event loop (they block a worker thread, not the loop).
    async def arestart(self, wait: bool = True) -> "Process":
        return await asyncio.to_thread(self.restart, wait)

    async def akill(self) -> None:
        await asyncio.to_thread(self.kill)

    async def aterminate(self, timeout: float = STOP_GRACE) -> int:
        return await asyncio.to_thread(self.terminate, timeout)

    async def await_ready(self, deadline: float = SERVICE_READY_DEADLINE) -> "Process":
        return await asyncio.to_thread(self.wait_ready, deadline)


class NatsServer(Process):
    kind = "nats-server"

    def __init__(self, system: "System", extra_args: list[str] | None = None, binary: str | None = None,
                 store: Path | None = None):
        self.port = free_port()
        # `store`: an existing store directory (the upgrade test's unpacked fixture) instead of a fresh one.
        self.store = Path(store) if store is not None else system.dir / "jetstream"
        self.url = f"nats://127.0.0.1:{self.port}"
        if binary is not None and not Path(binary).exists():
            raise SystemError_(f"nats-server not found at {binary}; run scripts/bootstrap")
        argv = [binary or nats_server_binary(), "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store),
                *(extra_args or [])]
        super().__init__(system, "nats-server", argv, dict(os.environ))

    async def connect(self, **kwargs):
        """A nats-py connection (no reconnects unless asked)."""
        options = dict(connect_timeout=2, allow_reconnect=False, max_reconnect_attempts=0)
        options.update(kwargs)
        return await nats.connect(self.url, **options)

    def probe(self) -> bool:
        """Ready when JetStream answers $JS.API.INFO."""
        if not port_open(self.port):
            return False

        async def js_info():
            nc = await self.connect(connect_timeout=1)
            try:
                await nc.request("$JS.API.INFO", b"", timeout=1)
                return True
            finally:
                await nc.close()

        try:
            return run_async(js_info)
        except Exception:
            return False

    def wait_ready(self, deadline: float = NATS_READY_DEADLINE) -> "Process":
        return super().wait_ready(deadline)


class Service(Process):
    """A chat-service, broadcaster or gateway: env NATS_URL, its ports, its id, plus overrides."""

    binary_name = ""
    srv_name = ""
    id_variable = "INSTANCE_ID"

    def __init__(self, system: "System", index: int, env: dict[str, str] | None, binary: Path | None = None):
        self.instance_id = f"{self.binary_name.replace('-', '')}{index}-{system.tag}"
        base = dict(os.environ)
        base.update({
            "NATS_URL": system.nats.url,
            "LOG_LEVEL": os.environ.get("LOG_LEVEL", "info"),
        })
        base.update(self.own_env())
        base.update(env or {})
        self.instance_id = base[self.id_variable]
        super().__init__(system, f"{self.binary_name}-{index}", [str(service_binary(self.binary_name, binary))], base)

    def own_env(self) -> dict[str, str]:
        return {}

    def srv_ping(self) -> bool:
        try:
            replies = run_async(lambda: nats_request_all(self.system.nats.url, f"$SRV.PING.{self.srv_name}"))
        except Exception:
            return False
        return any((reply.get("metadata") or {}).get("instance") == self.instance_id for reply in replies)


class ChatService(Service):
    kind = "chat-service"
    binary_name = "chat-service"
    srv_name = "chat"

    def own_env(self) -> dict[str, str]:
        return {"HTTP_PORT": "0", "HTTP_HOST": "127.0.0.1", "INSTANCE_ID": self.instance_id}

    @property
    def nats_url(self) -> str:
        return self.system.nats.url

    def probe(self) -> bool:
        return self.srv_ping()


class Broadcaster(Service):
    kind = "broadcaster"
    binary_name = "broadcaster"
    srv_name = "broadcaster"

    def own_env(self) -> dict[str, str]:
        self.http_port = free_port()
        return {"HTTP_PORT": str(self.http_port), "HTTP_HOST": "127.0.0.1", "INSTANCE_ID": self.instance_id}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def health(self) -> tuple[int, dict[str, Any]]:
        status, body = http_get(self.base_url + "/health")
        return status, json.loads(body)

    def probe(self) -> bool:
        try:
            self.health()
        except (OSError, ValueError):
            return False
        return self.srv_ping()


class Gateway(Service):
    kind = "gateway"
    binary_name = "gateway"
    id_variable = "GATEWAY_ID"

    # Every test client comes from 127.0.0.1, so the per-address limits (on by default) are raised here;
    # the tests of those limits pass their own values, or "" for the built-in default.
    TEST_LIMITS = {"MAX_CONNECTIONS_PER_IP": "0", "ROOM_CREATE_PER_MIN": "1000000"}

    def own_env(self) -> dict[str, str]:
        self.port = free_port()
        return {"PORT": str(self.port), "HOST": "127.0.0.1", "GATEWAY_ID": self.instance_id, **self.TEST_LIMITS}

    @property
    def gateway_id(self) -> str:
        return self.instance_id

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, username: str | None = None, **query: str) -> str:
        from urllib.parse import urlencode
        params = dict(query)
        if username is not None:
            params = {"username": username, **params}
        return f"ws://127.0.0.1:{self.port}/ws" + (f"?{urlencode(params)}" if params else "")

    def probe(self) -> bool:
        try:
            status, _ = http_get(self.base_url + "/health", timeout=1)
        except OSError:
            return False
        return status == 200

    def metrics(self) -> str:
        return http_get(self.base_url + "/metrics")[1].decode()

    def metric(self, name: str, labels: str = "") -> float:
        """The value of one Prometheus sample (`name{labels}`), 0 when absent."""
        return metric_value(self.metrics(), name, labels)


def metric_value(text: str, name: str, labels: str = "") -> float:
    wanted = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        if key == wanted:
            return float(value)
    return 0.0


# --- the system --------------------------------------------------------------------------------------------

class System:
    """One nats-server and the services around it. `stop()` stops everything (gateways first)."""

    _count = 0
    active: list["System"] = []

    def __init__(self, base_dir: Path):
        System._count += 1
        self.tag = f"s{System._count}"
        self.dir = Path(base_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.nats: NatsServer | None = None
        self.chat_services: list[ChatService] = []
        self.broadcasters: list[Broadcaster] = []
        self.gateways: list[Gateway] = []
        System.active.append(self)

    @property
    def processes(self) -> list[Process]:
        return [p for p in [self.nats, *self.chat_services, *self.broadcasters, *self.gateways] if p is not None]

    def start_nats(self, extra_args: list[str] | None = None, binary: str | None = None,
                   store: Path | None = None) -> NatsServer:
        self.nats = NatsServer(self, extra_args, binary, store)
        self.nats.start().wait_ready()
        return self.nats

    def add_chat_service(self, env: dict[str, str] | None = None, wait: bool = True, binary: Path | None = None) -> ChatService:
        """`binary`: another build than the tested one (an older release's, for mixed versions)."""
        service = ChatService(self, len(self.chat_services), env, binary)
        self.chat_services.append(service)
        service.start()
        return service.wait_ready() if wait else service

    def add_broadcaster(self, env: dict[str, str] | None = None, wait: bool = True, binary: Path | None = None) -> Broadcaster:
        broadcaster = Broadcaster(self, len(self.broadcasters), env, binary)
        self.broadcasters.append(broadcaster)
        broadcaster.start()
        return broadcaster.wait_ready() if wait else broadcaster

    def add_gateway(self, env: dict[str, str] | None = None, wait: bool = True, binary: Path | None = None) -> Gateway:
        gateway = Gateway(self, len(self.gateways), env, binary)
        self.gateways.append(gateway)
        gateway.start()
        return gateway.wait_ready() if wait else gateway

    def start(self, chat_services: int = 1, broadcasters: int = 1, gateways: int = 1,
              chat_env: dict[str, str] | None = None, broadcaster_env: dict[str, str] | None = None,
              gateway_env: dict[str, str] | None = None, nats_store: Path | None = None) -> "System":
        """nats-server (on `nats_store` when given), then the chat-services (they create the stream), then
        broadcasters and gateways started together and waited for together."""
        if self.nats is None:
            self.start_nats(store=nats_store)
        for _ in range(chat_services):
            self.add_chat_service(chat_env, wait=False)
        for service in self.chat_services:
            service.wait_ready()
        started = [self.add_broadcaster(broadcaster_env, wait=False) for _ in range(broadcasters)]
        started += [self.add_gateway(gateway_env, wait=False) for _ in range(gateways)]
        for process in started:
            process.wait_ready()
        return self

    @property
    def gateway(self) -> Gateway:
        return self.gateways[0]

    @property
    def broadcaster(self) -> Broadcaster:
        return self.broadcasters[0]

    @property
    def chat_service(self) -> ChatService:
        return self.chat_services[0]

    def stop(self) -> None:
        for process in reversed(self.processes):
            try:
                process.stop()
            except Exception as error:  # keep stopping the others
                print(f"could not stop {process}: {error}")
        if self in System.active:
            System.active.remove(self)

    def log_tails(self, lines: int = 30) -> str:
        parts = []
        for process in self.processes:
            state = "running" if process.running else f"exited {process.returncode}"
            parts.append(f"----- {process.name} ({state}) {process.log} -----\n{process.tail(lines)}")
        return "\n".join(parts)
