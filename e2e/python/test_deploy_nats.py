"""The system on deploy/'s NATS configurations, unchanged (a wrapper config only moves ports and store):

- per-service users with subject permissions (deploy/auth.conf): everything works — chat, typing,
  members, history, broadcaster failover, presence expiry — without one refused subject (each service
  under its own inbox prefix), and the gateway's credentials are refused publishing events, forging
  deliveries, reading KV and reading the chat-service's replies (test_permissions.py tries every
  forbidden subject of every user);
- TLS (deploy/nats-server-tls.conf + deploy/make-certs.sh): the services connect with tls:// and
  NATS_CA; plain and untrusting clients are refused;
- a 3-node cluster (deploy/nats-cluster.conf) with CHAT_REPLICAS=3: a node killed with SIGKILL during
  traffic loses nothing that was acknowledged, and the services reconnect by themselves; a route
  without the route password is refused.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time

import nats
import pytest
import requests

from chatclient import Client, Sender, unique
from deployment import (DEPLOY, ROUTE_PASSWORD, ConfiguredNats, credentials, deploy_system,  # noqa: F401 (fixture)
                        password, wait_until)
from system import Process, free_port, http_get, nats_server_binary

FAST = {"RATE_LIMIT_PER_SEC": "1000", "RATE_LIMIT_BURST": "1000"}
BUCKETS = ["chat_rooms", "chat_members", "chat_idempotency", "chat_gateways", "chat_leases"]


def create_room(gateway) -> str:
    response = requests.post(gateway.base_url + "/api/v1/rooms", json={"name": unique()}, timeout=10)
    assert response.status_code == 201, (response.status_code, response.text)
    return response.json()["id"]


class Errors:
    """Collects a nats-py connection's asynchronous errors (permission violations arrive that way)."""

    def __init__(self):
        self.items: list[str] = []

    async def add(self, error: Exception) -> None:
        self.items.append(str(error).lower())

    async def wait_for(self, text: str, timeout: float = 5.0) -> None:
        async def seen():
            return any(text.lower() in item for item in self.items)
        await wait_until(seen, timeout, f"error '{text}' (got {self.items})", 0.02)


# --- permissions ------------------------------------------------------------------------------------------------

def test_per_service_users_run_the_system_and_the_gateway_is_confined(deploy_system):
    system = deploy_system()
    node = ConfiguredNats(system, "nats-server.conf")
    system.nats = node
    node.start().wait_ready()
    url = node.plain_url
    system.start(chat_services=1, broadcasters=2, gateways=2,
                 chat_env=credentials("chat-service", url),
                 broadcaster_env=credentials("broadcaster", url),
                 gateway_env=credentials("gateway", url, **FAST))

    # Each service is connected with its own user, none as admin.
    users = node.users_connected()
    assert users.count("chat-service") >= 1 and users.count("broadcaster") == 2 and users.count("gateway") == 2, users

    gw0, gw1 = system.gateways
    room = create_room(gw0)

    async def body():
        ann = await Client.connect(gw0, "ann")
        bob = await Client.connect(gw0, "bob")
        cat = await Client.connect(gw1, "cat")
        for client in (ann, bob, cat):
            await client.join(room)
        acks = [await ann.send_message(f"hello {n}") for n in range(5)]
        assert [a.get("seq") for a in acks] == [1, 2, 3, 4, 5], acks
        for client in (ann, bob, cat):
            assert [m["seq"] for m in await client.wait_messages(room, 5)] == [1, 2, 3, 4, 5]
        await bob.send({"type": "typing", "room_id": room})  # gateway → chat.typing.<room> → both gateways
        assert (await cat.wait_for("typing", username="bob"))["room_id"] == room
        members = await ann.request({"type": "members", "room_id": room}, "members")
        assert sorted(m["username"] for m in members["members"]) == ["ann", "bob", "cat"]
        history = await ann.request({"type": "history", "room_id": room}, "history")
        assert [m["seq"] for m in history["messages"]] == [1, 2, 3, 4, 5]

        # Broadcaster failover: the standby re-creates the consumer at the ack floor (its permissions
        # cover consumer info/delete/create and the lease).
        active = [b for b in system.broadcasters if b.health()[1].get("role") == "active"]
        assert len(active) == 1, [b.health()[1].get("role") for b in system.broadcasters]
        await active[0].akill()
        for n in range(5):
            assert (await bob.send_message(f"after failover {n}"))["type"] == "ack"
        for client in (ann, bob, cat):
            await client.wait_messages(room, 10, timeout=20)
            assert [m["seq"] for m in client.messages(room)] == list(range(1, 11)), client.label

        # Presence expiry: the chat-service (KV watch, delete, presence event) removes cat's membership
        # when cat's gateway dies.
        await gw1.akill()
        left = await ann.wait_for("user_left", timeout=20, username="cat")
        assert left["room_id"] == room
        members = await ann.request({"type": "members", "room_id": room}, "members")
        assert sorted(m["username"] for m in members["members"]) == ["ann", "bob"]
        for client in (ann, bob):
            await client.close()

    asyncio.run(asyncio.wait_for(body(), 90))
    # Nothing the services did was refused.
    assert node.violations() == [], node.violations()

    async def refused():
        admin = await node.connect()
        js_admin = admin.jetstream(timeout=2)
        # Per subject the forgeries aim at (not the stream's total: the leaves of ann's and bob's
        # closes may still be landing as presence events).
        last = await js_admin.get_last_msg("CHAT_EVENTS", f"chat.room.{room}.msg")
        last_created = await js_admin.get_last_msg("CHAT_EVENTS", "chat.rooms.created")
        assert (await (await js_admin.key_value("chat_rooms")).get(f"id.{room}")).value  # admin can read KV

        errors = Errors()
        gateway = await node.connect("gateway", error_cb=errors.add)  # replies to _INBOX_gateway.*
        # The gateway's normal business still works on this connection...
        reply = await gateway.request("chat.svc.room.list", b"{}", timeout=5)
        assert "rooms" in json.loads(reply.data), reply.data[:200]

        # ...but it cannot read the chat-service's replies. Those go to _INBOX_chat.* (admin sees them:
        # the history below is read by direct gets, message text included); the gateway's user may not
        # subscribe there, nor to the shared _INBOX.>.
        spied: list[bytes] = []
        spied_any = asyncio.Event()

        async def on_spied(message):
            spied.append(message.data)
            spied_any.set()
        await admin.subscribe("_INBOX_chat.>", cb=on_spied)
        await admin.publish("_INBOX_chat.ready", b"ready")  # back through the subscription: it is in place
        await asyncio.wait_for(spied_any.wait(), 5)
        stolen: list[bytes] = []

        async def on_stolen(message):
            stolen.append(message.data)
        for inbox in ("_INBOX_chat.>", "_INBOX.>", "_INBOX_broadcaster.>"):
            await gateway.subscribe(inbox, cb=on_stolen)
            await errors.wait_for(f'permissions violation for subscription to "{inbox}"')
        spied.clear()
        history = await gateway.request("chat.svc.message.history", json.dumps({"room_id": room}).encode(), timeout=5)
        assert [m["seq"] for m in json.loads(history.data)["messages"]][:1] == [1], history.data[:200]
        # The direct-get replies were delivered (to admin) before the chat-service could answer; had the
        # gateway's subscription been accepted, they would have reached it before that answer too.
        assert any(b"hello" in data for data in spied), spied[:3]
        assert stolen == []

        # ...but it cannot write into the event stream,
        await gateway.publish(f"chat.room.{room}.msg", b'{"content":"forged"}')
        await gateway.flush()
        await errors.wait_for(f'permissions violation for publish to "chat.room.{room}.msg"')
        await gateway.publish("chat.rooms.created", b"{}")
        await errors.wait_for('permissions violation for publish to "chat.rooms.created"')
        # nor forge deliveries to other gateways,
        await gateway.publish(f"chat.deliver.room.{room}", b"{}")
        await errors.wait_for(f'permissions violation for publish to "chat.deliver.room.{room}"')
        # nor read KV: not through the JetStream API, not by direct get, not by subscribing to $KV.
        with pytest.raises(Exception):
            await (await gateway.jetstream(timeout=1).key_value("chat_rooms")).get(f"id.{room}")
        await errors.wait_for('permissions violation for publish to "$js.api.stream.info.kv_chat_rooms"')
        with pytest.raises(Exception):
            await gateway.request("$JS.API.DIRECT.GET.KV_chat_rooms", json.dumps({"last_by_subj": f"$KV.chat_rooms.id.{room}"}).encode(), timeout=1)
        await errors.wait_for('permissions violation for publish to "$js.api.direct.get.kv_chat_rooms"')
        await gateway.subscribe("$KV.chat_rooms.>")
        await gateway.flush()
        await errors.wait_for('permissions violation for subscription to "$kv.chat_rooms.>"')
        await gateway.close()

        # The stream did not change.
        assert (await js_admin.get_last_msg("CHAT_EVENTS", f"chat.room.{room}.msg")).seq == last.seq
        assert (await js_admin.get_last_msg("CHAT_EVENTS", "chat.rooms.created")).seq == last_created.seq

        # The broadcaster's and chat-service's users are confined too.
        errors_b = Errors()
        broadcaster = await node.connect("broadcaster", error_cb=errors_b.add)
        await broadcaster.publish(f"chat.room.{room}.msg", b"{}")
        await broadcaster.flush()
        await errors_b.wait_for(f'permissions violation for publish to "chat.room.{room}.msg"')
        await broadcaster.close()
        errors_c = Errors()
        chat = await node.connect("chat-service", error_cb=errors_c.add)
        await chat.publish(f"chat.deliver.room.{room}", b"{}")
        await chat.flush()
        await errors_c.wait_for(f'permissions violation for publish to "chat.deliver.room.{room}"')
        await chat.close()

        # No user, or a wrong password: no connection at all.
        for kwargs in ({}, {"user": "gateway", "password": "wrong"}):
            with pytest.raises(Exception):
                await nats.connect(node.plain_url, connect_timeout=2, allow_reconnect=False,
                                   max_reconnect_attempts=0, **kwargs)
        await admin.close()

    asyncio.run(asyncio.wait_for(refused(), 60))
    assert all('User "gateway"' in line or 'User "broadcaster"' in line or 'User "chat-service"' in line
               for line in node.violations())


# --- TLS --------------------------------------------------------------------------------------------------------

def test_tls_services_connect_with_tls_url_and_ca(deploy_system, tmp_path):
    certs = tmp_path / "certs"
    made = subprocess.run([str(DEPLOY / "make-certs.sh"), str(certs)], capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    ca = certs / "ca.pem"
    verified = subprocess.run(["openssl", "verify", "-CAfile", str(ca), str(certs / "server-cert.pem")],
                              capture_output=True, text=True)
    assert verified.returncode == 0, verified.stdout + verified.stderr

    system = deploy_system()
    node = ConfiguredNats(system, "nats-server-tls.conf", tls_ca=ca, env={
        "NATS_TLS_CERT": str(certs / "server-cert.pem"), "NATS_TLS_KEY": str(certs / "server-key.pem"),
        "NATS_TLS_CA": str(ca)})
    system.nats = node
    node.start().wait_ready()
    assert node.plain_url.startswith("tls://")

    def env(user: str, **extra: str) -> dict[str, str]:
        return credentials(user, node.plain_url, NATS_CA=str(ca), **extra)

    # system.py's $SRV probes speak plain NATS: start without them, probe over TLS here.
    chat = system.add_chat_service(env("chat-service"), wait=False)
    broadcaster = system.add_broadcaster(env("broadcaster"), wait=False)
    gateway = system.add_gateway(env("gateway"), wait=False)

    async def tls_ready():
        admin = await node.connect()
        try:
            async def chat_answers():
                try:
                    reply = await admin.request("$SRV.PING.chat", b"", timeout=0.5)
                except Exception:
                    return False
                return json.loads(reply.data).get("metadata", {}).get("instance") == chat.instance_id
            await wait_until(chat_answers, 45, "chat-service answering $SRV.PING over TLS")
        finally:
            await admin.close()

    asyncio.run(tls_ready())

    def healthy(process, url) -> bool:
        try:
            return http_get(url, timeout=1)[0] == 200
        except OSError:
            return False

    deadline = time.monotonic() + 45
    while not (healthy(broadcaster, broadcaster.base_url + "/health") and healthy(gateway, gateway.base_url + "/health")):
        for process in (chat, broadcaster, gateway):
            process.assert_running()
        assert time.monotonic() < deadline, "broadcaster/gateway not healthy over TLS within 45 s"
        time.sleep(0.1)

    # Every service connection is TLS.
    connections = node.connz()
    services = [c for c in connections if c.get("authorized_user") in ("chat-service", "broadcaster", "gateway")]
    assert sorted({c["authorized_user"] for c in services}) == ["broadcaster", "chat-service", "gateway"]
    assert all(c.get("tls_version") for c in services), services

    room = create_room(gateway)

    async def chat_over_tls():
        ann = await Client.joined(gateway, "ann", room)
        bob = await Client.joined(gateway, "bob", room)
        assert (await ann.send_message("over TLS"))["type"] == "ack"
        assert [m["content"] for m in await bob.wait_messages(room, 1)] == ["over TLS"]
        await ann.close()
        await bob.close()

        # A plain client and a client that does not trust the local CA are refused.
        for kwargs in ({"servers": [f"nats://127.0.0.1:{node.port}"]}, {"servers": [node.plain_url]}):
            with pytest.raises(Exception):
                await nats.connect(**kwargs, user="admin", password=password("admin"), connect_timeout=2,
                                   allow_reconnect=False, max_reconnect_attempts=0)

    asyncio.run(asyncio.wait_for(chat_over_tls(), 30))


# --- 3-node cluster ---------------------------------------------------------------------------------------------

def test_cluster_routes_need_the_route_password(deploy_system):
    """A route is trusted with every subject of every user (no permission of auth.conf applies to it), so a
    node of nats-cluster.conf takes none without the route password: a server dialling it with no or a
    wrong password stays outside, one with the password joins."""
    system = deploy_system()
    cluster_port = free_port()
    # JetStream clustering wants a configured route: the one to itself, which the node drops. The
    # --cluster flag replaces the config's route credentials with those in its URL (none: routes open).
    node = ConfiguredNats(system, "nats-cluster.conf", name="nats-1", env={"NATS_SERVER_NAME": "n1"},
                          extra_args=["--cluster", f"nats://route:{ROUTE_PASSWORD}@127.0.0.1:{cluster_port}",
                                      "--routes", f"nats://route:{ROUTE_PASSWORD}@127.0.0.1:{cluster_port}"])
    system.nodes = [node]
    system.nats = node
    node.start()

    def routes() -> int | None:
        try:
            status, body = http_get(f"http://127.0.0.1:{node.monitor_port}/routez")
        except OSError:
            return None
        return json.loads(body)["num_routes"] if status == 200 else None

    def refusals() -> int:
        return node.log.read_text(errors="replace").count("Router connection closed: Authentication Failure")

    def dial(name: str, route_url: str) -> Process:
        rogue = Process(system, name, [nats_server_binary(), "-a", "127.0.0.1", "-p", str(free_port()),
                                       "--cluster_name", "nats-chat", "--cluster", f"nats://127.0.0.1:{free_port()}",
                                       "--routes", route_url], {})
        system.front.append(rogue)
        return rogue.start()

    def until(condition, what: str) -> None:
        deadline = time.monotonic() + 15
        while not condition():
            assert time.monotonic() < deadline, f"{what}: not within 15 s"
            time.sleep(0.05)

    # Alone, it cannot elect a JetStream leader, so it is ready when its monitoring answers.
    until(lambda: node.running and routes() == 0, "the node serving /routez")
    for name, userinfo in (("no-password", ""), ("wrong-password", "route:wrong@")):
        before = refusals()
        dial(name, f"nats://{userinfo}127.0.0.1:{cluster_port}")
        until(lambda: refusals() > before, f"the node refusing the route with {name}")
        assert routes() == 0
    dial("with-password", f"nats://route:{ROUTE_PASSWORD}@127.0.0.1:{cluster_port}")
    until(lambda: routes() == 1, "the node taking the route with the password")


def test_cluster_node_killed_during_traffic_loses_nothing_acknowledged(deploy_system):
    system = deploy_system()
    cluster_ports = [free_port() for _ in range(3)]
    routes = ",".join(f"nats://route:{ROUTE_PASSWORD}@127.0.0.1:{port}" for port in cluster_ports)
    nodes = [ConfiguredNats(system, "nats-cluster.conf", name=f"nats-{i + 1}", env={"NATS_SERVER_NAME": f"n{i + 1}"},
                            extra_args=["--cluster", f"nats://route:{ROUTE_PASSWORD}@127.0.0.1:{cluster_ports[i]}",
                                        "--routes", routes])
             for i in range(3)]
    system.nodes = nodes
    system.nats = nodes[0]
    for node in nodes:
        node.start()
    for node in nodes:
        node.wait_ready()

    async def cluster_ready():
        admin = await nodes[0].connect()
        try:
            async def meta_leader():
                try:
                    info = json.loads((await admin.request("$JS.API.INFO", b"", timeout=1)).data)
                except Exception:
                    return False
                return "error" not in info
            await wait_until(meta_leader, 30, "JetStream meta leader of the 3-node cluster")
        finally:
            await admin.close()

    asyncio.run(cluster_ready())
    urls = ",".join(node.plain_url for node in nodes)
    system.start(chat_env=credentials("chat-service", urls, CHAT_REPLICAS="3"),
                 broadcaster_env=credentials("broadcaster", urls),
                 gateway_env=credentials("gateway", urls, **FAST))

    # The victim: the node the chat-service is connected to (so that it must reconnect); move the
    # stream's leadership there too when a few step-downs manage it (best effort: leaders are elected).
    victim = next(node for node in nodes if "chat-service" in node.users_connected())
    survivors = [node for node in nodes if node is not victim]

    async def replicated_and_led():
        admin = await survivors[0].connect()
        js = admin.jetstream(timeout=5)
        try:
            for stream in ["CHAT_EVENTS", *[f"KV_{b}" for b in BUCKETS]]:
                info = await js.stream_info(stream)
                assert info.config.num_replicas == 3, (stream, info.config.num_replicas)
                assert len(info.cluster.replicas or []) == 2, (stream, info.cluster)
            victim_name = victim.env["NATS_SERVER_NAME"]
            for _ in range(6):
                info = await js.stream_info("CHAT_EVENTS")
                if info.cluster.leader == victim_name:
                    return True
                await admin.request("$JS.API.STREAM.LEADER.STEPDOWN.CHAT_EVENTS", b"", timeout=5)

                async def elected():
                    try:
                        return (await js.stream_info("CHAT_EVENTS")).cluster.leader is not None
                    except Exception:
                        return False
                await wait_until(elected, 15, "a CHAT_EVENTS leader after step-down")
            return (await js.stream_info("CHAT_EVENTS")).cluster.leader == victim_name
        finally:
            await admin.close()

    victim_leads = asyncio.run(replicated_and_led())
    print(f"victim {victim.name}: hosts the chat-service connection; CHAT_EVENTS leader: {victim_leads}")
    system.nats = survivors[0]  # probes and checks go to a node that stays

    gateway = system.gateway
    room = create_room(gateway)
    total = 150

    async def traffic():
        ann = await Client.joined(gateway, "ann", room)
        bob = await Client.joined(gateway, "bob", room)

        async def kill_at(n: int):
            if n == 40:
                await victim.akill()

        sender = Sender(ann, [room], total, pause=0.01, on_sent=kill_at)
        sent = await asyncio.wait_for(sender.run(), 120)
        assert not victim.running
        assert [s.seq for s in sent] == list(range(1, total + 1))
        ids = [s.message_id for s in sent]
        for client in (ann, bob):
            await client.wait_messages(room, total, timeout=30)
            await client.quiet(0.3, "message")
            got = client.messages(room)
            assert [m["seq"] for m in got] == list(range(1, total + 1)), client.label
            assert [m["message_id"] for m in got] == ids, client.label
        for client in (ann, bob):
            await client.close()
        return ids, sender.retries

    ids, retries = asyncio.run(traffic())
    print(f"{total} messages acknowledged across the node failure ({retries} retried sends)")

    # Nothing acknowledged is lost: the history (read from the surviving replicas) has every one.
    response = requests.get(f"{gateway.base_url}/api/v1/rooms/{room}/history", params={"limit": 200}, timeout=10)
    assert response.status_code == 200, response.text
    assert [m["message_id"] for m in response.json()["messages"]] == ids

    # The services reconnected by themselves to the surviving nodes.
    deadline = time.monotonic() + 30
    while True:
        users = sorted(u for node in survivors for u in node.users_connected())
        if all(name in users for name in ("chat-service", "broadcaster", "gateway")):
            break
        assert time.monotonic() < deadline, f"services not reconnected to the surviving nodes: {users}"
        time.sleep(0.2)
    for service in (*system.chat_services, *system.broadcasters, *system.gateways):
        service.assert_running()
    status, health = system.broadcaster.health()
    assert status == 200 and health["nats"]["status"] == "connected", health
