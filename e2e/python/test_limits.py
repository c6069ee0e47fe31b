"""Resource limits (issue 9): MAX_CONNECTIONS, MAX_CONNECTIONS_PER_IP with TRUSTED_PROXIES, and the
chat-service's CHAT_MAX_ROOMS. Small limits through the environment; each refusal must be the documented
status and JSON body, counted in a metric, and the gateway must keep serving (slots come back on close)."""

from __future__ import annotations

import asyncio

import requests

from chatclient import run, Client, Rejected, unique
from system import http_get



async def refused(url: str, **kwargs) -> Rejected:
    try:
        client = await Client.open(url, **kwargs)
    except Rejected as rejection:
        return rejection
    await client.close()
    raise AssertionError(f"{url} was not refused")


def test_connection_limits_and_trusted_proxies(make_system):
    system = make_system(gateway_env={"MAX_CONNECTIONS": "4", "MAX_CONNECTIONS_PER_IP": "2", "TRUSTED_PROXIES": "127.0.0.1"},
                         chat_env={"CHAT_MAX_ROOMS": "3"})
    gw = system.gateway

    async def body():
        # per IP: the third connection from 127.0.0.1 (no proxy headers) is refused with 429
        a = await Client.connect(gw, "a")
        b = await Client.connect(gw, "b")
        rejection = await refused(gw.ws_url("c"))
        assert rejection.status == 429 and rejection.json()["code"] == "too_many_connections", rejection
        # a trusted proxy (loopback here) names the client in X-Forwarded-For: other clients still get in
        c = await Client.open(gw.ws_url("c"), headers={"X-Forwarded-For": "203.0.113.7"})
        d = await Client.open(gw.ws_url("d"), headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.8", "X-Real-IP": "1.2.3.4"})
        # the whole gateway: the fifth connection gets 503 server_full
        rejection = await refused(gw.ws_url("e"), headers={"X-Forwarded-For": "192.0.2.99"})
        assert rejection.status == 503 and rejection.json()["code"] == "server_full", rejection
        # a closed socket gives its slot back
        await a.close()
        for _ in range(100):
            try:
                e = await Client.open(gw.ws_url("e"), headers={"X-Forwarded-For": "192.0.2.99"})
                break
            except Rejected:
                await asyncio.sleep(0.05)
        else:
            raise AssertionError("the slot of a closed connection was not given back")
        assert (await e.request({"type": "room_list"}, "room_list"))["type"] == "room_list"
        for client in (b, c, d, e):
            await client.close()

    run(body())
    metrics = gw.metrics()
    assert 'gateway_connections_refused_total{reason="max_connections"} 1' in metrics, metrics
    assert 'gateway_connections_refused_total{reason="max_connections_per_ip"} 1' in metrics
    assert http_get(gw.base_url + "/health")[0] == 200

    # CHAT_MAX_ROOMS=3: the fourth room is refused with 409 room_limit_reached; existing names still 409 room_exists
    names = [unique("limit") for _ in range(3)]
    for name in names:
        assert requests.post(gw.base_url + "/api/v1/rooms", json={"name": name}, timeout=5).status_code == 201
    response = requests.post(gw.base_url + "/api/v1/rooms", json={"name": unique("limit")}, timeout=5)
    assert response.status_code == 409 and response.json()["code"] == "room_limit_reached", response.text
    response = requests.post(gw.base_url + "/api/v1/rooms", json={"name": names[0]}, timeout=5)
    assert response.status_code == 409 and response.json()["code"] == "room_exists", response.text
    assert len(requests.get(gw.base_url + "/api/v1/rooms", timeout=5).json()["rooms"]) == 3


def test_untrusted_peers_cannot_choose_their_address(make_system):
    # Loopback is not a trusted proxy here: X-Forwarded-For is ignored and the peer address counts.
    system = make_system(gateway_env={"MAX_CONNECTIONS_PER_IP": "1", "TRUSTED_PROXIES": "10.0.0.0/8"})
    gw = system.gateway

    async def body():
        first = await Client.open(gw.ws_url("a"), headers={"X-Forwarded-For": "203.0.113.1"})
        rejection = await refused(gw.ws_url("b"), headers={"X-Forwarded-For": "203.0.113.2"})
        assert rejection.status == 429 and rejection.json()["code"] == "too_many_connections", rejection
        await first.close()

    run(body())


def test_slow_silent_and_idle_http_clients_are_closed(make_system):
    """A connection must finish its first request head within REQUEST_HEAD_TIMEOUT_MS (no limit counts
    it before that), and an idle keep-alive HTTP connection is closed after HTTP_IDLE_TIMEOUT_MS."""
    import socket
    import time
    system = make_system(gateway_env={"REQUEST_HEAD_TIMEOUT_MS": "600", "HTTP_IDLE_TIMEOUT_MS": "800", "REQUEST_BODY_TIMEOUT_MS": "700"})
    gw = system.gateway

    def closed_within(sock: socket.socket, seconds: float) -> bytes:
        """Reads until the gateway closes the socket; fails if it is still open after `seconds`."""
        sock.settimeout(0.2)
        deadline = time.monotonic() + seconds
        received = b""
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(4096)
            except socket.timeout:
                continue
            if not chunk:
                return received
            received += chunk
        raise AssertionError(f"still open after {seconds} s; received {received[:200]!r}")

    def connect() -> socket.socket:
        return socket.create_connection(("127.0.0.1", gw.port), timeout=5)

    def fully_closed_within(sock: socket.socket, seconds: float) -> None:
        """Keeps sending a byte every 0.25 s (the pace of a trickling client): a socket the gateway
        closed answers with a reset, one it only half-closed keeps taking bytes."""
        sock.settimeout(0.25)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                sock.sendall(b" ")
                sock.recv(4096)  # b"" after the gateway's FIN; raises once reset
            except socket.timeout:
                continue
            except OSError:
                return
        raise AssertionError(f"the gateway still held the socket after {seconds} s")

    started = time.monotonic()
    partial_ws = connect()
    partial_ws.sendall(b"GET /ws?username=slow HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
    partial_rest = connect()
    partial_rest.sendall(b"GET /api/v1/rooms HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    silent = connect()
    for sock in (partial_ws, partial_rest, silent):
        assert closed_within(sock, 10) == b""
        sock.close()
    assert time.monotonic() - started >= 0.5, "closed before the head timeout"

    # A head that arrives in pieces within the timeout is served, and the keep-alive connection is
    # then closed once idle.
    keep_alive = connect()
    keep_alive.sendall(b"GET /health HTTP/1.1\r\n")
    time.sleep(0.2)  # the client's pace, not synchronisation: the second half follows later
    keep_alive.sendall(b"Host: x\r\n\r\n")
    response = closed_within(keep_alive, 10)
    assert response.startswith(b"HTTP/1.1 200"), response[:200]
    keep_alive.close()

    # A REST body that trickles in (each byte resets the idle timeout) gets 408 once
    # REQUEST_BODY_TIMEOUT_MS has passed, and the connection is closed.
    trickle = connect()
    trickle.sendall(b"POST /api/v1/rooms HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 300\r\n\r\n{")
    trickle.settimeout(0.25)  # the client's pace: one byte per 0.25 s, never idle for 0.8 s
    received, closed, started = b"", False, time.monotonic()
    while time.monotonic() - started < 10:
        try:
            trickle.sendall(b" ")
        except OSError:
            pass  # closed by the gateway: what is left to read is the answer
        try:
            chunk = trickle.recv(4096)
        except socket.timeout:
            continue
        except ConnectionResetError:
            closed = True
            break
        if not chunk:
            closed = True
            break
        received += chunk
    assert received.startswith(b"HTTP/1.1 408"), received[:300]
    assert b'"code":"invalid_request"' in received and b"request body not complete within 700 ms" in received, received
    assert b"connection: close" in received.lower(), received[:300]
    assert closed, "the gateway did not end its side after the 408"
    assert 0.6 <= time.monotonic() - started < 5
    # ... and closes the socket itself, not only its sending side.
    fully_closed_within(trickle, 5)
    trickle.close()

    # A body trickled to a route that does not read it (405, answered at once; Hummingbird then
    # drains the body) loses its connection at the deadline (the body timeout plus a second).
    drained = connect()
    drained.sendall(b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 300\r\n\r\n{")
    started = time.monotonic()
    fully_closed_within(drained, 6)
    assert time.monotonic() - started >= 1.5, "closed before the body deadline"
    drained.close()

    # A body that arrives in pieces within the timeout is served.
    name = unique("pieces").encode()
    body = b'{"name":"' + name + b'"}'
    pieces = connect()
    pieces.sendall(b"POST /api/v1/rooms HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:5])
    time.sleep(0.2)  # the client's pace, not synchronisation: the rest follows later
    pieces.sendall(body[5:])
    response = closed_within(pieces, 10)
    assert response.startswith(b"HTTP/1.1 201"), response[:300]
    assert name in response
    pieces.close()
    metrics = gw.metrics()
    assert "gateway_request_body_timeouts_total 1" in metrics
    # The drained body's connection (the 408 one was closed by its `Connection: close` already).
    closes = [float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("gateway_request_body_deadline_closes_total ")]
    assert closes and closes[0] >= 1, closes

    # WebSockets are not affected once upgraded.
    async def body():
        client = await Client.connect(gw, "patient")
        await asyncio.sleep(1.5)  # longer than both timeouts: the upgraded socket must stay open
        assert (await client.request({"type": "room_list"}, "room_list"))["type"] == "room_list"
        await client.close()
    run(body())
    assert "gateway_request_head_timeouts_total 3" in gw.metrics()


def test_per_address_limits_are_on_by_default(make_system):
    # "" restores the built-in defaults the test launcher raises: 256 sockets and 20 room creations a
    # minute per client address.
    system = make_system(gateway_env={"MAX_CONNECTIONS_PER_IP": "", "ROOM_CREATE_PER_MIN": ""})
    gw = system.gateway

    async def body():
        clients = await asyncio.gather(*(Client.connect(gw, f"u{i}") for i in range(256)))
        rejection = await refused(gw.ws_url("one-too-many"))
        assert rejection.status == 429 and rejection.json()["code"] == "too_many_connections", rejection
        await asyncio.gather(*(client.close() for client in clients))

    run(body(), timeout=180)
    created = [requests.post(gw.base_url + "/api/v1/rooms", json={"name": unique("burst")}, timeout=5) for _ in range(21)]
    assert [r.status_code for r in created[:20]] == [201] * 20, [r.text for r in created[:20]]
    assert created[20].status_code == 429 and created[20].json()["code"] == "rate_limited", created[20].text
    assert 1 <= int(created[20].headers["Retry-After"]) <= 60, created[20].headers
    # Another address (through a trusted proxy: loopback by default) still creates rooms.
    other = requests.post(gw.base_url + "/api/v1/rooms", json={"name": unique("other")},
                          headers={"X-Forwarded-For": "203.0.113.9"}, timeout=5)
    assert other.status_code == 201, other.text


async def send_all(clients: list[Client], room: str, per_client: int) -> tuple[int, int, float]:
    """Every client sends `per_client` messages at once; returns (acknowledged, rate_limited, seconds)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    replies = await asyncio.gather(*(client.send_message(f"{client.label}-{i}", room)
                                     for client in clients for i in range(per_client)))
    elapsed = loop.time() - start
    acked = sum(1 for reply in replies if reply["type"] == "ack")
    limited = sum(1 for reply in replies if reply.get("code") == "rate_limited")
    assert acked + limited == len(replies), [r for r in replies if r["type"] != "ack" and r.get("code") != "rate_limited"]
    assert all(is_retry(reply) for reply in replies if reply.get("code") == "rate_limited")
    return acked, limited, elapsed


def is_retry(reply: dict) -> bool:
    return isinstance(reply.get("retry_after_ms"), int) and reply["retry_after_ms"] >= 1


def test_send_limits_hold_across_a_users_and_an_addresss_connections(make_system):
    # Per connection generous; per user 2/s (burst 4) and per address 5/s (burst 10).
    system = make_system(gateway_env={"RATE_LIMIT_PER_SEC": "1000", "RATE_LIMIT_BURST": "1000",
                                      "RATE_LIMIT_PER_USER_PER_SEC": "2", "RATE_LIMIT_PER_USER_BURST": "4",
                                      "RATE_LIMIT_PER_IP_PER_SEC": "5", "RATE_LIMIT_PER_IP_BURST": "10"})
    gw = system.gateway
    room = requests.post(gw.base_url + "/api/v1/rooms", json={"name": unique("quota")}, timeout=5).json()["id"]

    async def body():
        # One user on five sockets: the user's budget, not five times it.
        same = [await Client.joined(gw, "same-user", room) for _ in range(5)]
        acked, limited, elapsed = await send_all(same, room, 4)
        assert acked <= 4 + 2 * elapsed + 1 and limited >= 20 - (4 + 2 * elapsed + 1), (acked, limited, elapsed)
        for client in same:
            await client.close()
        # Thirty users from one address (behind one trusted proxy address): the address's budget.
        many = [await Client.open(gw.ws_url(f"user{i}"), headers={"X-Forwarded-For": "198.51.100.20"}) for i in range(30)]
        for client in many:
            await client.join(room)
        acked, limited, elapsed = await send_all(many, room, 2)
        assert acked <= 10 + 5 * elapsed + 1 and limited >= 60 - (10 + 5 * elapsed + 1), (acked, limited, elapsed)
        # Another address is not held back by that one.
        other = await Client.open(gw.ws_url("elsewhere"), headers={"X-Forwarded-For": "203.0.113.30"})
        await other.join(room)
        assert (await other.send_message("from elsewhere", room))["type"] == "ack"
        for client in [*many, other]:
            await client.close()

    run(body())
