"""Hostile input (issue 9): a data-driven corpus against every WebSocket frame type and every REST
endpoint of one gateway. For each refused case: the exact error code (and HTTP status), the socket and
server still work afterwards, nothing was stored (CHAT_EVENTS message count, read with nats-py, and the
rooms' histories unchanged) and no other room saw anything. Accepted-but-odd content (HTML, unicode edge
cases) is stored verbatim. The rules are listed in docs/limits.md.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import uuid

import nats
import pytest
import requests

from chatclient import run, Client, Rejected, create_room, history, unique
from system import System, http_get

ROOM = "%ROOM%"        # replaced by the joined target room's id
MISSING = str(uuid.uuid4())



@pytest.fixture(scope="module")
def system(tmp_path_factory):
    system = System(tmp_path_factory.mktemp("hostile-system"))
    try:
        system.start(gateway_env={"WEB_ROOT": "web"})
        yield system
    finally:
        system.stop()


@pytest.fixture(scope="module")
def rooms(system):
    return {"target": create_room(system.gateway), "victim": create_room(system.gateway)}


async def stream_messages(url: str) -> int:
    nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False, max_reconnect_attempts=0)
    try:
        reply = await nc.request("$JS.API.STREAM.INFO.CHAT_EVENTS", b"", timeout=2)
        return json.loads(reply.data)["state"]["messages"]
    finally:
        await nc.close()


# (frame text, expected code, what) — "%ROOM%" is the joined room. Every one must be refused.
LONG = "x" * 10_000
WS_REFUSED = [
    # not JSON / not an object
    ("not json", "invalid_request", "plain text"),
    ("", "invalid_request", "empty frame"),
    ("   ", "invalid_request", "whitespace"),
    ("{", "invalid_request", "truncated"),
    ('{"type":"room_list"} {"type":"room_list"}', "invalid_request", "two documents"),
    ("[]", "invalid_request", "array"),
    ('"join"', "invalid_request", "string"),
    ("123", "invalid_request", "number"),
    ("null", "invalid_request", "null"),
    ("[" * 5000 + "]" * 5000, "invalid_request", "deep array nesting"),
    ('{"type":"room_list","x":' + '{"a":' * 2000 + "1" + "}" * 2000 + "}", "invalid_request", "deep object nesting"),
    ('{"type":"message","content":"\\ud800"}', "invalid_request", "lone high surrogate escape"),
    ('{"type":"message","content":"\\udc00x"}', "invalid_request", "lone low surrogate escape"),
    ('{"type":"message","content":"\\u12"}', "invalid_request", "short unicode escape"),
    # type
    ("{}", "invalid_request", "missing type"),
    ('{"type":null}', "invalid_request", "null type"),
    ('{"type":1}', "invalid_request", "number type"),
    ('{"type":["join"]}', "invalid_request", "array type"),
    ('{"type":"JOIN","room_id":"%ROOM%"}', "invalid_request", "type is case-sensitive"),
    ('{"type":"join\\u0000","room_id":"%ROOM%"}', "invalid_request", "NUL in type"),
    ('{"type":"<script>alert(1)</script>"}', "invalid_request", "HTML type"),
    ('{"type":"' + LONG + '"}', "invalid_request", "10 KB type"),
    # join
    ('{"type":"join"}', "invalid_request", "join without room_id"),
    ('{"type":"join","room_id":null}', "invalid_request", "join null room_id"),
    ('{"type":"join","room_id":42}', "invalid_request", "join number room_id"),
    ('{"type":"join","room_id":{"$gt":""}}', "invalid_request", "join object room_id"),
    ('{"type":"join","room_id":"%ROOM%","since":-1}', "invalid_request", "negative since"),
    ('{"type":"join","room_id":"%ROOM%","since":1.5}', "invalid_request", "fractional since"),
    ('{"type":"join","room_id":"%ROOM%","since":1e300}', "invalid_request", "huge since"),
    ('{"type":"join","room_id":"%ROOM%","since":1e999}', "invalid_request", "overflowing since"),
    ('{"type":"join","room_id":"%ROOM%","since":"5"}', "invalid_request", "string since"),
    ('{"type":"join","room_id":"a.b"}', "room_not_found", "subject dot in room id"),
    ('{"type":"join","room_id":"*"}', "room_not_found", "wildcard room id"),
    ('{"type":"join","room_id":">"}', "room_not_found", "full wildcard room id"),
    ('{"type":"join","room_id":"chat.room.>"}', "room_not_found", "subject room id"),
    ('{"type":"join","room_id":"room id"}', "room_not_found", "space in room id"),
    ('{"type":"join","room_id":"../../etc/passwd"}', "room_not_found", "path traversal room id"),
    ('{"type":"join","room_id":"%ROOM% "}', "room_not_found", "trailing space room id"),
    ('{"type":"join","room_id":"%ROOM%.x"}', "room_not_found", "room id with suffix"),
    ('{"type":"join","room_id":"' + MISSING + '"}', "room_not_found", "unknown room"),
    ('{"type":"join","room_id":"' + LONG + '"}', "room_not_found", "10 KB room id"),
    # leave / message without membership of that room
    ('{"type":"leave","room_id":"' + MISSING + '"}', "not_in_room", "leave a room not joined"),
    ('{"type":"leave","room_id":5}', "invalid_request", "leave number room_id"),
    ('{"type":"message"}', "invalid_request", "message without content"),
    ('{"type":"message","content":null}', "invalid_request", "null content"),
    ('{"type":"message","content":12}', "invalid_request", "number content"),
    ('{"type":"message","content":["a"]}', "invalid_request", "array content"),
    ('{"type":"message","content":"x","room_id":"*"}', "room_not_found", "message to wildcard room"),
    ('{"type":"message","content":"x","room_id":"' + MISSING + '"}', "not_in_room", "message to a room not joined"),
    ('{"type":"message","content":""}', "content_invalid", "empty content"),
    ('{"type":"message","content":" \\n\\t "}', "content_invalid", "whitespace content"),
    ('{"type":"message","content":"a\\u0000b"}', "content_invalid", "NUL in content"),
    ('{"type":"message","content":"\\u001b[31mred"}', "content_invalid", "ANSI escape in content"),
    ('{"type":"message","content":"a\\u0085b"}', "content_invalid", "C1 control in content"),
    ('{"type":"message","content":"a\\u007fb"}', "content_invalid", "DEL in content"),
    ('{"type":"message","content":"' + "x" * 4097 + '"}', "content_too_long", "4097 bytes"),
    ('{"type":"message","content":"' + "😀" * 1025 + '"}', "content_too_long", "1025 4-byte emoji"),
    ('{"type":"message","content":"x","client_msg_id":"a.b"}', "invalid_request", "dot in client_msg_id"),
    ('{"type":"message","content":"x","client_msg_id":"*"}', "invalid_request", "wildcard client_msg_id"),
    ('{"type":"message","content":"x","client_msg_id":"a b"}', "invalid_request", "space in client_msg_id"),
    ('{"type":"message","content":"x","client_msg_id":""}', "invalid_request", "empty client_msg_id"),
    ('{"type":"message","content":"x","client_msg_id":"' + "a" * 65 + '"}', "invalid_request", "65-char client_msg_id"),
    ('{"type":"message","content":"x","client_msg_id":7}', "invalid_request", "number client_msg_id"),
    # history
    ('{"type":"history"}', "invalid_request", "history without room_id"),
    ('{"type":"history","room_id":"%ROOM%","limit":0}', "invalid_request", "limit 0"),
    ('{"type":"history","room_id":"%ROOM%","limit":-5}', "invalid_request", "negative limit"),
    ('{"type":"history","room_id":"%ROOM%","limit":"ten"}', "invalid_request", "string limit"),
    ('{"type":"history","room_id":"%ROOM%","limit":1e400}', "invalid_request", "overflowing limit"),
    ('{"type":"history","room_id":"%ROOM%","before":-1}', "invalid_request", "negative before"),
    ('{"type":"history","room_id":"%ROOM%","before":true}', "invalid_request", "boolean before"),
    ('{"type":"history","room_id":">"}', "room_not_found", "history of a wildcard"),
    ('{"type":"history","room_id":"' + MISSING + '"}', "room_not_found", "history of an unknown room"),
    # members / typing
    ('{"type":"members"}', "invalid_request", "members without room_id"),
    ('{"type":"members","room_id":["a"]}', "invalid_request", "members array room_id"),
    ('{"type":"members","room_id":"a b"}', "room_not_found", "members space room id"),
    ('{"type":"typing"}', "invalid_request", "typing without room_id"),
    ('{"type":"typing","room_id":"' + MISSING + '"}', "not_in_room", "typing in a room not joined"),
    ('{"type":"typing","room_id":"*"}', "room_not_found", "typing wildcard room"),
]


@pytest.mark.parametrize("template, code, what", WS_REFUSED, ids=[case[2] for case in WS_REFUSED])
def test_websocket_frame_is_refused_and_nothing_changes(system, rooms, template, code, what):
    gw = system.gateway
    target, victim = rooms["target"]["id"], rooms["victim"]["id"]

    async def body():
        observer = await Client.joined(gw, "observer", victim)
        observed = len(observer.frames)
        client = await Client.joined(gw, "mallory", target)
        before = await stream_messages(system.nats.url)
        histories = [history(gw, target)["messages"], history(gw, victim)["messages"]]
        start = len(client.frames)
        await client.send_raw(template.replace(ROOM, target))
        reply = await client.wait_for("error", timeout=5)
        assert reply["code"] == code, f"{what}: {reply}"
        assert isinstance(reply["error"], str) and 0 < len(reply["error"]) <= 400, reply
        answers = [f.data["type"] for f in client.frames[start:] if f.data["type"] not in ("user_joined", "user_left")]
        assert answers == ["error"], client.frames[start:]
        # the connection still works, nothing stored, nobody else saw anything
        assert (await client.request({"type": "room_list"}, "room_list"))["type"] == "room_list"
        assert client.close_code is None
        assert await stream_messages(system.nats.url) == before, f"{what}: an event was stored"
        assert [history(gw, target)["messages"], history(gw, victim)["messages"]] == histories
        seen = [f.data for f in observer.frames[observed:]]
        assert not [f for f in seen if f["type"] in ("message", "typing", "user_joined", "user_left")
                    and f.get("username") != "observer"], seen
        await client.close()
        await observer.close()

    run(body())
    assert http_get(gw.base_url + "/health")[0] == 200
    gw.assert_running()


# Accepted content: stored and delivered byte for byte (HTML is text; the UI escapes it).
ACCEPTED = [
    ("<script>alert('x')</script><img src=x onerror=alert(1)>", "HTML and script"),
    ("\u202eevil\u202c right-to-left override", "RTL override in content"),
    ("zero\u200bwidth\u200djoiner\ufeff", "zero-width characters"),
    ("😀👩‍💻🏳️‍🌈 \U0001F600", "4-byte emoji and ZWJ sequences"),
    ("cafe\u0301 café", "NFD and NFC (not normalised)"),
    ("line1\nline2\r\n\ttabbed", "tab and line breaks"),
    ("a.b * > chat.room.> ../../etc/passwd %00 %2e", "subject and path characters"),
    ('{"type":"message"} \\u0000 "quoted"', "JSON inside content"),
    ("😀" * 1024, "exactly 4096 bytes of emoji"),
]


def test_odd_content_is_stored_verbatim(system, rooms):
    gw = system.gateway
    room = create_room(gw)["id"]

    async def body():
        client = await Client.joined(gw, "ann", room)
        other = await Client.joined(gw, "bob", room)
        for content, what in ACCEPTED:
            ack = await client.send_message(content)
            assert ack["type"] == "ack", f"{what}: {ack}"
        got = await other.wait_messages(room, len(ACCEPTED))
        assert [m["content"] for m in got] == [c for c, _ in ACCEPTED]
        await client.close()
        await other.close()

    run(body())
    stored = history(gw, room, limit=50)["messages"]
    assert [m["content"] for m in stored] == [c for c, _ in ACCEPTED]


# --- names -----------------------------------------------------------------------------------------------------

NAMES_REFUSED = [
    ("", "empty"), ("   ", "blank"), ("x" * 65, "65 characters"), ("a\u0000b", "NUL"), ("a\nb", "newline"),
    ("evil\u202etxt", "RTL override"), ("a\u200bb", "zero-width space"), ("\ufeffname", "BOM"), ("a\u2066b", "bidi isolate"),
    ("a" + "\u0301" * 300, "one character of 601 bytes"), ("x\u00adx", "soft hyphen"),
]


@pytest.mark.parametrize("name, what", NAMES_REFUSED, ids=[w for _, w in NAMES_REFUSED])
def test_invalid_room_names_are_refused(system, name, what):
    gw = system.gateway
    before = run(stream_messages(system.nats.url))
    response = requests.post(gw.base_url + "/api/v1/rooms", json={"name": name}, timeout=5)
    assert response.status_code == 400 and response.json()["code"] == "name_invalid", (what, response.text)
    assert run(stream_messages(system.nats.url)) == before


def test_names_keep_html_and_subject_characters_and_are_nfc(system):
    gw = system.gateway
    for name in ("<b>bold</b> " + unique(""), "a.b*> ../" + unique(""), "👩‍💻 " + unique("")):
        response = requests.post(gw.base_url + "/api/v1/rooms", json={"name": name}, timeout=5)
        assert response.status_code == 201 and response.json()["name"] == name, response.text
    base = unique("cafe")
    nfd = requests.post(gw.base_url + "/api/v1/rooms", json={"name": base + "e\u0301"}, timeout=5)
    assert nfd.status_code == 201 and nfd.json()["name"] == base + "\u00e9", nfd.text
    nfc = requests.post(gw.base_url + "/api/v1/rooms", json={"name": base.upper() + "\u00c9"}, timeout=5)
    assert nfc.status_code == 409 and nfc.json()["code"] == "room_exists", nfc.text


REST_BODIES = [
    (b"not json", 400, "invalid_request", "plain text"),
    (b"", 400, "invalid_request", "empty body"),
    (b"[]", 400, "invalid_request", "array"),
    (b"{}", 400, "invalid_request", "missing name"),
    (b'{"name":null}', 400, "invalid_request", "null name"),
    (b'{"name":123}', 400, "invalid_request", "number name"),
    (b'{"name":1e999}', 400, "invalid_request", "overflowing number"),
    (b'{"name":["a"]}', 400, "invalid_request", "array name"),
    (b'{"name":"\xff\xfe"}', 400, "invalid_request", "invalid UTF-8"),
    (b'{"name":"\\ud800"}', 400, "invalid_request", "lone surrogate"),
    (b"[" * 5000 + b"]" * 5000, 400, "invalid_request", "deep nesting"),
    (b'{"name":"' + b"x" * 20000 + b'"}', 413, "invalid_request", "20 KB body"),
]


@pytest.mark.parametrize("body, status, code, what", REST_BODIES, ids=[c[3] for c in REST_BODIES])
def test_rest_create_room_bodies(system, body, status, code, what):
    gw = system.gateway
    before = run(stream_messages(system.nats.url))
    response = requests.post(gw.base_url + "/api/v1/rooms", data=body, headers={"Content-Type": "application/json"}, timeout=5)
    assert response.status_code == status, (what, response.status_code, response.text)
    assert response.json()["code"] == code and response.json()["error"], response.text
    assert response.headers["Content-Type"] == "application/json"
    assert run(stream_messages(system.nats.url)) == before
    assert http_get(gw.base_url + "/health")[0] == 200


REST_GETS = [
    ("/api/v1/rooms/a.b", 404, "room_not_found"),
    ("/api/v1/rooms/%2A", 404, "room_not_found"),
    ("/api/v1/rooms/%3E", 404, "room_not_found"),
    ("/api/v1/rooms/..%2F..%2Fhealth", 404, "room_not_found"),
    ("/api/v1/rooms/" + MISSING, 404, "room_not_found"),
    ("/api/v1/rooms/" + "x" * 3000, 404, "room_not_found"),
    ("/api/v1/rooms/%00", 404, "room_not_found"),
    ("/api/v1/rooms/%ROOM%/history?limit=0", 400, "invalid_request"),
    ("/api/v1/rooms/%ROOM%/history?limit=-1", 400, "invalid_request"),
    ("/api/v1/rooms/%ROOM%/history?limit=abc", 400, "invalid_request"),
    ("/api/v1/rooms/%ROOM%/history?limit=1e3", 400, "invalid_request"),
    ("/api/v1/rooms/%ROOM%/history?limit=+5", 400, "invalid_request"),
    ("/api/v1/rooms/%ROOM%/history?limit=", 400, "invalid_request"),
    ("/api/v1/rooms/%ROOM%/history?limit=99999999999999999999999", 400, "invalid_request"),
    ("/api/v1/rooms/%ROOM%/history?before=-1", 400, "invalid_request"),
    ("/api/v1/rooms/%ROOM%/history?before=18446744073709551616", 400, "invalid_request"),
    ("/api/v1/rooms/%ROOM%/history?before=%FF", 400, "invalid_request"),
    ("/api/v1/rooms/*/history", 404, "room_not_found"),
    ("/api/v1/nope", 404, "not_found"),
    ("/api/v2/rooms", 404, "not_found"),
]


@pytest.mark.parametrize("path, status, code", REST_GETS, ids=[c[0].replace("%ROOM%", "R")[:60] for c in REST_GETS])
def test_rest_gets(system, rooms, path, status, code):
    gw = system.gateway
    response = requests.get(gw.base_url + path.replace(ROOM, rooms["target"]["id"]), timeout=5)
    assert response.status_code == status, (path, response.status_code, response.text)
    assert response.json()["code"] == code, response.text
    assert response.headers.get("X-Content-Type-Options") == "nosniff"


def test_rest_history_large_limit_is_capped_and_other_methods_are_json_405(system, rooms):
    gw = system.gateway
    response = requests.get(f"{gw.base_url}/api/v1/rooms/{rooms['target']['id']}/history?limit=100000", timeout=5)
    assert response.status_code == 200 and response.json()["has_more"] is False
    for method in ("DELETE", "PUT", "PATCH"):
        response = requests.request(method, gw.base_url + "/api/v1/rooms", timeout=5)
        assert response.status_code == 405 and response.json()["code"] == "invalid_request", (method, response.text)
        assert response.headers["Allow"] == "GET, POST", (method, response.headers)


def test_static_files_have_nosniff_cache_control_and_a_strict_csp(system):
    response = requests.get(system.gateway.base_url + "/", timeout=5)
    assert response.status_code == 200 and "text/html" in response.headers["Content-Type"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-cache"
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp, csp
    assert response.headers["X-Frame-Options"] == "DENY" and response.headers["Referrer-Policy"] == "no-referrer"
    api = requests.get(system.gateway.base_url + "/api/v1/rooms", timeout=5)
    assert api.headers["X-Content-Type-Options"] == "nosniff" and "Cache-Control" not in api.headers


# --- /ws upgrade: usernames in the query ---------------------------------------------------------------------

USERNAMES = [
    ("a+b", "a b"), ("a%2Bb", "a+b"), ("%20%20ann%20", "ann"), ("%3Cscript%3E", "<script>"), ("a.b%2A%3E", "a.b*>"),
    ("%F0%9F%98%80" * 32, "😀" * 32), ("e%CC%81", "\u00e9"),
]
USERNAMES_REFUSED = [
    ("", "empty"), ("%00", "NUL"), ("%FF", "invalid UTF-8"), ("%E2%80%AEevil", "RTL override"), ("a%E2%80%8Bb", "zero-width"),
    ("x" * 33, "33 characters"), ("%", "broken percent-encoding"), ("%0A", "newline"), ("a" + "%CC%81" * 100, "combining flood"),
]


@pytest.mark.parametrize("raw, expected", USERNAMES, ids=[e for _, e in USERNAMES])
def test_usernames_in_the_query_are_form_decoded(system, raw, expected):
    async def body():
        client = await Client.open(f"ws://127.0.0.1:{system.gateway.port}/ws?username={raw}")
        assert client.connected["username"] == expected
        await client.close()

    run(body())


@pytest.mark.parametrize("raw, what", USERNAMES_REFUSED, ids=[w for _, w in USERNAMES_REFUSED])
def test_invalid_usernames_are_refused_before_the_upgrade(system, raw, what):
    async def body():
        with pytest.raises(Rejected) as rejected:
            await Client.open(f"ws://127.0.0.1:{system.gateway.port}/ws?username={raw}")
        return rejected.value

    rejected = run(body())
    assert rejected.status == 400 and rejected.json()["code"] == "username_invalid", (what, rejected)


# --- frames below JSON: binary, invalid UTF-8, oversized, fragmented -----------------------------------------

def raw_websocket(port: int, username: str = "raw") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /ws?username={username} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    assert data.startswith(b"HTTP/1.1 101"), data
    return sock


def send_frame(sock: socket.socket, opcode: int, payload: bytes, fin: bool = True) -> None:
    mask = os.urandom(4)
    header = bytes([(0x80 if fin else 0) | opcode])
    if len(payload) < 126:
        header += bytes([0x80 | len(payload)])
    elif len(payload) < 65536:
        header += bytes([0x80 | 126]) + struct.pack("!H", len(payload))
    else:
        header += bytes([0x80 | 127]) + struct.pack("!Q", len(payload))
    sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


def close_code(sock: socket.socket) -> int | None:
    """Reads frames until a close frame (its code) or EOF (None)."""
    buffer = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (socket.timeout, ConnectionResetError):
            return None
        if not chunk:
            return None
        buffer += chunk
        while len(buffer) >= 2:
            length = buffer[1] & 0x7F
            offset = 2
            if length == 126:
                length, offset = struct.unpack("!H", buffer[2:4])[0], 4
            elif length == 127:
                length, offset = struct.unpack("!Q", buffer[2:10])[0], 10
            if len(buffer) < offset + length:
                break
            opcode, payload = buffer[0] & 0x0F, buffer[offset:offset + length]
            buffer = buffer[offset + length:]
            if opcode == 0x8:
                return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005


@pytest.mark.parametrize("frames, expected, what", [
    ([(0x1, b'{"type":"message","content":"\xff\xfe"}', True)], 1007, "invalid UTF-8 text frame"),
    ([(0x1, b"\xed\xa0\x80", True)], 1007, "UTF-8-encoded surrogate"),
    ([(0x1, b"x" * 20000, True)], 1009, "oversized frame"),
    ([(0x1, b"x" * 9000, False), (0x0, b"x" * 9000, True)], 1009, "oversized fragmented message"),
    ([(0x0, b"orphan continuation", True)], 1002, "continuation without a start"),
    ([(0x3, b"reserved opcode", True)], 1002, "reserved opcode"),
], ids=["invalid-utf8", "surrogate-utf8", "oversized", "oversized-fragments", "orphan-continuation", "reserved-opcode"])
def test_broken_frames_close_the_socket_with_the_right_code(system, frames, expected, what):
    gw = system.gateway
    before = run(stream_messages(system.nats.url))
    sock = raw_websocket(gw.port)
    try:
        for opcode, payload, fin in frames:
            send_frame(sock, opcode, payload, fin)
        assert close_code(sock) == expected, what
    finally:
        sock.close()
    assert run(stream_messages(system.nats.url)) == before
    assert http_get(gw.base_url + "/health")[0] == 200


def test_fragmented_and_binary_frames(system):
    gw = system.gateway

    async def body():
        client = await Client.connect(gw, "frag")
        await client.send_raw(b"\x00\x01binary")
        reply = await client.wait_for("error")
        assert reply["code"] == "invalid_request" and "binary" in reply["error"]
        await client.ws.send(iter(['{"type":', '"room_list"}']))  # one message in two fragments
        assert (await client.wait_for("room_list"))["type"] == "room_list"
        await client.close()

    run(body())
