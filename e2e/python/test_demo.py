"""demo.py as users run it: against the system that `scripts/start --background --gateways 2` brings up
(nginx in front of two gateways, debug binaries, private ports and data dir), then stopped with
scripts/stop. Also: its summary catches missing and duplicated deliveries (against a fake server that
loses one and doubles one), and bad arguments or an unreachable server give one line and no traceback."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import random
import struct
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from system import REPO_ROOT, free_port, http_get, port_open, service_binary

DEMO = [sys.executable, str(REPO_ROOT / "demo.py")]


def demo(*args: str, env: dict[str, str] | None = None, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR")}
    full_env.update(env or {})
    return subprocess.run([*DEMO, *args], capture_output=True, text=True, timeout=timeout, env=full_env, cwd=REPO_ROOT)


def free_block(size: int) -> int:
    """A base port whose next `size` ports are free (base+1 … base+size), below the kernel's ephemeral
    range (so that no outgoing connection or free_port() takes one of them meanwhile)."""
    low = 20000
    try:
        low = min(low, int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0]) - 2000)
    except (OSError, ValueError, IndexError):
        pass
    for _ in range(200):
        base = random.randint(max(1025, low - 10000), low)
        if not any(port_open(base + i) for i in range(1, size + 1)):
            return base
    raise AssertionError("no free port block")


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("start-data")
    bin_dir = {service_binary(name).parent for name in ("chat-service", "broadcaster", "gateway")}
    assert len(bin_dir) == 1
    env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "START_DETACH")}
    env.update({
        "START_DATA_DIR": str(data), "START_SKIP_BUILD": "1", "START_BIN_DIR": str(bin_dir.pop()),
        "PORT": str(free_port()), "NATS_PORT": str(free_port()), "NATS_MONITOR_PORT": str(free_port()),
        "CHAT_SERVICE_HTTP_PORT": str(free_port()), "BROADCASTER_HTTP_PORT": str(free_port()),
        "GATEWAY_BASE_PORT": str(free_block(2)),
    })
    start = subprocess.run([str(REPO_ROOT / "scripts/start"), "--background", "--gateways", "2"], env=env,
                           capture_output=True, text=True, timeout=180, cwd=REPO_ROOT)
    try:
        assert start.returncode == 0, f"scripts/start failed:\n{start.stderr[-6000:]}"
        assert "2 behind nginx" in start.stderr, start.stderr
        yield {"port": env["PORT"], "data": data, "env": env, "start": start}
    finally:
        stop = subprocess.run([str(REPO_ROOT / "scripts/stop")], env=env, capture_output=True, text=True, timeout=120,
                              cwd=REPO_ROOT)
        print(stop.stderr)
        assert stop.returncode == 0, stop.stderr
        assert not (data / "pids").exists()


def test_scripts_start_runs_nginx_in_front_of_two_gateways(started):
    names = [line.split()[0] for line in (started["data"] / "pids").read_text().splitlines()]
    assert names == ["nats-server", "chat-service", "broadcaster", "gateway-1", "gateway-2", "nginx"], names
    base = int(started["env"]["GATEWAY_BASE_PORT"])
    ids = {json.loads(http_get(f"http://127.0.0.1:{base + i}/health")[1])["instance"] for i in (1, 2)}
    assert ids == {"gw-1", "gw-2"}
    status, body = http_get(f"http://127.0.0.1:{started['port']}/health")  # through nginx
    assert status == 200 and json.loads(body)["instance"] in ids


def test_demo_default_run_against_the_started_system(started):
    result = demo("--host", "127.0.0.1", "--port", started["port"])
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "\x1b[" not in out  # no colour codes when not on a terminal
    for user in ("alice", "bob", "carol"):
        assert f"→ {user} joined via gw-" in out
        assert f"received      {user:<8} 15/15" in out, out
    for line in ("sent          15", "missing       0", "duplicates    0", "out of order  0"):
        assert line in out, out
    assert "latency       p50 " in out and " p99 " in out
    assert "OK  every user received all 15 messages exactly once, in order" in out
    assert out.count("#") >= 15  # the conversation: one line per message with its seq


def test_demo_reuses_the_room_and_survives_the_rate_limit(started):
    room = f"demo-{uuid.uuid4().hex[:6]}"
    first = demo("--host", "127.0.0.1", "--port", started["port"], "--room", room, "--users", "2", "--messages", "2")
    assert first.returncode == 0 and f"room {room} (created" in first.stdout, first.stdout + first.stderr
    # 30 messages per user at once: beyond the gateway's burst of 20, so some are refused with
    # rate_limited and re-sent with the same client_msg_id — still exactly once.
    second = demo("--host", "127.0.0.1", "--port", started["port"], "--room", room, "--users", "4",
                  "--messages", "30", "--delay", "0")
    out = second.stdout
    assert second.returncode == 0, out + second.stderr
    assert f"room {room} (reused" in out
    assert "re-sent after the rate limit" in out, out
    assert "sent          120" in out and "missing       0" in out and "duplicates    0" in out


def test_demo_colours_on_request(started):
    result = demo("--host", "127.0.0.1", "--port", started["port"], "--users", "2", "--messages", "1",
                  env={"FORCE_COLOR": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "\x1b[36m" in result.stdout and "\x1b[1;32mOK" in result.stdout


@pytest.mark.parametrize("args, what", [
    (["--users", "0"], "--users: 0 is out of range"),
    (["--users", "three"], "--users: 'three' is not a whole number"),
    (["--messages", "-2"], "--messages"),
    (["--port", "70000"], "--port: 70000 is out of range"),
    (["--delay", "soon"], "--delay: 'soon' is not a number"),
    (["--room", "  "], "--room: the room name is empty"),
    (["--host", "a/b"], "--host"),
    (["--colour"], "unrecognized arguments: --colour"),
])
def test_demo_bad_arguments_give_one_line(args, what):
    result = demo(*args, timeout=30)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("demo.py: error: ") and what in lines[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_demo_unreachable_server_gives_one_line():
    port = free_port()
    result = demo("--host", "127.0.0.1", "--port", str(port), timeout=30)
    assert result.returncode == 3, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert lines == [f"demo.py: error: cannot reach the chat server at http://127.0.0.1:{port} "
                     "(is it running? try scripts/start)"], result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_demo_help_lists_the_seed_options():
    result = demo("--help", timeout=30)
    assert result.returncode == 0
    for option in ("--users N", "--messages N", "--room NAME", "--host HOST", "--port PORT", "--delay SECONDS"):
        assert option in result.stdout, result.stdout
    assert "(default 3)" in result.stdout and "(default 5)" in result.stdout and "(default 3000)" in result.stdout


# --- the summary catches what goes wrong ------------------------------------------------------------------

class FakeChatServer:
    """A minimal stand-in for the gateway (REST room creation + the WebSocket protocol, hand-rolled) that
    acknowledges every message but loses seq 2 for the first user and delivers seq 3 twice to the last."""

    def __init__(self):
        self.port = free_port()
        self.clients: list[asyncio.StreamWriter] = []
        self.seq = 0
        self.room = str(uuid.uuid4())
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(asyncio.start_server(self.handle, "127.0.0.1", self.port))
        self.ready.set()
        self.loop.run_forever()

    @staticmethod
    def frame(data: dict) -> bytes:
        payload = json.dumps(data).encode()
        n = len(payload)
        head = bytes([0x81, n]) if n < 126 else bytes([0x81, 126]) + struct.pack("!H", n)
        return head + payload

    async def read_frame(self, reader) -> tuple[int, bytes]:
        b0, b1 = await reader.readexactly(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", await reader.readexactly(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", await reader.readexactly(8))[0]
        mask = await reader.readexactly(4)
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(await reader.readexactly(n)))
        return b0 & 0x0F, data

    async def handle(self, reader, writer):
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        request, *lines = head.split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
        if request.startswith("POST"):
            body = json.loads(await reader.readexactly(int(headers.get("content-length", "0"))))
            room = json.dumps({"id": self.room, "name": body["name"], "created_at": "2024-01-01T00:00:00.000Z",
                               "member_count": 0}).encode()
            writer.write(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nConnection: close\r\n"
                         + f"Content-Length: {len(room)}\r\n\r\n".encode() + room)
            await writer.drain()
            writer.close()
            return
        accept = base64.b64encode(hashlib.sha1((headers["sec-websocket-key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
                                               .encode()).digest()).decode()
        writer.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode())
        name = request.split("username=")[1].split()[0]
        user_id = str(uuid.uuid4())
        writer.write(self.frame({"type": "connected", "user_id": user_id, "username": name, "gateway_id": "fake"}))
        self.clients.append(writer)
        try:
            while True:
                opcode, data = await self.read_frame(reader)
                if opcode == 8:
                    writer.write(bytes([0x88, 0]))
                    break
                frame = json.loads(data)
                if frame["type"] == "join":
                    writer.write(self.frame({"type": "joined", "room_id": self.room, "last_seq": 0}))
                elif frame["type"] == "message":
                    self.seq += 1
                    message = {"type": "message", "room_id": self.room, "message_id": str(uuid.uuid4()),
                               "user_id": user_id, "username": name, "content": frame["content"],
                               "client_msg_id": frame["client_msg_id"], "seq": self.seq,
                               "timestamp": "2024-01-01T00:00:00.000Z"}
                    writer.write(self.frame({"type": "ack", "client_msg_id": frame["client_msg_id"],
                                             "message_id": message["message_id"], "seq": self.seq, "room_id": self.room}))
                    for i, client in enumerate(self.clients):
                        if self.seq == 2 and i == 0:
                            continue  # lost
                        client.write(self.frame(message))
                        if self.seq == 3 and i == len(self.clients) - 1:
                            client.write(self.frame(message))  # duplicated
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.clients.remove(writer)
            writer.close()


def test_demo_reports_missing_and_duplicate_messages_and_fails():
    with FakeChatServer() as fake:
        result = demo("--host", "127.0.0.1", "--port", str(fake.port), "--users", "2", "--messages", "2",
                      "--delay", "0.05", timeout=60)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "received      alice    3/4  (1 missing)" in out, out
    assert "received      bob      4/4  (1 duplicates)" in out, out
    assert "missing       1" in out and "duplicates    1" in out and "out of order  0" in out
    assert "FAILED  missing 1, duplicates 1" in out
    assert "Traceback" not in result.stderr
