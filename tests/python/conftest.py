"""Fixtures for black-box tests of the built binaries against a real nats-server.

- ``nats_server``: a private ``nats-server -js`` on a free loopback port with a temporary store.
- ``chat_service``: the built ``chat-service`` binary (``CHAT_SERVICE_BIN``, default
  ``.build/debug/chat-service``) connected to that server, ready once it answers ``$SRV.PING.chat``.
- ``nats_run``: runs an ``async def f(nc)`` with a fresh nats-py connection to that server.

Everything here uses nats-py only, as an independent client; the tests do not import project code.
Both servers are session-scoped: starting them once keeps the suite fast. Tests that compare counters
read them before and after their own requests, so they do not depend on test order.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

import nats
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICE_NAME = "chat"
NATS_READY_DEADLINE = 20.0
SERVICE_READY_DEADLINE = 45.0
STOP_GRACE = 10.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:]) or "(empty log)"


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, wait up to STOP_GRACE seconds, then SIGKILL."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_GRACE)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def _resolve_binary(value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else REPO_ROOT / path


@dataclass
class NatsServer:
    url: str
    port: int
    store: Path
    log: Path
    process: subprocess.Popen[bytes]


@dataclass
class ChatService:
    binary: Path
    log: Path
    process: subprocess.Popen[bytes]
    nats_url: str

    def assert_running(self) -> None:
        code = self.process.poll()
        if code is not None:
            pytest.fail(f"chat-service exited with code {code}; last log lines:\n{_tail(self.log)}")


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory):
    binary = os.environ.get("NATS_SERVER_BIN") or shutil.which("nats-server") or "/usr/sbin/nats-server"
    if not Path(binary).exists():
        pytest.fail(f"nats-server not found (tried {binary}); run scripts/bootstrap or set NATS_SERVER_BIN")
    base = tmp_path_factory.mktemp("nats")
    store = base / "store"
    log = base / "nats-server.log"
    port = _free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + NATS_READY_DEADLINE
        while not _port_open(port):
            if process.poll() is not None:
                pytest.fail(f"nats-server exited with code {process.returncode}:\n{_tail(log)}")
            if time.monotonic() > deadline:
                pytest.fail(f"nats-server did not accept connections on port {port} within "
                            f"{NATS_READY_DEADLINE:.0f} s:\n{_tail(log)}")
            time.sleep(0.05)
        yield NatsServer(url=f"nats://127.0.0.1:{port}", port=port, store=store, log=log, process=process)
    finally:
        _stop(process)


async def _connect(url: str):
    return await nats.connect(url, connect_timeout=2, allow_reconnect=False, max_reconnect_attempts=0)


async def _pings_chat(url: str) -> bool:
    try:
        nc = await _connect(url)
    except Exception:
        return False
    try:
        await nc.request(f"$SRV.PING.{SERVICE_NAME}", b"", timeout=0.5)
        return True
    except Exception:
        return False
    finally:
        await nc.close()


@pytest.fixture(scope="session")
def chat_service(nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory):
    binary = _resolve_binary(os.environ.get("CHAT_SERVICE_BIN", ".build/debug/chat-service"))
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.fail(
            f"chat-service binary not found at {binary}: build it first "
            "(`swift build --build-tests`, which scripts/test runs) or set CHAT_SERVICE_BIN"
        )
    log = tmp_path_factory.mktemp("chat-service") / "chat-service.log"
    env = dict(os.environ)
    env.update({
        "NATS_URL": nats_server.url,
        "HTTP_PORT": "0",
        "HTTP_HOST": "127.0.0.1",
        "LOG_LEVEL": env.get("LOG_LEVEL", "info"),
    })
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(binary)], cwd=REPO_ROOT, env=env,
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    service = ChatService(binary=binary, log=log, process=process, nats_url=nats_server.url)
    try:
        deadline = time.monotonic() + SERVICE_READY_DEADLINE
        while not asyncio.run(_pings_chat(nats_server.url)):
            service.assert_running()
            if time.monotonic() > deadline:
                pytest.fail(f"chat-service did not answer $SRV.PING.{SERVICE_NAME} within "
                            f"{SERVICE_READY_DEADLINE:.0f} s; last log lines:\n{_tail(log)}")
            time.sleep(0.1)
        yield service
    finally:
        _stop(process)
        if process.returncode not in (0, -signal.SIGTERM, -signal.SIGKILL):
            print(f"chat-service exited with code {process.returncode}; last log lines:\n{_tail(log)}")


NatsRun = Callable[[Callable[[Any], Awaitable[Any]]], Any]


@pytest.fixture
def nats_run(chat_service: ChatService) -> NatsRun:
    """``nats_run(f)`` runs ``await f(nc)`` with a fresh nats-py connection and returns its result."""

    def run(body: Callable[[Any], Awaitable[Any]]) -> Any:
        async def main() -> Any:
            nc = await _connect(chat_service.nats_url)
            try:
                return await asyncio.wait_for(body(nc), timeout=30)
            finally:
                await nc.close()

        result = asyncio.run(main())
        chat_service.assert_running()
        return result

    return run
