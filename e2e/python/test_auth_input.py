"""Authentication and input hardening (issue 21) against the real system: the token verifier's rules
(`alg` pinned, `crit`, `typ`, `nbf`/`iat` leeway, `iss`/`aud`, maximum lifetime, `sub` and the stable user
id derived from it), auth configuration that cannot be half-on, token expiry on open sockets (4001), the
REST write guard (JSON content type, Origin, token), static files (control bytes, symlink escapes),
malformed HTTP answered 400 and closed at once, duplicate JSON keys, a leading BOM, and `POST /ws`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from websockets.asyncio.client import connect

from chatclient import run, Client, Rejected, create_room, history, unique
from system import Gateway, System, service_binary

SECRET = "auth-input-secret-that-is-long-enough-for-hs256"
ISSUER = "https://issuer.example"
AUDIENCE = "nats-chat"


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    system = System(tmp_path_factory.mktemp("auth-input-system"))
    try:
        system.start()
        yield system
    finally:
        system.stop()


@pytest.fixture(scope="module")
def token_gateway(gateway_with) -> Gateway:
    return gateway_with(AUTH_JWT_SECRET=SECRET, AUTH_JWT_ISSUER=ISSUER, AUTH_JWT_AUDIENCE=AUDIENCE,
                        AUTH_JWT_LEEWAY_SECONDS="30", AUTH_JWT_MAX_LIFETIME_SECONDS="3600")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(header: dict[str, Any] | str, claims: dict[str, Any] | str, secret: str = SECRET) -> str:
    """A compact JWT with an HMAC-SHA256 signature over whatever header and claims are given (raw JSON text allowed)."""
    head = b64((header if isinstance(header, str) else json.dumps(header)).encode())
    body = b64((claims if isinstance(claims, str) else json.dumps(claims)).encode())
    signature = b64(hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest())
    return f"{head}.{body}.{signature}"


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"sub": "user-" + uuid.uuid4().hex[:8], "username": "tok", "iss": ISSUER, "aud": AUDIENCE,
            "iat": now, "exp": now + 300}
    base.update(overrides)
    return {key: value for key, value in base.items() if value is not None}


HS256 = {"alg": "HS256", "typ": "JWT"}


def derived_user_id(sub: str) -> str:
    """docs/security.md: a non-UUID `sub` maps to SHA-256(namespace ‖ sub), first 16 bytes, RFC 9562 v8 layout."""
    namespace = b"nats-chat" + bytes([0x8d, 0x4b, 0x7e, 0x9a, 0x1f, 0x53, 0x27])
    raw = bytearray(hashlib.sha256(namespace + sub.encode()).digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x80
    raw[8] = (raw[8] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(raw)))


# --- the token verifier ------------------------------------------------------------------------------------

def test_valid_tokens_and_stable_user_ids(token_gateway):
    gw = token_gateway
    now = int(time.time())
    uuid_sub = str(uuid.uuid4()).upper()

    async def body():
        # a non-UUID sub: the same derived id on every connection, whatever the display name
        first = await Client.open(gw.ws_url(token=sign(HS256, claims(sub="alice@example", username="Alice"))))
        second = await Client.open(gw.ws_url(token=sign(HS256, claims(sub="alice@example", username="Other name"))))
        assert first.user_id == second.user_id == derived_user_id("alice@example"), (first.connected, second.connected)
        assert first.user_id[14] == "8", first.user_id  # version 8
        other = await Client.open(gw.ws_url(token=sign(HS256, claims(sub="bob@example", username="Alice"))))
        assert other.user_id != first.user_id and other.connected["username"] == "Alice"
        # a UUID sub is the user id (lowercased); nbf within the leeway, an audience array, no typ
        exact = await Client.open(gw.ws_url(token=sign({"alg": "HS256"}, claims(sub=uuid_sub, aud=["x", AUDIENCE],
                                                                                  nbf=now + 10, username=None, name="Exact"))))
        assert exact.user_id == uuid_sub.lower(), exact.connected
        assert exact.connected["username"] == "Exact", exact.connected  # no username: name
        for client in (first, second, other, exact):
            await client.close()

    run(body())


def rejected_tokens() -> list[tuple[str, str, str]]:
    now = int(time.time())
    rs256 = {"alg": "RS256", "typ": "JWT"}
    return [
        ("RS256 header, HS256 signature", sign(rs256, claims()), "alg RS256"),
        ("alg none", sign({"alg": "none"}, claims()), "alg none"),
        ("lowercase alg", sign({"alg": "hs256"}, claims()), "alg hs256"),
        ("no alg", sign({"typ": "JWT"}, claims()), "no alg"),
        ("crit header", sign({"alg": "HS256", "crit": ["exp"]}, claims()), "crit"),
        ("foreign typ", sign({"alg": "HS256", "typ": "at+jwt"}, claims()), "typ"),
        ("future nbf", sign(HS256, claims(nbf=now + 600)), "nbf"),
        ("future iat", sign(HS256, claims(iat=now + 600, exp=now + 900)), "iat"),
        ("foreign iss", sign(HS256, claims(iss="https://evil.example")), "iss"),
        ("no iss", sign(HS256, claims(iss=None)), "iss"),
        ("foreign aud", sign(HS256, claims(aud="other")), "aud"),
        ("aud array without ours", sign(HS256, claims(aud=["a", "b"])), "aud"),
        ("exp 1e308", sign(HS256, '{"sub":"s","iss":"%s","aud":"%s","exp":1e308}' % (ISSUER, AUDIENCE)), "lifetime"),
        ("exp beyond the max lifetime after iat", sign(HS256, claims(iat=now, exp=now + 3601)), "lifetime"),
        ("exp beyond the max lifetime, no iat", sign(HS256, claims(iat=None, exp=now + 4000)), "lifetime"),
        ("expired", sign(HS256, claims(exp=now - 5)), "expired"),
        ("no exp", sign(HS256, claims(exp=None)), "exp"),
        ("string exp", sign(HS256, claims(exp=str(now + 60))), "exp"),
        ("no sub", sign(HS256, claims(sub=None)), "sub"),
        ("empty sub", sign(HS256, claims(sub="")), "sub"),
        ("duplicate sub claim", sign(HS256, '{"sub":"a","sub":"b","iss":"%s","aud":"%s","exp":%d}'
                                     % (ISSUER, AUDIENCE, now + 60)), "duplicate"),
        ("wrong secret", sign(HS256, claims(), secret="another-secret-that-is-long-enough!!"), "signature"),
        ("two parts", ".".join(sign(HS256, claims()).split(".")[:2]), "not a JWT"),
        ("padded signature", sign(HS256, claims()) + "=", "signature"),
    ]


@pytest.mark.parametrize("what,token,reason", rejected_tokens(), ids=[case[0] for case in rejected_tokens()])
def test_rejected_tokens_say_which_check_failed(token_gateway, what, token, reason):
    async def body():
        with pytest.raises(Rejected) as rejected:
            await Client.open(token_gateway.ws_url(token=token))
        return rejected.value

    refusal = run(body())
    assert refusal.status == 401, (what, refusal)
    error = refusal.json()
    assert error["code"] == "unauthorized", (what, error)
    assert reason in error["error"], (what, error)
    assert token not in error["error"] and token.split(".")[-1] not in error["error"], (what, error)


def start_failure(system: System, env: dict[str, str]) -> tuple[int, str]:
    """Runs the gateway binary with `env` and returns its exit code and output (it must exit by itself)."""
    full = {**os.environ, "NATS_URL": system.nats.url, "PORT": "0", "HOST": "127.0.0.1", **env}
    result = subprocess.run([str(service_binary("gateway"))], env=full, capture_output=True, timeout=30,
                            stdin=subprocess.DEVNULL)
    return result.returncode, (result.stdout + result.stderr).decode(errors="replace")


@pytest.mark.parametrize("env,message", [
    ({"AUTH_JWT_SECRET": ""}, "AUTH_JWT_SECRET is set but empty"),
    ({"AUTH_JWT_SECRET": "x"}, "at least 32"),
    ({"AUTH_JWT_SECRET": "a" * 31}, "at least 32"),
    ({"AUTH_JWT_ISSUER": ISSUER}, "none of AUTH_JWT_SECRET, AUTH_JWKS_FILE and AUTH_JWKS_URL is"),
    ({"AUTH_JWT_SECRET": SECRET, "AUTH_JWT_LEEWAY_SECONDS": "soon"}, "AUTH_JWT_LEEWAY_SECONDS"),
    ({"AUTH_JWT_SECRET": SECRET, "AUTH_JWT_MAX_LIFETIME_SECONDS": "0"}, "AUTH_JWT_MAX_LIFETIME_SECONDS"),
], ids=["empty secret", "1-byte secret", "31-byte secret", "issuer without secret", "bad leeway", "zero lifetime"])
def test_half_on_auth_configuration_stops_the_gateway(system, env, message):
    code, output = start_failure(system, env)
    assert code != 0, output
    assert message in output, output


def test_auth_mode_is_logged_at_start(system, token_gateway):
    username_log = system.gateway.log.read_text(errors="replace")
    assert "auth mode: username (no AUTH_JWT_SECRET or AUTH_JWKS_*)" in username_log, username_log[-2000:]
    token_log = token_gateway.log.read_text(errors="replace")
    assert f"auth mode: token (HS256 secret, issuer '{ISSUER}', audience '{AUDIENCE}'" in token_log, token_log[-2000:]


def test_an_open_socket_is_closed_with_4001_when_its_token_expires(token_gateway, system):
    room = create_room(system.gateway)["id"]

    async def body():
        expiry = time.time() + 3
        lasting = await Client.open(token_gateway.ws_url(token=sign(HS256, claims())))
        client = await Client.open(token_gateway.ws_url(token=sign(HS256, claims(exp=int(expiry) + 1))))
        await client.join(room)
        reply = await client.send_message("before expiry")
        assert reply["type"] == "ack", reply
        await client.wait_closed(timeout=10)
        closed_at = time.time()
        assert client.ws.close_code == 4001 and client.ws.close_reason == "token expired", \
            (client.ws.close_code, client.ws.close_reason)
        assert closed_at >= int(expiry) + 1 - 0.2, (closed_at, expiry)
        assert lasting.ws.close_code is None  # a long-lived token opened before is not affected
        reply = await lasting.request({"type": "room_list"}, "room_list")
        assert reply["type"] == "room_list", reply
        await lasting.close()

    run(body())
    assert "before expiry" in [m["content"] for m in history(system.gateway, room)["messages"]]


# --- REST writes -------------------------------------------------------------------------------------------

def room_count(gw: Gateway) -> int:
    return requests.get(gw.base_url + "/api/v1/rooms", timeout=5).json()["total"]


def post_room(gw: Gateway, body: bytes | None = None, **headers: str) -> requests.Response:
    data = body if body is not None else json.dumps({"name": unique("guard")}).encode()
    return requests.post(gw.base_url + "/api/v1/rooms", data=data, headers=headers, timeout=5)


@pytest.mark.parametrize("headers,status,code", [
    ({"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
    ({"Content-Type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"),
    ({"Content-Type": "application/jsonx"}, 415, "unsupported_media_type"),
    ({}, 415, "unsupported_media_type"),
    ({"Content-Type": "application/json", "Origin": "https://evil.example"}, 403, "forbidden"),
    ({"Content-Type": "text/plain", "Origin": "https://evil.example"}, 403, "forbidden"),
])
def test_rest_writes_refused(gateway_with, headers, status, code):
    gw = gateway_with(ALLOWED_ORIGINS="https://chat.example")
    before = room_count(gw)
    response = post_room(gw, **headers)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code, response.text
    assert room_count(gw) == before


@pytest.mark.parametrize("headers", [
    {"Content-Type": "application/json"},
    {"Content-Type": "Application/JSON; charset=utf-8"},
    {"Content-Type": "application/json", "Origin": "https://chat.example"},
])
def test_rest_writes_accepted(gateway_with, headers):
    gw = gateway_with(ALLOWED_ORIGINS="https://chat.example")
    response = post_room(gw, **headers)
    assert response.status_code == 201, response.text


def test_rest_writes_need_a_token_in_token_mode(token_gateway):
    gw = token_gateway
    before = room_count(gw)  # reads stay open
    for headers, reason in [({}, "a token is required"),
                            ({"Authorization": "Bearer not.a.jwt"}, "invalid token"),
                            ({"Authorization": "Bearer " + sign(HS256, claims(exp=int(time.time()) - 1))}, "expired")]:
        response = post_room(gw, **{"Content-Type": "application/json", **headers})
        assert response.status_code == 401, (headers, response.text)
        assert response.json()["code"] == "unauthorized" and reason in response.json()["error"], response.text
        assert response.headers.get("WWW-Authenticate") == "Bearer"
    assert room_count(gw) == before
    good = post_room(gw, **{"Content-Type": "application/json", "Authorization": "Bearer " + sign(HS256, claims())})
    assert good.status_code == 201, good.text
    assert room_count(gw) == before + 1


# --- JSON: duplicate keys, BOM -----------------------------------------------------------------------------

def test_duplicate_json_keys_are_refused_and_a_bom_is_tolerated(system):
    gw = system.gateway
    room = create_room(gw)["id"]
    before = room_count(gw)
    name = unique("dup")
    duplicate = post_room(gw, f'{{"name":"{name}","name":"{name}-2"}}'.encode(), **{"Content-Type": "application/json"})
    assert duplicate.status_code == 400 and duplicate.json()["code"] == "invalid_request", duplicate.text
    assert "duplicate field 'name'" in duplicate.json()["error"], duplicate.text
    assert room_count(gw) == before
    bom = post_room(gw, b"\xef\xbb\xbf" + json.dumps({"name": name}).encode(), **{"Content-Type": "application/json"})
    assert bom.status_code == 201 and bom.json()["name"] == name, bom.text

    async def body():
        client = await Client.joined(gw, "dups", room)
        await client.send_raw(json.dumps({"type": "message", "content": "x"})[:-1] + ',"content":"y"}')
        error = await client.wait_for("error")
        assert error["code"] == "invalid_request" and "duplicate field 'content'" in error["error"], error
        await client.send_raw("\ufeff" + json.dumps({"type": "message", "content": "with a BOM"}))
        message = await client.wait_for("message")
        assert message["content"] == "with a BOM", message
        await client.close()

    run(body())
    contents = [m["content"] for m in history(gw, room)["messages"]]
    assert contents == ["with a BOM"], contents


# --- raw HTTP ----------------------------------------------------------------------------------------------

def raw_exchange(port: int, request: bytes, deadline: float = 1.0) -> tuple[bytes, float, bool]:
    """Sends `request`, reads until the server closes or `deadline` passes: (answer, seconds, closed)."""
    start = time.monotonic()
    sock = socket.create_connection(("127.0.0.1", port), timeout=deadline)
    answer = b""
    closed = False
    try:
        sock.sendall(request)
        while (left := deadline - (time.monotonic() - start)) > 0:
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            answer += chunk
    finally:
        sock.close()
    return answer, time.monotonic() - start, closed


MALFORMED = [
    (b"POST /api/v1/rooms HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 4\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "Content-Length with Transfer-Encoding"),
    (b"POST /api/v1/rooms HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
     b"Content-Length: 2\r\n\r\n{}", "duplicate Content-Length"),
    (b"POST /api/v1/rooms HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 5\r\n\r\n{}", "two different Content-Lengths"),
    (b"GET /health HTTP/1.1\nHost: x\n\n", "bare LF"),
    (b"GET /ws HTTP/1.1\nHost: x\n\n", "bare LF on /ws"),
    (b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % n for n in range(1200)) + b"\r\n", "1,200 headers"),
]


@pytest.mark.parametrize("request_bytes,what", MALFORMED, ids=[case[1] for case in MALFORMED])
def test_malformed_http_is_answered_400_and_closed_at_once(system, request_bytes, what):
    gw = system.gateway
    answer, seconds, closed = raw_exchange(gw.port, request_bytes)
    assert answer.startswith(b"HTTP/1.1 400"), (what, answer[:200])
    assert closed and seconds < 1.0, (what, seconds, closed)
    assert requests.get(gw.base_url + "/health", timeout=5).status_code == 200


def test_post_ws_with_upgrade_headers_is_405(system):
    gw = system.gateway
    key = base64.b64encode(os.urandom(16)).decode()
    upgrade = (f"POST /ws?username=x HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n").encode()
    answer, _, _ = raw_exchange(gw.port, upgrade)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 405"), answer[:300]
    assert b"\r\nallow: get" in head.lower(), head
    assert json.loads(body)["code"] == "invalid_request", body
    # GET still upgrades
    answer, _, _ = raw_exchange(gw.port, upgrade.replace(b"POST", b"GET", 1).replace(b"Content-Length: 0\r\n", b""), deadline=0.5)
    assert answer.startswith(b"HTTP/1.1 101"), answer[:200]


# --- static files ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def web_root(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("web-root")
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("outside WEB_ROOT")
    (outside / "index.html").write_text("outside WEB_ROOT")
    root = base / "root"
    root.mkdir()
    (root / "index.html").write_text("<!doctype html><title>ui</title>")
    (root / "app.js").write_text("console.log('app');")
    (root / "sub").mkdir()
    (root / "sub" / "inner.txt").write_text("inner")
    (root / "leak.txt").symlink_to(outside / "secret.txt")
    (root / "leakdir").symlink_to(outside, target_is_directory=True)
    (root / "inside-link.txt").symlink_to(root / "sub" / "inner.txt")
    return root


@pytest.mark.parametrize("path,status", [
    ("/app.js%00.html", 400),
    ("/app.js%00", 400),
    ("/%01app.js", 400),
    ("/app.js%0a", 400),
    ("/sub/inner.txt%7f", 400),
    ("/leak.txt", 404),
    ("/leakdir/secret.txt", 404),
    ("/leakdir/", 404),
    ("/app.js", 200),
    ("/", 200),
    ("/sub/inner.txt", 200),
    ("/inside-link.txt", 200),
])
def test_static_files(gateway_with, web_root, path, status):
    gw = gateway_with(WEB_ROOT=str(web_root))
    response = requests.get(gw.base_url + path, timeout=5, allow_redirects=False)
    assert response.status_code == status, (path, response.status_code, response.text[:200])
    assert b"outside WEB_ROOT" not in response.content
    if status != 200:
        assert response.headers["Content-Type"].startswith("application/json"), response.headers


def test_room_creation_is_limited_per_verified_user_in_token_mode(gateway_with):
    """ROOM_CREATE_PER_MIN counts per address and, with the token WriteGuard verified, per user: the same
    user from a second address (X-Forwarded-For through the trusted loopback proxy) is limited too."""
    gw = gateway_with(AUTH_JWT_SECRET=SECRET, ROOM_CREATE_PER_MIN="2")
    alice = "Bearer " + sign(HS256, claims(sub="limit-alice", iss=None, aud=None))
    bob = "Bearer " + sign(HS256, claims(sub="limit-bob", iss=None, aud=None))

    def create(token: str, address: str) -> requests.Response:
        return post_room(gw, **{"Content-Type": "application/json", "Authorization": token, "X-Forwarded-For": address})

    assert [create(alice, "10.9.0.1").status_code for _ in range(2)] == [201, 201]
    limited = create(alice, "10.9.0.2")
    assert limited.status_code == 429 and limited.json()["code"] == "rate_limited", limited.text
    assert create(bob, "10.9.0.2").status_code == 201
