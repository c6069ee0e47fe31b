"""Black-box tests of the gateway (issue 5): the seed's REST API and WebSocket protocol frame by frame,
every error path, the extensions (multi-room, client_msg_id acks and retries, resume with `since`,
typing), gap fill, origin and JWT checks, rate limit, frame size limit, slow clients, two gateways on
one NATS, SIGTERM, and an unreachable chat-service.

They run the real binaries: nats-server -js, chat-service, broadcaster and gateway(s), through
`system.py`, and talk to them with `websockets`, `requests` and nats-py only.

Most tests share one module-scoped system; gateways with special settings (ALLOWED_ORIGINS,
AUTH_JWT_SECRET, small limits) are added to it on demand. Tests that kill, pause or restart a process
get a system of their own.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import socket
import struct
import time
import uuid
from typing import Any

import jwt
import nats
import pytest
import requests

from chatclient import run, RFC3339, UUID, Client, Rejected, create_room, history, is_int, unique
from system import Gateway, System, http_get, metric_value



@pytest.fixture(scope="module")
def system(tmp_path_factory):
    system = System(tmp_path_factory.mktemp("gateway-system"))
    try:
        system.start()
        yield system
    finally:
        system.stop()


@pytest.fixture
def gw(system) -> Gateway:
    gateway = system.gateway
    gateway.assert_running()
    return gateway


# --- the seed protocol, frame by frame ----------------------------------------------------------------------

def test_connected_is_the_first_frame_and_user_ids_are_unique(gw):
    async def body():
        a = await Client.connect(gw, "alice")
        b = await Client.connect(gw, "alice")
        for client in (a, b):
            assert client.connected["type"] == "connected"
            assert UUID.match(client.connected["user_id"]), client.connected
            assert client.connected["username"] == "alice"
            assert client.connected["gateway_id"] == gw.gateway_id
        assert a.user_id != b.user_id, "two connections got the same user_id"
        await a.close()
        await b.close()

    run(body())


def test_seed_protocol_frame_by_frame(gw):
    room = create_room(gw)
    rid = room["id"]

    async def body():
        alice = await Client.connect(gw, "alice")
        bob = await Client.connect(gw, "bob")

        # join → joined is the very next frame
        await alice.send({"type": "join", "room_id": rid})
        joined = await alice.next()
        assert joined["type"] == "joined" and joined["room_id"] == rid, joined
        await bob.send({"type": "join", "room_id": rid})
        joined = await bob.next()
        assert joined["type"] == "joined" and joined["room_id"] == rid, joined

        # user_joined {room_id, username, user_id} reaches the member already there
        seen = await alice.wait_for("user_joined", username="bob")
        assert seen == {"type": "user_joined", "room_id": rid, "username": "bob", "user_id": bob.user_id}, seen

        # message (seed shape: no room_id, no client_msg_id) → broadcast to every member incl. the sender
        await alice.send({"type": "message", "content": "Hello!"})
        got_a = await alice.wait_for("message")
        got_b = await bob.wait_for("message")
        assert got_a == got_b, (got_a, got_b)
        assert set(got_a) >= {"type", "room_id", "message_id", "user_id", "username", "content", "timestamp", "seq"}
        assert got_a["room_id"] == rid and got_a["content"] == "Hello!"
        assert got_a["user_id"] == alice.user_id and got_a["username"] == "alice"
        assert UUID.match(got_a["message_id"]) and RFC3339.match(got_a["timestamp"]), got_a
        assert got_a["seq"] == 1, got_a
        assert not [f for f in alice.frames if f.data["type"] == "ack"], "an ack without a client_msg_id"

        await bob.send({"type": "message", "content": "Hi alice"})
        second = await alice.wait_for("message")
        assert second["seq"] == 2 and second["username"] == "bob" and second["user_id"] == bob.user_id, second
        assert (await bob.wait_for("message"))["message_id"] == second["message_id"]

        # history / members / room_list replies
        reply = await alice.request({"type": "history", "room_id": rid}, "history")
        assert reply["type"] == "history" and reply["room_id"] == rid and reply["has_more"] is False, reply
        assert [m["content"] for m in reply["messages"]] == ["Hello!", "Hi alice"], reply
        assert reply["messages"][0]["message_id"] == got_a["message_id"]

        reply = await alice.request({"type": "members", "room_id": rid}, "members")
        assert reply["type"] == "members" and reply["room_id"] == rid, reply
        assert sorted((m["username"], m["user_id"]) for m in reply["members"]) == sorted(
            [("alice", alice.user_id), ("bob", bob.user_id)]), reply

        reply = await alice.request({"type": "room_list"}, "room_list")
        assert reply["type"] == "room_list", reply
        listed = [r for r in reply["rooms"] if r["id"] == rid]
        assert listed and listed[0]["name"] == room["name"], reply

        # leave (seed shape: no room_id) → left; the others get user_left
        await bob.send({"type": "leave"})
        left = await bob.wait_for("left")
        assert left == {"type": "left", "room_id": rid}, left
        gone = await alice.wait_for("user_left", username="bob")
        assert gone == {"type": "user_left", "room_id": rid, "username": "bob", "user_id": bob.user_id}, gone

        # after leaving, bob no longer receives the room's messages
        await alice.send({"type": "message", "content": "still here?"})
        assert (await alice.wait_for("message"))["seq"] == 3
        await bob.quiet(0.7, "message")
        reply = await alice.request({"type": "members", "room_id": rid}, "members")
        assert [m["username"] for m in reply["members"]] == ["alice"], reply

        # disconnecting (no leave) also makes the others see user_left
        await bob.join(rid)
        await alice.wait_for("user_joined", username="bob")
        await bob.close()
        assert (await alice.wait_for("user_left", username="bob"))["user_id"] == bob.user_id
        await alice.close()

    run(body())


# --- error paths ------------------------------------------------------------------------------------------------

BAD_FRAMES = [
    ("not json", "invalid JSON"),
    ('{"type": "join", "room_id": ', "truncated JSON"),
    ("[1, 2]", "an array"),
    ('"join"', "a string"),
    ("42", "a number"),
    ("null", "null"),
    ("{}", "no type"),
    ('{"type": 5}', "numeric type"),
    ('{"type": "shout"}', "unknown type"),
    ('{"type": "join"}', "join without room_id"),
    ('{"type": "join", "room_id": 7}', "numeric room_id"),
    ('{"type": "join", "room_id": null}', "null room_id"),
    ('{"type": "join", "room_id": "%s", "since": "five"}', "string since"),
    ('{"type": "join", "room_id": "%s", "since": -1}', "negative since"),
    ('{"type": "message"}', "message without content"),
    ('{"type": "message", "content": 12}', "numeric content"),
    ('{"type": "message", "content": "x", "room_id": 3}', "numeric room_id in message"),
    ('{"type": "message", "content": "x", "client_msg_id": 9}', "numeric client_msg_id"),
    ('{"type": "leave", "room_id": false}', "boolean room_id in leave"),
    ('{"type": "history"}', "history without room_id"),
    ('{"type": "history", "room_id": "%s", "limit": "ten"}', "string limit"),
    ('{"type": "history", "room_id": "%s", "before": "x"}', "string before"),
    ('{"type": "members"}', "members without room_id"),
    ('{"type": "members", "room_id": ["a"]}', "array room_id"),
]


def test_malformed_frames_get_an_error_and_the_connection_stays_open(gw):
    room = create_room(gw)

    async def body():
        client = await Client.connect(gw, "mallory")
        for template, what in BAD_FRAMES:
            text = template % room["id"] if "%s" in template else template
            await client.send_raw(text)
            reply = await client.next()
            assert reply["type"] == "error", f"{what}: {reply}"
            assert reply["code"] == "invalid_request", f"{what}: {reply}"
            assert isinstance(reply["error"], str) and reply["error"], f"{what}: {reply}"
        # binary frames are refused the same way
        await client.send_raw(b"\x00\x01binary")
        reply = await client.next()
        assert reply["type"] == "error" and reply["code"] == "invalid_request" and "binary" in reply["error"], reply
        # the connection still works
        assert (await client.request({"type": "room_list"}, "room_list"))["type"] == "room_list"
        assert client.close_code is None
        await client.close()

    run(body())


def test_error_messages_name_the_problem(gw):
    async def body():
        client = await Client.connect(gw, "mallory")
        await client.send_raw('{"type": "shout"}')
        assert "shout" in (await client.next())["error"]
        await client.send_raw('{"type": "join"}')
        assert "room_id" in (await client.next())["error"]
        await client.send_raw('{"type": "message", "content": 12}')
        assert "content" in (await client.next())["error"]
        await client.close()

    run(body())


def test_room_and_membership_errors(gw):
    room = create_room(gw)
    other = create_room(gw)
    missing = str(uuid.uuid4())

    async def body():
        client = await Client.connect(gw, "erin")

        async def error_for(frame: dict[str, Any]) -> dict[str, Any]:
            reply = await client.request(frame, "__none__")
            assert reply["type"] == "error", f"{frame} → {reply}"
            return reply

        # not in any room yet
        assert (await error_for({"type": "message", "content": "hello?"}))["code"] == "not_in_room"
        assert (await error_for({"type": "leave"}))["code"] == "not_in_room"
        reply = await error_for({"type": "message", "content": "x", "client_msg_id": "c-1"})
        assert reply["code"] == "not_in_room" and reply["client_msg_id"] == "c-1", reply
        # rooms that do not exist (a random UUID, or not a UUID at all)
        for bad in (missing, "no-such-room"):
            assert (await error_for({"type": "join", "room_id": bad}))["code"] == "room_not_found"
            assert (await error_for({"type": "history", "room_id": bad}))["code"] == "room_not_found"
            assert (await error_for({"type": "members", "room_id": bad}))["code"] == "room_not_found"

        await client.join(room["id"])
        # a room this connection has not joined
        assert (await error_for({"type": "message", "content": "x", "room_id": other["id"]}))["code"] == "not_in_room"
        assert (await error_for({"type": "leave", "room_id": other["id"]}))["code"] == "not_in_room"
        # content rules (the chat-service's limit is 4096 bytes)
        reply = await error_for({"type": "message", "content": "x" * 5000, "client_msg_id": "long-1"})
        assert reply["code"] == "content_too_long" and reply["client_msg_id"] == "long-1", reply
        assert (await error_for({"type": "message", "content": "   "}))["code"] == "content_invalid"
        assert (await error_for({"type": "message", "content": "x", "client_msg_id": "bad id!"}))["code"] == "invalid_request"
        assert (await error_for({"type": "history", "room_id": room["id"], "limit": 0}))["code"] == "invalid_request"
        # none of these stored anything, and the connection is still usable
        assert history(gw, room["id"])["messages"] == []
        ack = await client.send_message("fine", client_msg_id="ok-1")
        assert ack["type"] == "ack" and ack["seq"] == 1, ack
        assert client.close_code is None
        await client.close()

    run(body())


@pytest.mark.parametrize("query, what", [
    ({}, "missing"),
    ({"username": ""}, "empty"),
    ({"username": "   "}, "blank"),
    ({"username": "x" * 33}, "too long"),
    ({"username": "bad\u0007name"}, "control character"),
])
def test_invalid_username_is_rejected_before_the_upgrade(gw, query, what):
    from urllib.parse import quote, urlencode
    url = f"ws://127.0.0.1:{gw.port}/ws" + (f"?{urlencode(query, quote_via=quote)}" if query else "")

    async def body():
        with pytest.raises(Rejected) as rejected:
            await Client.open(url)
        return rejected.value

    rejected = run(body())
    assert rejected.status == 400, f"{what}: {rejected}"
    body = rejected.json()
    assert body["code"] == "username_invalid" and isinstance(body["error"], str) and body["error"], body
    # the same over plain HTTP (no upgrade headers)
    response = requests.get(url.replace("ws://", "http://"), headers={
        "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()}, timeout=5)
    assert response.status_code == 400 and response.json()["code"] == "username_invalid"


def test_oversized_frame_closes_with_1009(gw):
    async def body():
        client = await Client.connect(gw, "big")
        await client.send_raw("x" * (16 * 1024 + 100))
        assert await client.wait_closed() == 1009
        # a frame just under the limit is fine (and only the content rule applies)
        client = await Client.connect(gw, "big")
        room = create_room(gw)
        await client.join(room["id"])
        reply = await client.send_message("y" * (15 * 1024))
        assert reply["code"] == "content_too_long", reply
        assert client.close_code is None
        await client.close()

    run(body())


# --- REST ------------------------------------------------------------------------------------------------------

def test_rest_rooms(gw):
    base = gw.base_url + "/api/v1/rooms"
    name = unique("Lobby")

    response = requests.post(base, json={"name": name}, timeout=5)
    assert response.status_code == 201, response.text
    assert response.headers["content-type"].startswith("application/json")
    room = response.json()
    assert UUID.match(room["id"]) and room["name"] == name and RFC3339.match(room["created_at"]), room

    # duplicate name (case-insensitively) → 409 with the existing room
    for duplicate in (name, name.upper(), f"  {name} "):
        response = requests.post(base, json={"name": duplicate}, timeout=5)
        assert response.status_code == 409, (duplicate, response.text)
        body = response.json()
        assert body["code"] == "room_exists" and body["error"] and body["room"]["id"] == room["id"], body

    # invalid bodies → 400 with {"error","code"}
    for payload, code in [
        ({}, "invalid_request"),
        ({"name": 5}, "invalid_request"),
        ({"name": ""}, "name_invalid"),
        ({"name": "   "}, "name_invalid"),
        ({"name": "n" * 65}, "name_invalid"),
        ("not json", "invalid_request"),
    ]:
        data = payload if isinstance(payload, str) else json.dumps(payload)
        response = requests.post(base, data=data, headers={"Content-Type": "application/json"}, timeout=5)
        assert response.status_code == 400, (payload, response.status_code, response.text)
        body = response.json()
        assert body["code"] == code and body["error"], (payload, body)

    response = requests.get(base, timeout=5)
    assert response.status_code == 200
    listing = response.json()
    assert listing["total"] == len(listing["rooms"]) and room["id"] in [r["id"] for r in listing["rooms"]], listing

    response = requests.get(f"{base}/{room['id']}", timeout=5)
    assert response.status_code == 200 and response.json()["id"] == room["id"] and response.json()["name"] == name
    for missing in (str(uuid.uuid4()), "not-a-uuid"):
        response = requests.get(f"{base}/{missing}", timeout=5)
        assert response.status_code == 404, response.text
        assert response.json()["code"] == "room_not_found"
        response = requests.get(f"{base}/{missing}/history", timeout=5)
        assert response.status_code == 404 and response.json()["code"] == "room_not_found"


def test_known_paths_answer_405_with_allow_for_other_methods(gw):
    room = str(uuid.uuid4())
    wrong = [
        ("DELETE", "/api/v1/rooms", "GET, POST"), ("PUT", "/api/v1/rooms", "GET, POST"),
        ("POST", f"/api/v1/rooms/{room}", "DELETE, GET, PATCH"), ("PUT", f"/api/v1/rooms/{room}", "DELETE, GET, PATCH"),
        ("PATCH", f"/api/v1/rooms/{room}/members", "GET, POST"), ("GET", f"/api/v1/rooms/{room}/members/{room}", "DELETE, PUT"),
        ("POST", f"/api/v1/rooms/{room}/history", "GET"), ("POST", "/health", "GET"),
        ("DELETE", "/metrics", "GET"), ("POST", "/ws", "GET"),
    ]
    for method, path, allowed in wrong:
        response = requests.request(method, gw.base_url + path, timeout=5)
        assert response.status_code == 405, (method, path, response.status_code, response.text)
        assert response.headers["allow"] == allowed, (method, path, response.headers)
        body = response.json()
        assert body["code"] == "invalid_request" and method in body["error"] and allowed in body["error"], body
    # Every method the table lists is routed (none of them is "no such endpoint" or 405).
    for method, path, expected in [
        ("GET", "/api/v1/rooms", 200), ("GET", f"/api/v1/rooms/{room}", 404), ("GET", f"/api/v1/rooms/{room}/history", 404),
        ("GET", "/health", 200), ("GET", "/metrics", 200), ("GET", "/ws", 426),
    ]:
        response = requests.request(method, gw.base_url + path, timeout=5)
        assert response.status_code == expected, (method, path, response.status_code, response.text)
    assert requests.post(gw.base_url + "/api/v1/rooms", json={"name": unique("allowed")}, timeout=5).status_code == 201
    # Unknown paths stay 404.
    response = requests.delete(gw.base_url + "/api/v1/nothing", timeout=5)
    assert response.status_code == 404 and response.json()["code"] == "not_found", response.text


def test_rest_history_paging(gw):
    room = create_room(gw)
    rid = room["id"]

    async def body():
        client = await Client.joined(gw, "pager", rid)
        for n in range(1, 6):
            assert (await client.send_message(f"m{n}"))["seq"] == n

    run(body())
    page = history(gw, rid)
    assert page["room_id"] == rid and page["has_more"] is False
    assert [m["seq"] for m in page["messages"]] == [1, 2, 3, 4, 5]
    assert [m["content"] for m in page["messages"]] == ["m1", "m2", "m3", "m4", "m5"]
    page = history(gw, rid, limit=2)
    assert [m["seq"] for m in page["messages"]] == [4, 5] and page["has_more"] is True, page
    page = history(gw, rid, limit=2, before=4)
    assert [m["seq"] for m in page["messages"]] == [2, 3] and page["has_more"] is True, page
    page = history(gw, rid, limit=2, before=2)
    assert [m["seq"] for m in page["messages"]] == [1] and page["has_more"] is False, page
    assert history(gw, rid, before=1)["messages"] == []
    # the WebSocket history request takes the same limit/before
    async def ws_pages():
        client = await Client.connect(gw, "pager2")
        reply = await client.request({"type": "history", "room_id": rid, "limit": 2, "before": 4}, "history")
        assert [m["seq"] for m in reply["messages"]] == [2, 3] and reply["has_more"] is True, reply
        reply = await client.request({"type": "history", "room_id": rid, "limit": 3}, "history")
        assert [m["seq"] for m in reply["messages"]] == [3, 4, 5] and reply["has_more"] is True, reply
        await client.close()

    run(ws_pages())
    for params in ({"limit": 0}, {"limit": -1}, {"limit": "ten"}, {"before": -1}, {"before": "x"}):
        response = requests.get(f"{gw.base_url}/api/v1/rooms/{rid}/history", params=params, timeout=5)
        assert response.status_code == 400, (params, response.text)
        assert response.json()["code"] == "invalid_request"


def test_health_and_metrics(gw):
    status, raw = http_get(gw.base_url + "/health")
    assert status == 200
    health = json.loads(raw)
    assert health["status"] == "ok" and health["instance"] == gw.gateway_id, health
    assert health["nats"]["status"] == "connected", health
    assert isinstance(health["version"], str) and health["version"]
    assert is_int(health["connections"]) and is_int(health["rooms"]), health
    room = create_room(gw)

    async def body():
        before = json.loads(http_get(gw.base_url + "/health")[1])
        client = await Client.joined(gw, "counted", room["id"])
        during = json.loads(http_get(gw.base_url + "/health")[1])
        assert during["connections"] == before["connections"] + 1, (before, during)
        assert during["rooms"] >= 1
        errors_before = gw.metric("gateway_errors_total", 'code="invalid_request"')
        frames_before = gw.metric("gateway_frames_in_total", 'type="room_list"')
        await client.send_raw("nope")
        await client.wait_for("error")
        await client.request({"type": "room_list"}, "room_list")
        await client.close()
        return errors_before, frames_before

    errors_before, frames_before = run(body())
    status, raw = http_get(gw.base_url + "/metrics")
    text = raw.decode()
    assert status == 200
    for name in ["gateway_connections", "gateway_frames_in_total", "gateway_frames_out_total", "gateway_errors_total",
                 "gateway_send_latency_seconds_bucket", "gateway_slow_client_disconnects_total",
                 "gateway_nats_connected"]:
        assert name in text, f"{name} missing from /metrics"
    assert metric_value(text, "gateway_errors_total", 'code="invalid_request"') == errors_before + 1
    assert metric_value(text, "gateway_frames_in_total", 'type="room_list"') == frames_before + 1
    assert metric_value(text, "gateway_nats_connected") == 1


# --- extensions ------------------------------------------------------------------------------------------------

def test_several_rooms_per_connection(gw, gateway_with):
    r1, r2 = create_room(gw)["id"], create_room(gw)["id"]

    async def body():
        multi = await Client.connect(gw, "multi")
        only1 = await Client.connect(gw, "only1")
        only2 = await Client.connect(gw, "only2")
        await multi.join(r1)
        await multi.join(r2)
        await only1.join(r1)
        await only2.join(r2)
        # joining a room again answers joined and changes nothing
        assert (await multi.join(r1))["room_id"] == r1

        await multi.send({"type": "message", "content": "to the last joined"})  # defaults to r2
        await multi.send({"type": "message", "content": "to r1", "room_id": r1})
        got2 = await only2.wait_for("message")
        got1 = await only1.wait_for("message")
        assert (got2["room_id"], got2["content"]) == (r2, "to the last joined"), got2
        assert (got1["room_id"], got1["content"]) == (r1, "to r1"), got1
        await only1.quiet(0.5, "message")
        await only2.quiet(0.1, "message")
        assert sorted((m["room_id"], m["content"]) for m in await wait_n(multi, 2)) == sorted(
            [(r2, "to the last joined"), (r1, "to r1")])

        # leave without room_id leaves the last joined room; then the default is the remaining room
        await multi.send({"type": "leave"})
        assert (await multi.wait_for("left"))["room_id"] == r2
        await only2.wait_for("user_left", username="multi")
        await multi.send({"type": "message", "content": "default is r1 now"})
        assert (await only1.wait_for("message"))["content"] == "default is r1 now"
        await multi.send({"type": "leave", "room_id": r1})
        assert (await multi.wait_for("left"))["room_id"] == r1
        reply = await multi.request({"type": "message", "content": "nowhere"}, "__none__")
        assert reply["code"] == "not_in_room", reply
        for client in (multi, only1, only2):
            await client.close()

    async def wait_n(client, n):
        await client.wait_messages(r1, 1)
        await client.wait_messages(r2, 1)
        return client.messages()[:n]

    run(body())

    limited = gateway_with(MAX_ROOMS_PER_CONNECTION="2")
    rooms = [create_room(limited)["id"] for _ in range(3)]

    async def too_many():
        client = await Client.joined(limited, "greedy", rooms[0])
        await client.join(rooms[1])
        reply = await client.request({"type": "join", "room_id": rooms[2]}, "joined")
        assert reply["type"] == "error" and reply["code"] == "too_many_rooms", reply
        await client.send({"type": "leave", "room_id": rooms[0]})
        await client.wait_for("left")
        assert (await client.join(rooms[2]))["room_id"] == rooms[2]
        await client.close()

    run(too_many())


def test_client_msg_id_ack_and_retries_store_one_message(gw):
    rid = create_room(gw)["id"]

    async def body():
        sender = await Client.joined(gw, "retrier", rid)
        watcher = await Client.joined(gw, "watcher", rid)
        ack = await sender.send_message("once", client_msg_id="cmid-1")
        assert ack["type"] == "ack" and ack["client_msg_id"] == "cmid-1" and ack["room_id"] == rid, ack
        assert UUID.match(ack["message_id"]) and ack["seq"] == 1, ack
        # retry on the same connection: same message, no new one
        again = await sender.send_message("once", client_msg_id="cmid-1")
        assert (again["message_id"], again["seq"]) == (ack["message_id"], ack["seq"]), again
        # retry from a new connection of the same username (the old one dropped)
        sender.abort()
        sender2 = await Client.joined(gw, "retrier", rid)
        third = await sender2.send_message("once", client_msg_id="cmid-1")
        assert third["type"] == "ack" and third["message_id"] == ack["message_id"] and third["seq"] == 1, third
        # the same client_msg_id from another user is another message
        other = await watcher.send_message("mine", client_msg_id="cmid-1")
        assert other["message_id"] != ack["message_id"] and other["seq"] == 2, other

        await watcher.wait_messages(rid, 2)
        await watcher.quiet(0.5, "message")
        assert [m["seq"] for m in watcher.messages(rid)] == [1, 2], watcher.messages(rid)
        await sender2.close()
        await watcher.close()

    run(body())
    page = history(gw, rid)
    assert [(m["seq"], m["content"]) for m in page["messages"]] == [(1, "once"), (2, "mine")], page


def test_resume_with_since_after_a_forced_disconnect(gw):
    rid = create_room(gw)["id"]

    async def body():
        talker = await Client.joined(gw, "talker", rid)
        reader = await Client.joined(gw, "reader", rid)
        for n in range(5):
            await talker.send_message(f"before {n}")
        seen = [m["seq"] for m in await reader.wait_messages(rid, 5)]
        assert seen == [1, 2, 3, 4, 5], seen

        reader.abort()  # forced disconnect: no close handshake
        await reader.wait_closed()
        for n in range(5):
            await talker.send_message(f"missed {n}")

        # Reconnect while the talker keeps sending: the catch-up must come first, then live messages,
        # with no gap and nothing twice.
        async def keep_talking():
            for n in range(8):
                await talker.send_message(f"live {n}")
                await asyncio.sleep(0.03)

        talking = asyncio.create_task(keep_talking())
        back = await Client.connect(gw, "reader")
        await back.join(rid, since=seen[-1])
        await talking
        got = await back.wait_messages(rid, 13)
        await back.quiet(0.5, "message")
        seqs = [m["seq"] for m in back.messages(rid)]
        assert seqs == list(range(6, 19)), seqs
        assert [m["content"] for m in got[:5]] == [f"missed {n}" for n in range(5)]

        # since=0 replays the whole room; a client without since gets only what comes after its join
        replay = await Client.connect(gw, "replayer")
        await replay.join(rid, since=0)
        fresh = await Client.joined(gw, "fresh", rid)
        await talker.send_message("after everyone")
        assert [m["seq"] for m in await replay.wait_messages(rid, 19)] == list(range(1, 20))
        assert [m["seq"] for m in await fresh.wait_messages(rid, 1)] == [19]
        await fresh.quiet(0.3, "message")
        for client in (talker, back, replay, fresh):
            await client.close()

    run(body())


def test_members_joining_a_busy_room_get_a_gap_free_stream(gw, gateway_with):
    """While a room is busy, members join (some with `since`) on two gateways. From its join on, each
    gets every message exactly once and in order: no gap between catch-up and live delivery."""
    fast = gateway_with(RATE_LIMIT_PER_SEC="100000", RATE_LIMIT_BURST="100000")
    rid = create_room(fast)["id"]

    async def body():
        talker = await Client.joined(fast, "talker", rid)
        total = 160
        joiners: list[tuple[Client, int]] = []  # (client, first seq it must get)

        async def talk():
            for n in range(total):
                await talker.send_message(f"busy {n}")
                await asyncio.sleep(0.005)

        talking = asyncio.create_task(talk())
        for n in range(8):
            await asyncio.sleep(0.05)
            client = await Client.connect(gw if n % 2 else fast, f"joiner{n}")
            if n % 3 == 2:
                since = max(0, len(talker.messages(rid)) - 5)
                await client.join(rid, since=since)
                joiners.append((client, since + 1))
            else:
                joined = await client.join(rid)
                joiners.append((client, joined["last_seq"] + 1))
        assert not talking.done(), "the talker finished before the last join: the test proves nothing"
        await talking
        for client, first in joiners:
            await client.wait_messages(rid, total - first + 1)
        await asyncio.sleep(0.3)
        for client, first in joiners:
            seqs = [m["seq"] for m in client.messages(rid)]
            assert seqs and seqs[0] <= first, f"{client.label}: starts at {seqs[:3]}, expected ≤ {first}"
            assert seqs == list(range(seqs[0], total + 1)), f"{client.label}: gap or duplicate in {seqs}"
            await client.close()
        await talker.close()

    run(body())


def test_typing_notices_go_to_the_others_and_are_throttled(gw):
    rid = create_room(gw)["id"]

    async def body():
        a = await Client.joined(gw, "typer", rid)
        b = await Client.joined(gw, "watcher", rid)
        await a.send({"type": "typing", "room_id": rid})
        notice = await b.wait_for("typing")
        assert notice == {"type": "typing", "room_id": rid, "user_id": a.user_id, "username": "typer"}, notice
        await a.send({"type": "typing", "room_id": rid})  # within 2 s: dropped
        await b.quiet(0.6, "typing")
        await a.quiet(0.1, "typing")  # the typist never gets its own notice
        reply = await b.request({"type": "typing", "room_id": str(uuid.uuid4())}, "__none__")
        assert reply["code"] in ("not_in_room", "room_not_found"), reply
        for client in (a, b):
            await client.close()

    run(body())
    assert history(gw, rid)["messages"] == [], "typing notices must not be stored"


# --- security and limits ---------------------------------------------------------------------------------------

def test_origin_check(gateway_with):
    gateway = gateway_with(ALLOWED_ORIGINS="https://chat.example, http://localhost:3000")

    async def body():
        with pytest.raises(Rejected) as rejected:
            await Client.connect(gateway, "eve", origin="https://evil.example")
        assert rejected.value.status == 403, rejected.value
        assert rejected.value.json()["code"] == "forbidden"
        for origin in ("https://chat.example", "http://localhost:3000", None):
            client = await Client.connect(gateway, "ok", origin=origin)
            assert client.connected["type"] == "connected"
            await client.close()

    run(body())


SECRET = "test-secret-that-is-long-enough-for-hs256"


def make_token(secret: str = SECRET, **claims: Any) -> str:
    payload = {"exp": int(time.time()) + 300, **claims}
    return jwt.encode(payload, secret, algorithm="HS256")


def test_jwt_authentication(gateway_with):
    gateway = gateway_with(AUTH_JWT_SECRET=SECRET)
    subject = str(uuid.uuid4())

    async def body():
        good = make_token(sub=subject, username="jwt-user")
        # ?token=, and ?username is ignored
        client = await Client.open(gateway.ws_url("someone-else", token=good))
        assert client.connected["user_id"] == subject and client.connected["username"] == "jwt-user", client.connected
        # REST writes need the token too in token mode (test_auth_input.py)
        room = requests.post(gateway.base_url + "/api/v1/rooms", json={"name": unique()},
                             headers={"Authorization": f"Bearer {good}"}, timeout=10).json()
        await client.join(room["id"])
        await client.send({"type": "message", "content": "signed"})
        message = await client.wait_for("message")
        assert message["user_id"] == subject and message["username"] == "jwt-user", message
        await client.close()
        # Authorization: Bearer
        client = await Client.open(gateway.ws_url(), headers={"Authorization": f"Bearer {good}"})
        assert client.connected["user_id"] == subject
        await client.close()

        rejected_cases = {
            "no token": gateway.ws_url("mallory"),
            "expired": gateway.ws_url(token=make_token(sub=subject, username="x", exp=int(time.time()) - 60)),
            "wrong secret": gateway.ws_url(token=make_token("another-secret-of-sufficient-length!", sub=subject, username="x")),
            "not a jwt": gateway.ws_url(token="not.a.jwt"),
            "alg none": gateway.ws_url(token=jwt.encode({"sub": subject, "username": "x", "exp": int(time.time()) + 60},
                                                        None, algorithm="none")),
            "no exp": gateway.ws_url(token=jwt.encode({"sub": subject, "username": "x"}, SECRET, algorithm="HS256")),
        }
        for what, url in rejected_cases.items():
            with pytest.raises(Rejected) as rejected:
                await Client.open(url)
            assert rejected.value.status == 401, f"{what}: {rejected.value}"
            assert rejected.value.json()["code"] == "unauthorized", what

    run(body())


def test_jwt_hand_made_hmac_token(gateway_with):
    """The token format, independently of PyJWT: base64url(header).base64url(claims).base64url(HMAC-SHA256)."""
    gateway = gateway_with(AUTH_JWT_SECRET=SECRET)

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = b64(json.dumps({"sub": "hand-made", "name": "handy", "exp": int(time.time()) + 60}).encode())
    signature = b64(hmac.new(SECRET.encode(), f"{header}.{claims}".encode(), hashlib.sha256).digest())

    async def body():
        client = await Client.open(gateway.ws_url(token=f"{header}.{claims}.{signature}"))
        assert client.connected["username"] == "handy", client.connected
        assert UUID.match(client.connected["user_id"]), client.connected  # sub is not a UUID: an id derived from it
        await client.close()
        with pytest.raises(Rejected) as rejected:
            await Client.open(gateway.ws_url(token=f"{header}.{claims}.{signature[:-2]}AA"))
        assert rejected.value.status == 401

    run(body())


def test_rate_limit(gateway_with):
    gateway = gateway_with(RATE_LIMIT_PER_SEC="2", RATE_LIMIT_BURST="3")
    rid = create_room(gateway)["id"]

    async def body():
        client = await Client.joined(gateway, "spammer", rid)
        replies = [await client.send_message(f"spam {n}", client_msg_id=f"spam-{n}") for n in range(6)]
        acks = [r for r in replies if r["type"] == "ack"]
        limited = [r for r in replies if r["type"] == "error"]
        assert len(acks) == 3, replies  # the burst
        assert len(limited) == 3, replies
        for reply in limited:
            assert reply["code"] == "rate_limited", reply
            assert is_int(reply["retry_after_ms"]) and 0 < reply["retry_after_ms"] <= 1000, reply
        assert {r["client_msg_id"] for r in limited} == {"spam-3", "spam-4", "spam-5"}
        # after waiting as told, sending works again; the connection was never closed
        await asyncio.sleep(limited[-1]["retry_after_ms"] / 1000 + 0.05)
        assert (await client.send_message("patient", client_msg_id="spam-6"))["type"] == "ack"
        assert client.close_code is None
        await client.close()

    run(body())
    assert [m["content"] for m in history(gateway, rid)["messages"]] == ["spam 0", "spam 1", "spam 2", "patient"]


# --- slow clients ----------------------------------------------------------------------------------------------

class RawWebSocket:
    """A minimal blocking WebSocket client on a plain socket with a tiny receive buffer, so it can stop
    reading and let the server's writes back up."""

    def __init__(self, port: int, path: str):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(4096)
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head

    def send_text(self, text: str) -> None:
        payload = text.encode()
        mask = os.urandom(4)
        header = bytes([0x81])
        if len(payload) < 126:
            header += bytes([0x80 | len(payload)])
        else:
            header += bytes([0x80 | 126]) + struct.pack("!H", len(payload))
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def read_until(self, needle: bytes) -> None:
        while needle not in self.buffer:
            chunk = self.sock.recv(65536)
            assert chunk, "closed"
            self.buffer += chunk

    def drain_until_closed(self, timeout: float) -> tuple[bool, bytes]:
        """Reads everything; (closed by the server, the last bytes received)."""
        deadline = time.monotonic() + timeout
        tail = b""
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(1 << 20)
            except socket.timeout:
                return False, tail
            except ConnectionResetError:
                return True, tail
            if not chunk:
                return True, tail
            tail = (tail + chunk)[-256:]
        return False, tail

    def close(self) -> None:
        self.sock.close()


def test_a_client_that_never_reads_is_disconnected_and_does_not_slow_the_room(gateway_with):
    gateway = gateway_with(OUTBOUND_QUEUE_LIMIT="32", RATE_LIMIT_PER_SEC="100000", RATE_LIMIT_BURST="100000")
    rid = create_room(gateway)["id"]
    slow_before = gateway.metric("gateway_slow_client_disconnects_total")
    slow = RawWebSocket(gateway.port, "/ws?username=sloth")
    slow.send_text(json.dumps({"type": "join", "room_id": rid}))
    slow.read_until(b'"type":"joined"')
    # From here on the slow client never reads.
    content = "z" * 4000

    async def body():
        fast = await Client.joined(gateway, "hare", rid)
        sender = await Client.joined(gateway, "sender", rid)
        sent_at: dict[int, float] = {}  # seq → when its send started
        deadline = time.monotonic() + 60
        n = 0
        while True:
            started = time.monotonic()
            ack = await sender.send_message(content)
            assert ack["type"] == "ack", ack
            sent_at[ack["seq"]] = started
            n += 1
            if n % 50 == 0 and gateway.metric("gateway_slow_client_disconnects_total") > slow_before:
                break
            assert time.monotonic() < deadline, f"the slow client was not disconnected after {n} messages"
        for _ in range(20):  # the room keeps going after the disconnect
            started = time.monotonic()
            ack = await sender.send_message(content)
            sent_at[ack["seq"]] = started
        got = await fast.wait_messages(rid, len(sent_at), timeout=15)
        latencies = sorted(frame.at - sent_at[frame.data["seq"]] for frame in fast.frames
                           if frame.data.get("type") == "message")
        assert [m["seq"] for m in got] == sorted(sent_at), "the fast client missed messages"
        worst = latencies[-1]
        p95 = latencies[int(len(latencies) * 0.95)]
        print(f"slow client disconnected after {n} messages; fast client p95 {p95 * 1000:.1f} ms, worst {worst * 1000:.1f} ms")
        assert p95 < 0.5 and worst < 1.5, f"fast client delayed: p95 {p95:.3f} s, worst {worst:.3f} s over {len(latencies)}"
        for client in (fast, sender):
            await client.close()
        return n

    sent = run(body())
    closed, tail = slow.drain_until_closed(timeout=10)
    slow.close()
    assert closed, f"the slow client's connection is still open after {sent} messages"
    # Read again within the gateway's close timeout (10 s), it gets the close frame 1008 (policy violation).
    assert b"\x88" in tail[-64:], f"no close frame before the end of the stream: {tail[-64:]!r}"
    frame = tail[tail.rindex(b"\x88"):]
    assert struct.unpack("!H", frame[2:4])[0] == 1008, frame
    assert gateway.metric("gateway_slow_client_disconnects_total") == slow_before + 1


def test_a_peer_that_never_answers_pings_is_closed(gateway_with):
    gateway = gateway_with(PING_INTERVAL_MS="300")

    async def body():
        alive = await Client.connect(gateway, "ponger")  # websockets answers pings by itself
        mute = await asyncio.to_thread(RawWebSocket, gateway.port, "/ws?username=mute")
        started = time.monotonic()
        closed, tail = await asyncio.to_thread(mute.drain_until_closed, 5)
        elapsed = time.monotonic() - started
        mute.close()
        assert closed, "a peer that never answers pings is still connected after 5 s"
        assert elapsed < 2.0, f"closed only after {elapsed:.1f} s with PING_INTERVAL_MS=300"
        assert b"\x89" in tail, "the gateway never sent a ping"
        await asyncio.sleep(1.0)  # several ping periods
        assert alive.close_code is None, "a client that answers pings was disconnected"
        assert (await alive.request({"type": "room_list"}, "room_list"))["type"] == "room_list"
        await alive.close()

    run(body())


# --- several gateways, shutdown ---------------------------------------------------------------------------------

def test_two_gateways_deliver_each_others_messages(gw, gateway_with):
    other = gateway_with("second")  # a second gateway with the default settings
    assert other.port != gw.port
    rid = create_room(gw)["id"]

    async def body():
        a = await Client.connect(gw, "on-one")
        b = await Client.connect(other, "on-two")
        assert a.connected["gateway_id"] != b.connected["gateway_id"]
        await a.join(rid)
        await b.join(rid)
        assert (await a.wait_for("user_joined", username="on-two"))["user_id"] == b.user_id
        for n in range(5):
            await a.send_message(f"from one {n}")
            await b.send_message(f"from two {n}")
        got_a = await a.wait_messages(rid, 10)
        got_b = await b.wait_messages(rid, 10)
        await a.quiet(0.3, "message")
        assert [m["seq"] for m in got_a] == list(range(1, 11)) == [m["seq"] for m in got_b]
        assert got_a == got_b
        reply = await b.request({"type": "members", "room_id": rid}, "members")
        assert sorted(m["username"] for m in reply["members"]) == ["on-one", "on-two"]
        await b.close()
        assert (await a.wait_for("user_left", username="on-two"))["user_id"] == b.user_id
        await a.close()

    run(body())


def test_sigterm_closes_every_socket_with_1001(system):
    gateway = system.add_gateway()
    rid = create_room(gateway)["id"]

    async def body():
        idle = await Client.connect(gateway, "idle")
        member = await Client.joined(gateway, "member", rid)
        started = time.monotonic()
        code = await gateway.aterminate(timeout=10)
        assert code == 0, f"exit code {code}"
        assert await idle.wait_closed(1) == 1001
        assert await member.wait_closed(1) == 1001
        assert time.monotonic() - started < 5
        # the member's membership was released on the way out
        reply = requests.get(f"{system.gateway.base_url}/api/v1/rooms/{rid}", timeout=5).json()
        assert reply["member_count"] == 0, reply

    run(body())


# --- failures: gap fill, chat-service outage ------------------------------------------------------------------

def test_gap_fill_when_a_delivery_arrives_out_of_order(make_system):
    """A delivery with a seq beyond the next expected one (here: published straight onto the room's
    delivery subject while the broadcaster is stopped) makes the gateway fetch the missing messages from
    history and send them first; the broadcaster's later deliveries of them are dropped as duplicates."""
    system = make_system()
    gateway, broadcaster = system.gateway, system.broadcaster
    rid = create_room(gateway)["id"]
    fills_before = gateway.metric("gateway_gap_fill_messages_total")
    duplicates_before = gateway.metric("gateway_duplicate_deliveries_dropped_total")

    async def body():
        talker = await Client.joined(gateway, "talker", rid)
        victim = await Client.joined(gateway, "victim", rid)
        await talker.send_message("one")
        await victim.wait_messages(rid, 1)

        broadcaster.pause()
        try:
            for n in range(2, 5):
                await talker.send_message(f"held {n}")
            await victim.quiet(0.3, "message")
            stored = {m["seq"]: m for m in history(gateway, rid)["messages"]}
            assert sorted(stored) == [1, 2, 3, 4]
            nc = await nats.connect(system.nats.url)
            try:
                frame = json.dumps({"type": "message", **stored[4]}).encode()
                await nc.publish(f"chat.deliver.room.{rid}", frame, headers={
                    "Chat-Event": "MessageSent.v1", "Chat-Seq": "4", "Chat-Room": rid})
                await nc.flush()
            finally:
                await nc.close()
            got = await victim.wait_messages(rid, 4)
            assert [m["seq"] for m in got] == [1, 2, 3, 4], got
            assert [m["content"] for m in got] == ["one", "held 2", "held 3", "held 4"]
        finally:
            broadcaster.resume()

        await talker.send_message("five")  # after the broadcaster's (duplicate) deliveries of 2..4
        await victim.wait_messages(rid, 5)
        await victim.quiet(0.5, "message")
        assert [m["seq"] for m in victim.messages(rid)] == [1, 2, 3, 4, 5], victim.messages(rid)
        assert [m["seq"] for m in await talker.wait_messages(rid, 5)] == [1, 2, 3, 4, 5]
        for client in (talker, victim):
            await client.close()

    run(body())
    assert gateway.metric("gateway_gap_fill_messages_total") - fills_before == 2
    assert gateway.metric("gateway_duplicate_deliveries_dropped_total") - duplicates_before >= 3


def test_deliveries_lost_in_a_nats_disconnect_are_recovered(make_system):
    """A gateway whose NATS connection drops misses the deliveries published meanwhile (core NATS is at
    most once). After it reconnects its members must get them, in order and exactly once, even if no
    later message comes to reveal the gap."""
    from proxy import TcpProxy

    system = make_system()
    proxy = TcpProxy(system.nats.port)
    lossy = None
    try:
        lossy = system.add_gateway({"NATS_URL": f"nats://127.0.0.1:{proxy.port}"})
        direct = system.gateway
        rid = create_room(direct)["id"]

        async def body():
            talker = await Client.joined(direct, "talker", rid)
            victim = await Client.joined(lossy, "victim", rid)
            await talker.send_message("one")
            assert [m["seq"] for m in await victim.wait_messages(rid, 1)] == [1]

            await asyncio.to_thread(proxy.cut)  # only the lossy gateway's NATS connection drops
            await wait_until(lambda: http_get(lossy.base_url + "/health")[0] == 503, what="gateway reports NATS down")
            for n in range(2, 5):
                await talker.send_message(f"while cut {n}")
            await talker.wait_messages(rid, 4)
            await asyncio.sleep(0.3)
            await asyncio.to_thread(proxy.restore)
            await lossy.await_ready()  # /health 200 again: NATS reconnected

            got = await victim.wait_messages(rid, 4, timeout=5)  # no later message is sent
            assert [m["content"] for m in got] == ["one", "while cut 2", "while cut 3", "while cut 4"], got
            await talker.send_message("after")
            await victim.wait_messages(rid, 5)
            await victim.quiet(0.5, "message")
            assert [m["seq"] for m in victim.messages(rid)] == [1, 2, 3, 4, 5], victim.messages(rid)
            assert victim.close_code is None, "the WebSocket must survive the gateway's NATS reconnect"
            for client in (talker, victim):
                await client.close()

        run(body())
    finally:
        if lossy is not None:
            lossy.stop()  # while its NATS connection still works, so it does not wait for a reconnect
        proxy.close()


async def wait_until(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            if await asyncio.to_thread(predicate):
                return
        except (OSError, ValueError, KeyError):
            pass
        if loop.time() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        await asyncio.sleep(0.05)


def test_chat_service_unavailable_then_recovered(make_system):
    system = make_system(gateway_env={"REQUEST_TIMEOUT_MS": "1000"})
    gateway, service = system.gateway, system.chat_service
    rid = create_room(gateway)["id"]

    async def body():
        client = await Client.joined(gateway, "patient", rid)

        service.pause()  # alive but silent: requests time out
        try:
            started = time.monotonic()
            reply = await client.request({"type": "room_list"}, "room_list", timeout=5)
            elapsed = time.monotonic() - started
            assert reply["type"] == "error" and reply["code"] == "unavailable", reply
            assert elapsed < 3, f"unavailable only after {elapsed:.1f} s (REQUEST_TIMEOUT_MS=1000)"
            reply = await client.send_message("during outage", client_msg_id="outage-1")
            assert reply["code"] == "unavailable" and reply["client_msg_id"] == "outage-1", reply
            status, body = await asyncio.to_thread(http_get, gateway.base_url + "/api/v1/rooms", 5)
            assert status == 503 and json.loads(body)["code"] == "unavailable", (status, body)
            assert (await asyncio.to_thread(http_get, gateway.base_url + "/health"))[0] == 200
        finally:
            service.resume()

        await service.akill()  # gone: no responders, an immediate answer
        started = time.monotonic()
        reply = await client.request({"type": "room_list"}, "room_list")
        assert reply["code"] == "unavailable" and time.monotonic() - started < 1.5, reply
        await service.arestart()
        assert (await client.request({"type": "room_list"}, "room_list"))["type"] == "room_list"
        # the retry of the failed send goes through once, and the socket was never closed
        ack = await client.send_message("during outage", client_msg_id="outage-1")
        assert ack["type"] == "ack" and ack["seq"] == 1, ack
        assert [m["seq"] for m in await client.wait_messages(rid, 1)] == [1]
        assert client.close_code is None
        await client.close()

    run(body())


def test_room_created_rejoin_and_errors_name_their_room(gw):
    """room_created reaches connected clients; joining a room again reports its real last_seq; errors
    about a room echo its room_id."""
    room = create_room(gw)
    missing = str(uuid.uuid4())

    async def body():
        client = await Client.connect(gw, "frank")
        created = create_room(gw)
        news = await client.wait_for("room_created", where=lambda f: f["room"]["id"] == created["id"])
        assert news["room"]["name"] == created["name"], news

        await client.join(room["id"])
        await client.send_message("one")
        await client.send_message("two")
        again = await client.join(room["id"])
        assert again["last_seq"] == 2, again

        reply = await client.request({"type": "history", "room_id": missing}, "history")
        assert reply["type"] == "error" and reply["room_id"] == missing, reply
        reply = await client.request({"type": "members", "room_id": missing}, "members")
        assert reply["type"] == "error" and reply["room_id"] == missing, reply
        await client.close()

    run(body())


def test_gateway_declared_dead_while_paused_joins_its_members_again(make_system):
    """A gateway that stops heartbeating (SIGSTOP, as in a partition) longer than the presence timeout
    is declared dead: its members are removed (user_left). When it comes back with its sockets still
    open, its next heartbeat is told so and it joins them again: user_joined, and they can send."""
    system = make_system(gateways=2, chat_env={"CHAT_PRESENCE_TIMEOUT_MS": "1500", "CHAT_PRESENCE_SWEEP_MS": "300"},
                         gateway_env={"HEARTBEAT_INTERVAL_MS": "300"})
    paused_gateway, other_gateway = system.gateways
    rid = create_room(other_gateway)["id"]

    async def body():
        ann = await Client.joined(paused_gateway, "ann", rid)
        bob = await Client.joined(other_gateway, "bob", rid)
        paused_gateway.pause()
        try:
            left = await bob.wait_for("user_left", username="ann", timeout=15)
            assert left["room_id"] == rid, left
        finally:
            paused_gateway.resume()
        back = await bob.wait_for("user_joined", username="ann", timeout=15)
        assert back["room_id"] == rid, back
        members = await ann.request({"type": "members", "room_id": rid}, "members")
        assert sorted(m["username"] for m in members["members"]) == ["ann", "bob"], members
        ack = await ann.send_message("still here", client_msg_id=unique("c"))
        assert ack["type"] == "ack", ack
        got = await bob.wait_for("message", content="still here")
        assert got["username"] == "ann", got

    run(body())


def test_connected_is_the_first_frame_even_while_rooms_are_being_created(gw):
    """Room-wide news (room_created) goes to every registered socket; a socket must still get `connected`
    first. Rooms are created without pause while 40 clients connect (Client.connect checks the first frame)."""
    import threading

    stop = threading.Event()
    created = []

    def create_rooms():
        while not stop.is_set() and len(created) < 400:
            created.append(create_room(gw)["id"])

    creator = threading.Thread(target=create_rooms)
    creator.start()

    async def body():
        for index in range(40):
            client = await Client.connect(gw, f"first{index}")
            await client.close()

    try:
        run(body())
    finally:
        stop.set()
        creator.join(timeout=30)
    assert len(created) > 0, "rooms were created during the connects"
