"""The upgrade from release a5fbf68: the current build on a JetStream store that release wrote.

``fixtures/store-a5fbf68.tar.gz`` is the store (``-sd`` directory) of a nats-server that ran the a5fbf68
chat-service, broadcaster and gateway; ``fixtures/store-a5fbf68.json`` is what the old gateway said the
store holds (``fixtures/make_store_a5fbf68.py`` wrote both and tells how to rebuild them). The store is
unpacked, a nats-server is started on it the way the harness starts every server (standalone, no server
name, no JetStream domain, no config file: as the store was written, so its streams are found under the
same account directory), and the current build's services are started on top. Then:

- the rooms are the old rooms (id, name, created_at), old names are still taken (case-insensitively);
- every room's history, over REST and in the WebSocket ``history`` frame, is the old history (ids, seqs,
  users, contents, timestamps, client_msg_ids) in order;
- a join with ``since`` = 0 replays it once, and a new message in each room continues the room's seq;
- a retried send with an old ``client_msg_id`` returns the original while the old idempotency record
  lives (the bucket's TTL, 24 h as the old release created it) and is stored as a new message once it
  has expired (so which one is asserted depends on the fixture's age; ``UPGRADE_FIXTURE_DIR`` points the
  test at a store made with a short TTL to see the other);
- the member the old gateway left behind is removed by presence expiry within ``PRESENCE_EXPIRY_BOUND``;
- nothing is logged at error level.

Room views are compared on the fields a5fbf68 had (``ROOM_FIELDS``): fields added since are ignored.
What the tests write is marked (``MARK``) so that the reading tests compare the old part exactly in any
order.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import tarfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import nats
import pytest
import requests

from chatclient import Client, run
from system import System

# UPGRADE_FIXTURE_DIR: another store made by the script (e.g. with a short idempotency TTL).
FIXTURES = Path(os.environ.get("UPGRADE_FIXTURE_DIR") or Path(__file__).resolve().parent / "fixtures")
FIXTURE = json.loads((FIXTURES / "store-a5fbf68.json").read_text())
ROOMS = FIXTURE["rooms"]
HISTORY: dict[str, list[dict[str, Any]]] = FIXTURE["history"]
STALE = FIXTURE["connected_member"]

ROOM_FIELDS = ("id", "name", "created_at")
MESSAGE_FIELDS = ("message_id", "seq", "user_id", "username", "content", "timestamp", "client_msg_id")
# Content and room names the tests write start with this; everything else must be the old store's.
MARK = "after the upgrade"
# From the chat-service's start: taking the presence lease (the old one was released at shutdown, else
# 3 s) and its first sweep, which reconciles every member (1 s); the rest is slack for a loaded host.
PRESENCE_EXPIRY_BOUND = 15.0
# Around the idempotency TTL the record may or may not have been expired yet by nats-server: either holds.
TTL_MARGIN_S = 60.0
SERVICE_LOG_ERROR = re.compile(r"^\S+ (error|critical) ", re.MULTILINE)
NATS_LOG_ERROR = re.compile(r"\[(ERR|FTL)\]")


@dataclass
class Upgraded:
    system: System
    started_at: float  # wall clock just before the current services were started

    @property
    def url(self) -> str:
        return self.system.gateway.base_url


@pytest.fixture(scope="module")
def upgraded(tmp_path_factory) -> Upgraded:
    base = tmp_path_factory.mktemp("upgrade")
    with tarfile.open(FIXTURES / "store-a5fbf68.tar.gz") as tar:
        tar.extractall(base, filter="data")
    system = System(base / "system")
    try:
        system.start_nats(store=base / FIXTURE["store_dir"])
        started_at = time.time()
        system.start()
        yield Upgraded(system, started_at)
    finally:
        system.stop()


def old_part(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages not written by these tests, reduced to the fields the fixture has."""
    return [{field: m.get(field) for field in MESSAGE_FIELDS} for m in messages if not m["content"].startswith(MARK)]


def rest_history(upgraded: Upgraded, room: str) -> list[dict[str, Any]]:
    response = requests.get(f"{upgraded.url}/api/v1/rooms/{room}/history", params={"limit": 200}, timeout=10)
    assert response.status_code == 200, (response.status_code, response.text)
    body = response.json()
    assert body["room_id"] == room and body["has_more"] is False, body
    return body["messages"]


async def nats_connection(upgraded: Upgraded):
    return await nats.connect(upgraded.system.nats.url, connect_timeout=2, allow_reconnect=False,
                              max_reconnect_attempts=0)


def test_the_fixture_is_what_the_old_release_wrote():
    """Guards the fixture itself: three rooms (one non-ASCII), 20 messages with seqs 1..n per room."""
    assert FIXTURE["commit"].startswith("a5fbf68")
    assert len(ROOMS) == 3 and any(not room["name"].isascii() for room in ROOMS)
    assert sum(len(messages) for messages in HISTORY.values()) == 20
    for room in ROOMS:
        assert [m["seq"] for m in HISTORY[room["id"]]] == list(range(1, len(HISTORY[room["id"]]) + 1))
    assert STALE["room_id"] in HISTORY


def test_the_old_rooms_are_listed(upgraded):
    response = requests.get(upgraded.url + "/api/v1/rooms", timeout=10)
    assert response.status_code == 200, response.text
    listed = [room for room in response.json()["rooms"] if not room["name"].startswith(MARK)]
    assert [{field: room.get(field) for field in ROOM_FIELDS} for room in listed] == ROOMS
    # Records from before visibility existed read as public rooms without an owner.
    assert all(room["visibility"] == "public" and room["archived"] is False and "owner_id" not in room for room in listed), listed
    for room in ROOMS:
        response = requests.get(f"{upgraded.url}/api/v1/rooms/{room['id']}", timeout=10)
        assert response.status_code == 200, response.text
        assert {field: response.json().get(field) for field in ROOM_FIELDS} == room
        assert response.json()["visibility"] == "public"


def test_the_old_names_are_still_taken(upgraded):
    """The name index of the old store holds: another case of an old name is the old room."""
    for room in ROOMS:
        response = requests.post(upgraded.url + "/api/v1/rooms", json={"name": room["name"].upper()}, timeout=10)
        assert response.status_code == 409, response.text
        body = response.json()
        assert body["code"] == "room_exists" and body["room"]["id"] == room["id"], body


def test_history_over_rest_and_websocket_is_the_old_history(upgraded):
    for room in ROOMS:
        assert old_part(rest_history(upgraded, room["id"])) == HISTORY[room["id"]], room["name"]

    async def body():
        reader = await Client.connect(upgraded.system.gateway, "reader")
        for room in ROOMS:
            reply = await reader.request({"type": "history", "room_id": room["id"], "limit": 200}, "history")
            assert reply["type"] == "history" and reply["room_id"] == room["id"], reply
            assert reply["has_more"] is False, reply
            assert old_part(reply["messages"]) == HISTORY[room["id"]], room["name"]
        await reader.close()

    run(body())


def test_writes_continue_the_old_rooms(upgraded):
    """A join with since=0 replays the old history once; a new message continues the room's seq (it
    arrives live after the replay); a retried send with an old client_msg_id follows the idempotency
    record's TTL; a new room can be created next to the old ones."""
    gateway = upgraded.system.gateway

    async def replay_then_send():
        eve = await Client.connect(gateway, "eve")
        for room in ROOMS:
            old = HISTORY[room["id"]]
            joined = await eve.join(room["id"], since=0)
            assert joined["last_seq"] == len(old), joined
            await eve.wait_messages(room["id"], len(old))
            ack = await eve.send_message(f"{MARK}: {room['name']}", room_id=room["id"])
            assert ack["type"] == "ack" and ack["seq"] == len(old) + 1, ack
            frames = await eve.wait_messages(room["id"], len(old) + 1)
            assert [m["seq"] for m in frames] == list(range(1, len(old) + 2)), f"{room['name']}: not each seq once"
            assert old_part(frames) == old, room["name"]
            assert frames[-1]["message_id"] == ack["message_id"]
        await eve.close()

    run(replay_then_send())

    for room in ROOMS:
        stored = rest_history(upgraded, room["id"])
        assert [m["seq"] for m in stored] == list(range(1, len(HISTORY[room["id"]]) + 2))

    # The retry: the newest message with a client_msg_id, resent by its username from a new connection.
    room = ROOMS[0]["id"]
    original = [m for m in HISTORY[room] if m["client_msg_id"]][-1]
    age_s = time.time() - datetime.fromisoformat(original["timestamp"].replace("Z", "+00:00")).timestamp()

    async def stream_config(name: str) -> dict[str, Any]:
        nc = await nats_connection(upgraded)
        try:
            return json.loads((await nc.request(f"$JS.API.STREAM.INFO.{name}", b"", timeout=2)).data)["config"]
        finally:
            await nc.close()

    # A retry is caught by the idempotency record (the bucket's TTL: the old release's, kept) or, within
    # the event stream's duplicate window, by JetStream itself; past both it is a new message.
    ttl_s = run(stream_config("KV_chat_idempotency"))["max_age"] / 1e9
    assert ttl_s == FIXTURE["idempotency"]["bucket_ttl_ms"] / 1000, "the old bucket's TTL was not kept"
    events = run(stream_config("CHAT_EVENTS"))
    assert events["max_bytes"] > 0, "the event stream did not take CHAT_EVENTS_MAX_BYTES"  # a5fbf68 set none
    window_s = events["duplicate_window"] / 1e9
    remembered_s = max(ttl_s, window_s)

    async def retry():
        sender = await Client.joined(gateway, original["username"], room)
        first = await sender.send_message(f"{MARK}: retry", room_id=room, client_msg_id=original["client_msg_id"])
        again = await sender.send_message(f"{MARK}: retry", room_id=room, client_msg_id=original["client_msg_id"])
        await sender.close()
        return first, again

    first, again = run(retry())
    assert first["type"] == "ack" and again["type"] == "ack", (first, again)
    assert (again["message_id"], again["seq"]) == (first["message_id"], first["seq"]), "the second retry stored again"
    last_seq = len(HISTORY[room]) + 1
    if ttl_s == 0 or age_s < remembered_s - TTL_MARGIN_S:
        expected = "duplicate"
    elif age_s > remembered_s + TTL_MARGIN_S:
        expected = "new"
    else:
        expected = "either"
    if expected == "duplicate" or (expected == "either" and first["seq"] == original["seq"]):
        assert (first["message_id"], first["seq"]) == (original["message_id"], original["seq"]), (expected, first)
        assert len(rest_history(upgraded, room)) == last_seq
    else:
        assert first["message_id"] != original["message_id"] and first["seq"] == last_seq + 1, (expected, first)
        assert len(rest_history(upgraded, room)) == last_seq + 1

    created = requests.post(gateway.base_url + "/api/v1/rooms", json={"name": f"{MARK} room"}, timeout=10)
    assert created.status_code == 201, created.text
    listed = requests.get(gateway.base_url + "/api/v1/rooms", timeout=10).json()["rooms"]
    assert [room["id"] for room in listed] == [room["id"] for room in ROOMS] + [created.json()["id"]]


def test_the_member_left_by_the_old_gateway_is_removed_by_presence_expiry(upgraded):
    """The old gateway is gone; its member record is removed (with a UserLeft event) within the bound."""
    key = f"{STALE['room_id']}.{STALE['user_id']}"
    subject = f"chat.room.{STALE['room_id']}.presence"

    async def removal_event() -> dict[str, Any] | None:
        nc = await nats_connection(upgraded)
        try:
            kv = await nc.jetstream().key_value("chat_members")
            try:
                await kv.get(key)
                return None  # still there
            except nats.js.errors.KeyNotFoundError:
                pass
            seq = 1
            while True:  # the presence events of the room, oldest first
                request = json.dumps({"seq": seq, "next_by_subj": subject}).encode()
                reply = json.loads((await nc.request("$JS.API.STREAM.MSG.GET.CHAT_EVENTS", request, timeout=2)).data)
                if "message" not in reply:
                    raise AssertionError(f"member {key} removed without a UserLeft event: {reply}")
                event = json.loads(base64.b64decode(reply["message"]["data"]))
                if event.get("user_id") == STALE["user_id"] and event.get("reason") == "gateway_expired":
                    return event
                seq = reply["message"]["seq"] + 1
        finally:
            await nc.close()

    async def wait() -> dict[str, Any]:
        deadline = upgraded.started_at + PRESENCE_EXPIRY_BOUND
        while (event := await removal_event()) is None:
            assert time.time() < deadline, f"member {key} still there {PRESENCE_EXPIRY_BOUND} s after the start"
            await asyncio.sleep(0.1)
        return event

    event = run(wait())
    removed_at = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
    assert removed_at - upgraded.started_at <= PRESENCE_EXPIRY_BOUND, (event, upgraded.started_at)
    assert event["room_id"] == STALE["room_id"] and event["username"] == STALE["username"], event


def test_nothing_is_logged_at_error_level(upgraded):
    """Last in the module: what the tests above made the services and nats-server log."""
    for process in upgraded.system.processes:
        process.assert_running()
        text = process.log.read_text(errors="replace")
        pattern = NATS_LOG_ERROR if process.kind == "nats-server" else SERVICE_LOG_ERROR
        errors = [line for line in text.splitlines() if pattern.search(line + "\n")]
        assert not errors, f"{process.name} logged errors:\n" + "\n".join(errors[:20])
