"""Several gateways behind nginx (deploy/nginx.conf via scripts/nginx-config): sticky sessions, chat
across gateways, and a gateway killed with SIGKILL whose clients come back through nginx on another
gateway and resume with `since`, with no gap and no duplicate. nginx's public listener does not pass
the gateways' /metrics, however the path is spelled, while the gateway itself serves it.

nginx's ip_hash hashes the first three octets of the client's IPv4 address, so the clients connect from
different loopback addresses (127.0.k.1) to land on different gateways; which gateway a client is on is
read from its `connected` frame (`gateway_id`)."""

from __future__ import annotations

import asyncio
import socket
import uuid

import requests

from chatclient import Sender, unique
from deployment import clients_on_distinct_gateways, deploy_system, open_from  # noqa: F401 (fixture)

# The rate limit is not what these tests are about: let the senders go faster than 10/s.
FAST = {"RATE_LIMIT_PER_SEC": "1000", "RATE_LIMIT_BURST": "1000"}


def create_room_via(nginx) -> str:
    response = requests.post(nginx.base_url + "/api/v1/rooms", json={"name": unique()}, timeout=10)
    assert response.status_code == 201, (response.status_code, response.text)
    return response.json()["id"]


def raw_get(port: int, target: str) -> tuple[int, bytes]:
    """GET with the request target sent byte for byte (an HTTP library would normalise it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: chat.example\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


# /metrics spelled every way nginx maps onto the same path (percent-encoding, merged slashes, dot
# segments, a query, a trailing slash), and a few the gateway itself might take for it.
METRICS_SPELLINGS = ["/metrics", "/metrics/", "//metrics", "/%6Detrics", "/%6detrics", "/metrics?format=text",
                     "/./metrics", "/api/../metrics", "/api/%2E%2E/metrics", "/metrics/.", "/METRICS", "/metrics%2F",
                     "/metrics;x", "/metrics#x"]


def test_public_listener_does_not_serve_metrics(deploy_system):
    system = deploy_system().start(gateways=1)
    nginx = system.add_nginx()
    gateway = system.gateway

    # The gateway serves them on its own port (the compose network's scrape target)...
    status, body = raw_get(gateway.port, "/metrics")
    assert status == 200 and b"# TYPE " in body, (status, body[:200])
    # ...nginx's public listener does not, however the path is spelled.
    for target in METRICS_SPELLINGS:
        status, body = raw_get(nginx.port, target)
        assert status != 200 and b"# TYPE " not in body, (target, status, body[:200])
        if target.split("?")[0] in ("/metrics", "/metrics/", "//metrics", "/%6Detrics", "/%6detrics", "/./metrics",
                                    "/api/../metrics", "/api/%2E%2E/metrics"):
            assert status == 404, (target, status)  # nginx's own refusal, before any proxying
    # What the public needs still passes: the API, the health check, nginx's own liveness.
    assert raw_get(nginx.port, "/api/v1/rooms")[0] == 200
    status, body = raw_get(nginx.port, "/health")
    assert status == 200 and b'"service":"gateway"' in body, body[:200]
    assert raw_get(nginx.port, "/nginx-health") == (200, b"ok\n")


def test_users_on_different_gateways_chat_through_nginx(deploy_system):
    system = deploy_system().start(gateways=3, gateway_env=FAST)
    nginx = system.add_nginx()

    async def body():
        pairs = await clients_on_distinct_gateways(nginx, 3)
        clients = [client for client, _ in pairs]
        assert {c.connected["gateway_id"] for c in clients} == {g.gateway_id for g in system.gateways}

        # Sticky: a client from the same address always reaches the same gateway.
        for client, source in pairs:
            for _ in range(3):
                again = await open_from(nginx, "again", source)
                assert again.connected["gateway_id"] == client.connected["gateway_id"]
                await again.close()

        room = create_room_via(nginx)
        for client in clients:
            await client.join(room)
        acks = []
        for n in range(3):
            for client in clients:
                ack = await client.send_message(f"{client.label} says {n}")
                assert ack["type"] == "ack", ack
                acks.append(ack)
        assert [a["seq"] for a in acks] == list(range(1, 10))
        for client in clients:
            got = await client.wait_messages(room, 9)
            await client.quiet(0.3, "message")
            assert [m["seq"] for m in client.messages(room)] == list(range(1, 10)), client.label
            assert [m["message_id"] for m in got] == [a["message_id"] for a in acks], client.label
            # each message names its sender, whichever gateway the sender was on
            assert {m["username"] for m in got} == {c.label for c in clients}

        history = requests.get(f"{nginx.base_url}/api/v1/rooms/{room}/history", timeout=10).json()
        assert [m["seq"] for m in history["messages"]] == list(range(1, 10))
        for client in clients:
            await client.close()

    asyncio.run(asyncio.wait_for(body(), 60))


def test_killed_gateway_clients_reconnect_through_nginx_and_resume(deploy_system):
    system = deploy_system().start(gateways=3, gateway_env=FAST)
    nginx = system.add_nginx()

    async def body():
        (victim, source), (peer, _) = await clients_on_distinct_gateways(nginx, 2, prefix="resume")
        doomed = next(g for g in system.gateways if g.gateway_id == victim.connected["gateway_id"])
        room = create_room_via(nginx)
        await victim.join(room)
        await peer.join(room)

        state = {"client": victim, "connections": [victim], "killed": False}
        reconnected = asyncio.Event()

        async def kill_when(n: int) -> None:
            if n == 25 and not state["killed"]:
                state["killed"] = True
                await doomed.akill()  # SIGKILL: no close frames, no goodbye

        async def come_back() -> None:
            """Waits for the victim's socket to drop, reconnects through nginx, resumes with `since`."""
            await victim.closed.wait()
            before = [m["seq"] for m in victim.messages(room)]
            assert before == list(range(1, len(before) + 1)), f"before the kill: {before}"
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while True:
                try:
                    back = await open_from(nginx, victim.label, source)
                    break
                except Exception:
                    assert loop.time() < deadline, "no gateway took the victim back within 20 s"
                    await asyncio.sleep(0.1)
            state["new_gateway"] = back.connected["gateway_id"]
            state["since"] = before[-1] if before else 0
            await back.join(room, since=state["since"])
            state["client"] = back
            state["connections"].append(back)
            reconnected.set()

        async def victim_sends(count: int) -> list[dict]:
            """Sends with fixed client_msg_ids; a send cut off by the kill is repeated on the new connection."""
            acks = []
            for n in range(count):
                cmid = f"victim-{n}-{uuid.uuid4().hex[:8]}"
                while True:
                    try:
                        reply = await state["client"].send_message(f"victim {n}", client_msg_id=cmid, timeout=4)
                    except Exception:  # the connection died under the send
                        await asyncio.wait_for(reconnected.wait(), 30)
                        continue
                    if reply["type"] == "ack":
                        break
                    assert reply.get("code") in ("unavailable", "internal"), reply
                    await asyncio.sleep(0.1)
                acks.append(reply)
                await asyncio.sleep(0.05)
            return acks

        watcher = asyncio.create_task(come_back())
        peer_sender = Sender(peer, [room], 60, pause=0.03, on_sent=kill_when)
        peer_sent, victim_acks = await asyncio.gather(peer_sender.run(), victim_sends(30))
        await asyncio.wait_for(watcher, 30)

        assert state["killed"] and not doomed.running
        assert state["new_gateway"] != doomed.gateway_id
        assert state["new_gateway"] in {g.gateway_id for g in system.gateways if g.running}
        # the kill came mid-stream: messages before it on the old gateway, the rest on the new one
        assert 0 < state["since"] < len(peer_sent) + len(victim_acks)
        assert victim.messages(room) and state["client"].messages(room)

        total = len(peer_sent) + len(victim_acks)
        all_seqs = sorted([s.seq for s in peer_sent] + [a["seq"] for a in victim_acks])
        assert all_seqs == list(range(1, total + 1)), "a send was stored twice or a seq is missing"

        # The victim, over both connections: every message exactly once, in order, no gap at the switch.
        back = state["client"]
        await back.wait_messages(room, total - state["since"], timeout=20)
        await back.quiet(0.5, "message")
        seqs = [m["seq"] for c in state["connections"] for m in c.messages(room)]
        assert seqs == list(range(1, total + 1)), f"since={state['since']}: {seqs}"

        # The peer never left: it saw the same stream, with the ids the senders were acknowledged.
        ids = {s.seq: s.message_id for s in peer_sent} | {a["seq"]: a["message_id"] for a in victim_acks}
        await peer.wait_messages(room, total, timeout=20)
        await peer.quiet(0.3, "message")
        assert [m["seq"] for m in peer.messages(room)] == list(range(1, total + 1))
        assert [m["message_id"] for m in peer.messages(room)] == [ids[n] for n in range(1, total + 1)]
        victim_ids = [m["message_id"] for c in state["connections"] for m in c.messages(room)]
        assert victim_ids == [ids[n] for n in range(1, total + 1)]

        history = requests.get(f"{nginx.base_url}/api/v1/rooms/{room}/history", params={"limit": 200},
                               timeout=10).json()
        assert [m["seq"] for m in history["messages"]] == list(range(1, total + 1))
        for client in (peer, back):
            await client.close()

    asyncio.run(asyncio.wait_for(body(), 120))
