"""WebSocket and REST clients for black-box tests of the gateway, plus a delivery checker.

``Client`` wraps a ``websockets`` connection with a background reader: every frame is kept (with its
arrival time) in ``frames`` and queued for ``next`` / ``wait_for``. Replies to messages sent with a
``client_msg_id`` (``ack`` or ``error`` echoing the id) resolve ``send_message``'s future.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import string
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import requests
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
DEFAULT_TIMEOUT = 5.0


def unique(prefix: str = "room") -> str:
    return f"{prefix}-{''.join(random.choices(string.ascii_lowercase + string.digits, k=10))}"


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --- REST ----------------------------------------------------------------------------------------------------

def create_room(gateway, name: str | None = None) -> dict[str, Any]:
    response = requests.post(gateway.base_url + "/api/v1/rooms", json={"name": name or unique()}, timeout=10)
    assert response.status_code == 201, (response.status_code, response.text)
    return response.json()


def history(gateway, room_id: str, **params: Any) -> dict[str, Any]:
    response = requests.get(f"{gateway.base_url}/api/v1/rooms/{room_id}/history", params=params, timeout=10)
    assert response.status_code == 200, (response.status_code, response.text)
    return response.json()


# --- WebSocket -------------------------------------------------------------------------------------------------

class Rejected(Exception):
    """The HTTP upgrade was refused: status and JSON body."""

    def __init__(self, status: int, body: bytes):
        super().__init__(f"HTTP {status}: {body[:200]!r}")
        self.status = status
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Frame:
    at: float
    data: dict[str, Any]


class Client:
    """A WebSocket client whose reader task keeps every JSON frame in `frames` (with arrival time).

    `next` and `wait_for` consume frames in order through a cursor (like reading the socket); `request`,
    `quiet`, `messages` and `wait_messages` look at the frames without moving it."""

    def __init__(self, ws: ClientConnection, label: str):
        self.ws = ws
        self.label = label
        self.frames: list[Frame] = []
        self.raw: list[Any] = []  # frames that were not JSON objects
        self.cursor = 0
        self.changed = asyncio.Event()
        self.pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.closed = asyncio.Event()
        self.connected: dict[str, Any] = {}
        self.reader = asyncio.create_task(self._read())

    def __repr__(self) -> str:
        return f"<Client {self.label}>"

    @classmethod
    async def open(cls, url: str, label: str = "", *, headers: dict[str, str] | None = None, origin: str | None = None,
                   expect_connected: bool = True, **kwargs: Any) -> "Client":
        try:
            ws = await asyncio.wait_for(
                connect(url, additional_headers=headers, origin=origin, open_timeout=10, **kwargs), timeout=15)
        except InvalidStatus as error:
            raise Rejected(error.response.status_code, error.response.body or b"") from None
        client = cls(ws, label or url.rsplit("=", 1)[-1])
        if expect_connected:
            first = await client.next()
            assert first.get("type") == "connected", f"first frame was {first}"
            client.connected = first
        return client

    @classmethod
    async def connect(cls, gateway, username: str, **kwargs: Any) -> "Client":
        return await cls.open(gateway.ws_url(username), username, **kwargs)

    @classmethod
    async def joined(cls, gateway, username: str, *rooms: str, **kwargs: Any) -> "Client":
        """Connected as `username` and joined to each of `rooms` (every join acknowledged)."""
        client = await cls.connect(gateway, username, **kwargs)
        for room in rooms:
            await client.join(room)
        return client

    @property
    def user_id(self) -> str:
        return self.connected["user_id"]

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code

    async def _read(self) -> None:
        try:
            async for text in self.ws:
                try:
                    data = json.loads(text)
                except (TypeError, ValueError):
                    self.raw.append(text)
                    continue
                if not isinstance(data, dict):
                    self.raw.append(data)
                    continue
                self.frames.append(Frame(time.monotonic(), data))
                self.changed.set()
                cmid = data.get("client_msg_id")
                if data.get("type") in ("ack", "error") and cmid in self.pending:
                    future = self.pending.pop(cmid)
                    if not future.done():
                        future.set_result(data)
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()
            self.changed.set()
            for future in self.pending.values():
                if not future.done():
                    future.set_exception(ConnectionError(f"{self.label}: connection closed"))
            self.pending.clear()

    async def _find(self, start: int, match: Callable[[dict[str, Any]], bool], timeout: float, what: str) -> int:
        """Index of the first frame at or after `start` that matches, waiting up to `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        index = start
        while True:
            while index < len(self.frames):
                if match(self.frames[index].data):
                    return index
                index += 1
            left = deadline - loop.time()
            if left <= 0 or self.closed.is_set():
                state = f"closed with {self.close_code}" if self.closed.is_set() else "open"
                raise AssertionError(f"{self.label}: no {what} within {timeout} s ({state}); frames since: "
                                     f"{[f.data for f in self.frames[start:]][-8:]}")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except asyncio.TimeoutError:
                pass

    # Sending

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(frame))

    async def send_raw(self, data: str | bytes) -> None:
        await self.ws.send(data)

    # Receiving

    async def next(self, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """The next frame after the cursor."""
        index = await self._find(self.cursor, lambda _: True, timeout, "frame")
        self.cursor = index + 1
        return self.frames[index].data

    async def wait_for(self, type_: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                       where: Callable[[dict[str, Any]], bool] | None = None, **fields: Any) -> dict[str, Any]:
        """The next frame after the cursor of `type_` whose fields match (the cursor moves past it)."""
        def match(frame: dict[str, Any]) -> bool:
            return ((type_ is None or frame.get("type") == type_)
                    and all(frame.get(k) == v for k, v in fields.items())
                    and (where is None or where(frame)))

        index = await self._find(self.cursor, match, timeout, f"{type_ or 'matching'} frame {fields or ''}")
        self.cursor = index + 1
        return self.frames[index].data

    async def quiet(self, within: float = 0.5, type_: str | None = None) -> None:
        """Asserts that no frame (of `type_`) arrives within the next `within` seconds."""
        start = len(self.frames)
        await asyncio.sleep(within)
        arrived = [f.data for f in self.frames[start:] if type_ is None or f.data.get("type") == type_]
        assert not arrived, f"{self.label}: unexpected frames {arrived}"

    async def request(self, frame: dict[str, Any], reply_type: str, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """Sends `frame` and returns the first `reply_type` or `error` frame that arrives after it (the
        gateway answers a connection's requests in order)."""
        start = len(self.frames)
        await self.send(frame)
        index = await self._find(start, lambda f: f.get("type") in (reply_type, "error"), timeout,
                                 f"{reply_type} or error reply to {frame}")
        return self.frames[index].data

    async def join(self, room_id: str, since: int | None = None, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        frame: dict[str, Any] = {"type": "join", "room_id": room_id}
        if since is not None:
            frame["since"] = since
        reply = await self.request(frame, "joined", timeout)
        assert reply.get("type") == "joined" and reply.get("room_id") == room_id, f"{self.label}: join answered {reply}"
        return reply

    async def send_message(self, content: str, room_id: str | None = None, client_msg_id: str | None = None,
                           timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """Sends with a client_msg_id and returns its ack or error frame."""
        cmid = client_msg_id or uuid.uuid4().hex
        frame: dict[str, Any] = {"type": "message", "content": content, "client_msg_id": cmid}
        if room_id is not None:
            frame["room_id"] = room_id
        future = asyncio.get_running_loop().create_future()
        self.pending[cmid] = future
        await self.send(frame)
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self.pending.pop(cmid, None)

    def messages(self, room_id: str | None = None) -> list[dict[str, Any]]:
        return [f.data for f in self.frames
                if f.data.get("type") == "message" and (room_id is None or f.data.get("room_id") == room_id)]

    async def wait_messages(self, room_id: str, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Waits until at least `count` message frames of `room_id` arrived; returns them all."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.messages(room_id)) < count:
            if loop.time() > deadline:
                seqs = [m["seq"] for m in self.messages(room_id)]
                raise AssertionError(f"{self.label}: {len(seqs)} of {count} messages of room {room_id} within "
                                     f"{timeout} s; seqs {seqs}")
            await asyncio.sleep(0.02)
        return self.messages(room_id)

    async def wait_closed(self, timeout: float = DEFAULT_TIMEOUT) -> int | None:
        try:
            await asyncio.wait_for(self.closed.wait(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"{self.label}: connection still open after {timeout} s") from None
        return self.close_code

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.wait_for(self.closed.wait(), 5)

    def abort(self) -> None:
        """Drops the TCP connection without a closing handshake (a forced disconnect)."""
        self.ws.transport.abort()


# --- a sender and a delivery checker for load tests ---------------------------------------------------------

@dataclass
class Sent:
    room_id: str
    client_msg_id: str
    message_id: str
    seq: int
    started_at: float
    acked_at: float


@dataclass
class Sender:
    """Sends `count` messages round-robin over `rooms`, each with a client_msg_id, retrying the same id on
    `unavailable`/`internal` errors and timeouts until it is acknowledged (so every message is stored
    exactly once). `on_sent(n)` runs after the n-th acknowledged message."""

    client: Client
    rooms: list[str]
    count: int
    pause: float = 0.0
    on_sent: Callable[[int], Any] | None = None
    sent: list[Sent] = field(default_factory=list)
    retries: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    async def run(self) -> list[Sent]:
        for n in range(self.count):
            room = self.rooms[n % len(self.rooms)]
            cmid = f"m{n}-{uuid.uuid4().hex[:12]}"
            started = time.monotonic()
            while True:
                try:
                    reply = await self.client.send_message(f"message {n}", room_id=room, client_msg_id=cmid, timeout=8)
                except asyncio.TimeoutError:
                    self.retries += 1
                    continue
                if reply["type"] == "ack":
                    break
                self.errors.append(reply)
                assert reply.get("code") in ("unavailable", "internal"), f"send {n} failed: {reply}"
                self.retries += 1
                await asyncio.sleep(0.2)
            assert reply["room_id"] == room and reply["client_msg_id"] == cmid, reply
            self.sent.append(Sent(room, cmid, reply["message_id"], reply["seq"], started, time.monotonic()))
            if self.on_sent is not None:
                result = self.on_sent(len(self.sent))
                if asyncio.iscoroutine(result):
                    await result
            if self.pause:
                await asyncio.sleep(self.pause)
        return self.sent


def expected_by_room(sent: list[Sent]) -> dict[str, list[Sent]]:
    rooms: dict[str, list[Sent]] = {}
    for item in sent:
        rooms.setdefault(item.room_id, []).append(item)
    for items in rooms.values():
        items.sort(key=lambda s: s.seq)
    return rooms


def check_exactly_once_in_order(client: Client, expected: dict[str, list[Sent]], rooms: list[str]) -> None:
    """Every message of `rooms` reached `client` exactly once and in seq order, and nothing else arrived.

    The rooms are fresh (no messages before the client joined), so the client must see seq 1..N."""
    for room in rooms:
        got = client.messages(room)
        seqs = [m["seq"] for m in got]
        want = expected.get(room, [])
        duplicates = sorted({s for s in seqs if seqs.count(s) > 1})
        assert not duplicates, f"{client.label}: duplicate seqs {duplicates} in room {room}"
        assert seqs == sorted(seqs), f"{client.label}: out of order in room {room}: {seqs}"
        assert seqs == [s.seq for s in want], (
            f"{client.label}: room {room} got seqs {seqs}, expected {[s.seq for s in want]} "
            f"(missing {sorted(set(s.seq for s in want) - set(seqs))})")
        assert [m["message_id"] for m in got] == [s.message_id for s in want], f"{client.label}: message ids differ"
    others = {m["room_id"] for m in client.messages()} - set(rooms)
    assert not others, f"{client.label}: got messages of rooms it never joined: {others}"


async def wait_all_delivered(clients: dict[Client, list[str]], expected: dict[str, list[Sent]], timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        missing = {c.label: {r: len(expected.get(r, [])) - len(c.messages(r)) for r in rooms}
                   for c, rooms in clients.items()}
        if all(n <= 0 for per_room in missing.values() for n in per_room.values()):
            return
        if loop.time() > deadline:
            raise AssertionError(f"not every message was delivered within {timeout} s; missing per client/room: {missing}")
        await asyncio.sleep(0.05)


def run(coro, timeout: float = 120):
    """Runs a test's async body to completion with a hard bound (a hang fails the test, not CI)."""
    return asyncio.run(asyncio.wait_for(coro, timeout))
