#!/usr/bin/env python3
"""nats-chat demo: a few users chat in one room over WebSocket, and the run is checked.

    python demo.py                      # 3 users, 5 messages each, room "general"
    python demo.py --users 5 --messages 10 --room developers --delay 0.5
    python demo.py --host 192.168.1.100 --port 3000

The room is created over REST (or reused when it exists: 409). Every user connects to
ws://HOST:PORT/ws?username=NAME, joins, and sends its messages (each with a client_msg_id, so a message
refused by the gateway's rate limit is re-sent without ever being stored twice). The conversation is
printed as it arrives, then a summary: messages sent, received by each user, missing, duplicates, out of
order, and the delivery latency (send → arrival at each member, p50/p99).

Exit status: 0 every user received every message of the run exactly once and in order; 1 something was
missing, duplicated, out of order or not stored; 2 bad arguments; 3 the server could not be reached or
refused the demo. Colours are used on a terminal (NO_COLOR=1 turns them off, FORCE_COLOR=1 on).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
PROG = "demo.py"
NAMES = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
         "mallory", "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter", "yolanda"]
LINES = [
    "Hi everyone!",
    "Has anyone tried the new build?",
    "Works for me, deliveries look instant.",
    "Nice. Messages arrive in order here too.",
    "Let's ship it.",
    "Any plans for the weekend?",
    "I'll write the release notes.",
    "Coffee first.",
    "Reconnects resume where they left off, right?",
    "Yes: join with since and nothing is lost.",
    "Great work, team!",
    "See you tomorrow.",
]
CONNECT_TIMEOUT = 10.0
REPLY_TIMEOUT = 10.0
DELIVERY_GRACE = 10.0  # after the last ack, how long to wait for deliveries still on their way


class DemoError(Exception):
    """Ends the demo with one line on stderr and an exit status."""

    def __init__(self, message: str, status: int = EXIT_UNREACHABLE):
        super().__init__(message)
        self.status = status


# --- output ---------------------------------------------------------------------------------------------------

def _use_colour() -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return sys.stdout.isatty() and os.environ.get("TERM") != "dumb"


COLOUR = _use_colour()
USER_COLOURS = ["36", "35", "33", "32", "34", "91", "96", "95", "93", "92"]


def paint(text: str, code: str) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if COLOUR else text


def dim(text: str) -> str:
    return paint(text, "2")


def bold(text: str) -> str:
    return paint(text, "1")


def say(text: str = "") -> None:
    print(text, flush=True)


# --- arguments ------------------------------------------------------------------------------------------------

class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + error
        raise DemoError(f"{message} (try --help)", EXIT_USAGE)


def whole(low: int, high: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range ({low}–{high})")
        return value
    return parse


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of seconds") from None
    if not 0 <= value <= 60 or value != value:
        raise argparse.ArgumentTypeError(f"{text} is out of range (0–60 seconds)")
    return value


def room_name(text: str) -> str:
    name = text.strip()
    if not name:
        raise argparse.ArgumentTypeError("the room name is empty")
    return name


def host_name(text: str) -> str:
    host = text.strip()
    if not host or any(c in host for c in "/?#@ "):
        raise argparse.ArgumentTypeError(f"'{text}' is not a host name or address")
    return host


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = Parser(
        prog=PROG,
        description="nats-chat demo: users chat in one room over WebSocket; prints the conversation and "
                    "checks that every user got every message exactly once, in order.",
        epilog="Exit status: 0 ok, 1 missing/duplicate/out-of-order/unsent messages, 2 bad arguments, "
               "3 server unreachable or refusing.",
    )
    parser.add_argument("--users", type=whole(1, 100), default=3, metavar="N", help="number of users (default 3)")
    parser.add_argument("--messages", type=whole(1, 10000), default=5, metavar="N",
                        help="messages each user sends (default 5)")
    parser.add_argument("--room", type=room_name, default="general", metavar="NAME",
                        help='room name; created, or reused when it exists (default "general")')
    parser.add_argument("--host", type=host_name, default="localhost", help="server host (default localhost)")
    parser.add_argument("--port", type=whole(1, 65535), default=3000, help="server port (default 3000)")
    parser.add_argument("--delay", type=seconds, default=0.2, metavar="SECONDS",
                        help="pause between one user's messages (default 0.2)")
    return parser.parse_args(argv)


# --- the run --------------------------------------------------------------------------------------------------

@dataclass
class Sent:
    cmid: str
    user: str
    content: str
    sent_at: float
    message_id: str | None = None
    seq: int | None = None
    error: str | None = None


@dataclass
class Received:
    message_id: str
    seq: int
    at: float


@dataclass
class User:
    name: str
    colour: str
    ws: Any = None
    user_id: str = ""
    gateway: str = ""
    received: list[Received] = field(default_factory=list)
    pending: dict[str, asyncio.Future] = field(default_factory=dict)
    waiting: dict[str, asyncio.Future] = field(default_factory=dict)  # by frame type (joined)
    closed_reason: str | None = None
    lost_connection: str | None = None  # closed by the server before the demo ended
    rate_limited: int = 0

    @property
    def label(self) -> str:
        return paint(f"{self.name:>{8}}", self.colour)


class Demo:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        host = f"[{args.host}]" if ":" in args.host and not args.host.startswith("[") else args.host
        self.http = f"http://{host}:{args.port}"
        self.ws = f"ws://{host}:{args.port}/ws"
        self.run_id = uuid.uuid4().hex[:8]
        self.users = [User(NAMES[i] if i < len(NAMES) else f"user{i + 1}", USER_COLOURS[i % len(USER_COLOURS)])
                      for i in range(args.users)]
        self.sent: dict[str, Sent] = {}
        self.printed: set[str] = set()
        self.room: dict[str, Any] = {}
        self.started = time.monotonic()

    # REST

    def create_room(self) -> None:
        import requests  # imported here so that --help works without it

        url = f"{self.http}/api/v1/rooms"
        try:
            response = requests.post(url, json={"name": self.args.room}, timeout=CONNECT_TIMEOUT)
        except requests.exceptions.ConnectionError:
            raise DemoError(f"cannot reach the chat server at {self.http} (is it running? try scripts/start)") from None
        except requests.exceptions.Timeout:
            raise DemoError(f"the chat server at {self.http} did not answer within {CONNECT_TIMEOUT:.0f} s") from None
        except requests.exceptions.RequestException as error:
            raise DemoError(f"request to {url} failed: {error}") from None
        body = _json(response.text)
        if response.status_code == 201:
            self.room, how = body, "created"
        elif response.status_code == 409 and isinstance(body.get("room"), dict):
            self.room, how = body["room"], "reused"
        elif response.status_code == 400:
            raise DemoError(f"the server refused room name {self.args.room!r}: {body.get('error', response.text)}", EXIT_USAGE)
        else:
            detail = body.get("error") if isinstance(body, dict) and body.get("error") else response.text[:200]
            raise DemoError(f"POST {url} answered HTTP {response.status_code}: {detail}")
        if not isinstance(self.room.get("id"), str):
            raise DemoError(f"POST {url} answered without a room id: {response.text[:200]}")
        say(f"{bold('nats-chat demo')}  {self.http}  room {bold(self.room.get('name', self.args.room))} "
            + dim(f"({how}, id {self.room['id']})"))
        say(dim(f"{len(self.users)} users × {self.args.messages} messages, {self.args.delay:g} s apart"))
        say()

    # WebSocket

    async def connect(self, user: User) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidStatus, InvalidURI, WebSocketException

        url = f"{self.ws}?username={quote(user.name)}"
        try:
            user.ws = await asyncio.wait_for(connect(url, open_timeout=CONNECT_TIMEOUT, max_size=2**22), CONNECT_TIMEOUT + 1)
        except InvalidStatus as error:
            body = _json((error.response.body or b"").decode(errors="replace"))
            raise DemoError(f"{user.name}: the server refused the WebSocket (HTTP {error.response.status_code}"
                            f"{': ' + body['error'] if isinstance(body, dict) and 'error' in body else ''})") from None
        except (OSError, asyncio.TimeoutError, InvalidURI, WebSocketException) as error:
            raise DemoError(f"{user.name}: cannot open {url}: {error or type(error).__name__}") from None
        first = await self.read_one(user)
        if first.get("type") != "connected":
            raise DemoError(f"{user.name}: expected a 'connected' frame first, got {first}")
        user.user_id = first.get("user_id", "")
        user.gateway = first.get("gateway_id", "")
        asyncio.get_running_loop().create_task(self.read(user))
        joined = await self.request(user, {"type": "join", "room_id": self.room["id"]}, "joined")
        via = f" via {user.gateway}" if user.gateway else ""
        say(dim(f"{'':>8}  → {user.name} joined{via} (last seq {joined.get('last_seq', '?')})"))

    async def read_one(self, user: User) -> dict[str, Any]:
        try:
            text = await asyncio.wait_for(user.ws.recv(), REPLY_TIMEOUT)
        except Exception as error:
            raise DemoError(f"{user.name}: no answer from the server ({error or type(error).__name__})") from None
        frame = _json(text)
        return frame if isinstance(frame, dict) else {}

    async def request(self, user: User, frame: dict[str, Any], reply: str) -> dict[str, Any]:
        future = asyncio.get_running_loop().create_future()
        user.waiting[reply] = future
        await user.ws.send(json.dumps(frame))
        try:
            answer = await asyncio.wait_for(future, REPLY_TIMEOUT)
        except asyncio.TimeoutError:
            raise DemoError(f"{user.name}: no '{reply}' answer within {REPLY_TIMEOUT:.0f} s") from None
        if answer.get("type") == "error":
            raise DemoError(f"{user.name}: {frame['type']} failed: {answer.get('error')} ({answer.get('code')})")
        return answer

    async def read(self, user: User) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for text in user.ws:
                now = time.monotonic()
                frame = _json(text)
                if not isinstance(frame, dict):
                    continue
                kind = frame.get("type")
                cmid = frame.get("client_msg_id")
                if kind == "message" and frame.get("room_id") == self.room["id"]:
                    self.on_message(user, frame, now)
                elif kind in ("ack", "error") and cmid in user.pending:
                    future = user.pending.pop(cmid)
                    if not future.done():
                        future.set_result(frame)
                elif kind in user.waiting or kind == "error" and user.waiting:
                    key = kind if kind in user.waiting else next(iter(user.waiting))
                    future = user.waiting.pop(key)
                    if not future.done():
                        future.set_result(frame)
        except ConnectionClosed as closed:
            user.closed_reason = f"connection closed ({closed.rcvd.code if closed.rcvd else 'no close frame'})"
        finally:
            if user.closed_reason is None:
                user.closed_reason = "connection closed"
            for future in [*user.pending.values(), *user.waiting.values()]:
                if not future.done():
                    future.set_exception(ConnectionError(user.closed_reason))

    def on_message(self, user: User, frame: dict[str, Any], now: float) -> None:
        cmid = frame.get("client_msg_id") or ""
        if cmid not in self.sent:
            return  # someone else's message in a reused room: not part of this run
        message_id, seq = frame.get("message_id", ""), frame.get("seq")
        user.received.append(Received(message_id, seq if isinstance(seq, int) else -1, now))
        if message_id not in self.printed:
            self.printed.add(message_id)
            sender = next((u for u in self.users if u.name == frame.get("username")), None)
            label = sender.label if sender else paint(f"{frame.get('username', '?'):>8}", "37")
            stamp = dim(time.strftime("%H:%M:%S"))
            say(f"{stamp} {label}  {frame.get('content', '')}  {dim(f'#{seq}')}")

    async def send_all(self, user: User, index: int) -> None:
        # Stagger the users so that the conversation interleaves.
        await asyncio.sleep(self.args.delay * index / max(1, len(self.users)))
        for n in range(self.args.messages):
            content = LINES[(n * len(self.users) + index) % len(LINES)]
            cmid = f"demo-{self.run_id}-{index}-{n}"
            sent = Sent(cmid, user.name, content, time.monotonic())
            self.sent[cmid] = sent
            while True:
                future = asyncio.get_running_loop().create_future()
                user.pending[cmid] = future
                try:
                    await user.ws.send(json.dumps({"type": "message", "content": content, "client_msg_id": cmid}))
                    reply = await asyncio.wait_for(future, REPLY_TIMEOUT)
                except asyncio.TimeoutError:
                    sent.error = f"no ack within {REPLY_TIMEOUT:.0f} s"
                    break
                except Exception as error:  # the connection closed
                    sent.error = str(error) or type(error).__name__
                    break
                finally:
                    user.pending.pop(cmid, None)
                if reply.get("type") == "ack":
                    sent.message_id, sent.seq = reply.get("message_id"), reply.get("seq")
                    break
                if reply.get("code") == "rate_limited":  # the same client_msg_id again: never stored twice
                    user.rate_limited += 1
                    await asyncio.sleep(max(0.01, float(reply.get("retry_after_ms", 100)) / 1000))
                    continue
                sent.error = f"{reply.get('error')} ({reply.get('code')})"
                break
            if sent.error:
                say(paint(f"{'':>8}  ✗ {user.name}: message {n + 1} not sent: {sent.error}", "31"))
                if user.closed_reason:
                    return
            if self.args.delay and n + 1 < self.args.messages:
                await asyncio.sleep(self.args.delay)

    async def wait_delivered(self) -> None:
        expected = {s.message_id for s in self.sent.values() if s.message_id}
        deadline = time.monotonic() + DELIVERY_GRACE
        while time.monotonic() < deadline:
            if all(expected <= {r.message_id for r in u.received} or u.closed_reason for u in self.users):
                return
            await asyncio.sleep(0.02)

    async def leave(self) -> None:
        for user in self.users:
            user.lost_connection = user.closed_reason  # before our own close
            if user.ws is None:
                continue
            try:
                if user.closed_reason is None:
                    await user.ws.send(json.dumps({"type": "leave"}))
                await asyncio.wait_for(user.ws.close(), 3)
            except Exception:
                pass

    async def run(self) -> int:
        await asyncio.to_thread(self.create_room)
        try:
            for user in self.users:
                await self.connect(user)
            say()
            await asyncio.gather(*(self.send_all(user, i) for i, user in enumerate(self.users)))
            await self.wait_delivered()
        finally:
            await self.leave()
        return self.summary()

    # Summary

    def summary(self) -> int:
        stored = [s for s in self.sent.values() if s.message_id]
        failed = [s for s in self.sent.values() if not s.message_id]
        expected = {s.message_id: s for s in stored}
        missing = duplicates = out_of_order = 0
        latencies: list[float] = []
        per_user = []
        for user in self.users:
            seen: set[str] = set()
            highest = -1
            user_dups = user_ooo = 0
            for r in user.received:
                if r.message_id in seen:
                    user_dups += 1
                    continue
                seen.add(r.message_id)
                if r.seq <= highest:
                    user_ooo += 1
                highest = max(highest, r.seq)
                source = expected.get(r.message_id)
                if source:
                    latencies.append(r.at - source.sent_at)
            user_missing = len(set(expected) - seen)
            missing += user_missing
            duplicates += user_dups
            out_of_order += user_ooo
            per_user.append((user, len(seen & set(expected)), user_missing, user_dups, user_ooo))

        say()
        say(bold("Summary"))
        sent_line = f"{len(self.sent)}"
        if failed:
            sent_line += paint(f" ({len(failed)} not stored)", "31")
        rate_limited = sum(u.rate_limited for u in self.users)
        if rate_limited:
            sent_line += dim(f" ({rate_limited} re-sent after the rate limit)")
        say(f"  sent          {sent_line}")
        for user, got, user_missing, user_dups, user_ooo in per_user:
            notes = []
            if user_missing:
                notes.append(f"{user_missing} missing")
            if user_dups:
                notes.append(f"{user_dups} duplicates")
            if user_ooo:
                notes.append(f"{user_ooo} out of order")
            if user.lost_connection:
                notes.append(user.lost_connection)
            note = paint(f"  ({', '.join(notes)})", "31") if notes else ""
            say(f"  received      {paint(f'{user.name:<8}', user.colour)} {got}/{len(expected)}{note}")
        say(f"  missing       {_count(missing)}")
        say(f"  duplicates    {_count(duplicates)}")
        say(f"  out of order  {_count(out_of_order)}")
        if latencies:
            latencies.sort()
            say(f"  latency       p50 {_ms(percentile(latencies, 50))}  p99 {_ms(percentile(latencies, 99))}  "
                f"max {_ms(latencies[-1])}  {dim(f'(send → delivery, {len(latencies)} deliveries)')}")
        else:
            say("  latency       -")
        ok = not (missing or duplicates or out_of_order or failed)
        say()
        if ok:
            say(paint("OK", "1;32") + f"  every user received all {len(expected)} messages exactly once, in order "
                f"({time.monotonic() - self.started:.1f} s)")
            return EXIT_OK
        say(paint("FAILED", "1;31") + f"  missing {missing}, duplicates {duplicates}, out of order {out_of_order}, "
            f"not stored {len(failed)}")
        return EXIT_FAILED


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, -(-len(sorted_values) * p // 100))
    return sorted_values[int(rank) - 1]


def _ms(seconds_: float) -> str:
    return f"{seconds_ * 1000:.1f} ms"


def _count(n: int) -> str:
    return paint(str(n), "31") if n else paint("0", "32")


def _json(text: Any) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return {}


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        try:
            import requests  # noqa: F401
            import websockets  # noqa: F401
        except ImportError as error:
            raise DemoError(f"missing Python package '{error.name}': pip install -r requirements.txt", EXIT_USAGE) from None
        return asyncio.run(Demo(args).run())
    except DemoError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return error.status
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `python demo.py | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
