"""Faults between real hosts: nats-chat on ten network namespaces (netfaults.py) under a seeded nemesis,
then a checker of what was acknowledged, stored, replicated and delivered.

Run it with ``scripts/jepsen`` (root; ``--help``); ``e2e/python/test_jepsen.py`` runs a short one.

Hosts (10.99.0.0/24, only inside the namespaces): ``n1``–``n3`` a 3-node nats-server 2.15.1 cluster with
JetStream (deploy/nats-cluster.conf unchanged, with its users, route password and monitoring moved to the
host's own address), ``cs1``/``cs2`` chat-services with ``CHAT_REPLICAS=3``, ``b1``/``b2`` broadcasters,
``g1``/``g2`` gateways, each on its own host and connecting to all three nodes, and ``client``, where this
harness itself runs (it enters that namespace at start): WebSocket clients that send one message at a time
with a ``client_msg_id``, retry it on ``unavailable``/``internal``/timeouts, re-join every room with
``since`` after every disconnect, and fail over to the other gateway when the one they are on keeps failing.
``cs2``, ``b2`` and ``g2`` run under libfaketime (a ``FAKETIME_TIMESTAMP_FILE`` the nemesis rewrites;
``FAKETIME_DONT_FAKE_MONOTONIC=1``, so only wall-clock time moves).

The nemesis (``--scenarios``, taken in a seeded, shuffled rotation; one fault at a time, held for a few
seconds, then healed and the cluster given time to recover):

- ``partition-one``: one NATS node cut from every other host;
- ``partition-majority``: one node and a random part of the service hosts against the other two nodes
  and the rest;
- ``partition-oneway``: one node's packets to the other nodes dropped, theirs to it still flowing;
- ``cut-service``: a service host cut from all three nodes (dropped, so its TCP connections stay up);
- ``loss``: 20–35 % random loss on one host's link;
- ``pause``: SIGSTOP of a service longer than the presence timeout and the broadcaster lease, then SIGCONT;
- ``kill``: kill -9 of a service and its restart;
- ``crash-node``: kill -9 of a nats-server node and its restart on the same store;
- ``skew``: the wall clock of cs2, b2 or g2 moved by ±1–5 minutes while it runs, then back.

The checker (after the last fault is healed and the clients have settled): every acknowledged
``client_msg_id`` is stored exactly once, as acknowledged; each room's ``seq`` runs 1..N; every member
received every message of its rooms once, in order, over all its connections; the REST history equals the
stream (all of these from chaos.py's checker); every node's ``/jsz`` reports the same last sequence for
CHAT_EVENTS and every KV stream; presence equals the clients' connections within ``PRESENCE_BOUND_S``;
every service answers ``/health`` and serves requests (a send through each gateway is acknowledged and
delivered; both chat-services and both broadcasters answer ``$SRV.PING``).

The schedule is a function of ``--seed`` (printed), so a run can be replayed; the interleaving with
traffic still varies.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import requests
from websockets.asyncio.client import connect

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import system as system_module  # noqa: E402
from chaos import (ChaosClient, check, members_of, now, read_stream, rest_history, say)  # noqa: E402
from deployment import DEPLOY, PASSWORDS, ROUTE_PASSWORD, ROUTE_PASSWORD_VARIABLE, password  # noqa: E402
from netfaults import Host, Network, enter  # noqa: E402
from system import NEWER_NATS_SERVER, Process, SystemError_, http_get, service_binary  # noqa: E402

HOSTS = {"n1": 11, "n2": 12, "n3": 13, "cs1": 21, "cs2": 22, "b1": 31, "b2": 32, "g1": 41, "g2": 42,
         "client": 100}
NODES = ["n1", "n2", "n3"]
SERVICE_HOSTS = ["cs1", "cs2", "b1", "b2", "g1", "g2"]
SKEWED = ["cs2", "b2", "g2"]  # started under libfaketime
SCENARIOS = ("partition-one", "partition-majority", "partition-oneway", "cut-service", "loss", "pause", "kill",
             "crash-node", "skew")
LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
SERVICE_PORT = 8080
PRESENCE_TIMEOUT_MS = 6000   # chat-service default, stated so the bounds below follow it
BROADCASTER_LEASE_MS = 3000  # broadcaster default
PAUSE_S = (8.0, 12.0)        # longer than both
PRESENCE_BOUND_S = 30.0      # after healing: presence timeout + sweep + a NATS reconnect and resync
CONVERGE_BOUND_S = 90.0      # after healing: every replica at the same last sequence
RECOVERY_BOUND_S = 90.0      # after each fault: a meta leader and every stream led and current again
STREAMS = ["CHAT_EVENTS", "KV_chat_rooms", "KV_chat_members", "KV_chat_idempotency", "KV_chat_gateways",
           "KV_chat_leases", "KV_chat_access", "KV_chat_users"]


def admin_url(ip: str) -> str:
    return f"nats://admin:{password('admin')}@{ip}:4222"


def port_open(ip: str, port: int) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=0.5):
            return True
    except OSError:
        return False


def nats_call(urls: list[str], body, timeout: float = 3.0) -> Any:
    """`await body(nc)` on a fresh admin connection to the first of `urls` that accepts TCP, bounded in time;
    None when none does or it fails."""
    live = [u for u in urls if port_open(u.rsplit("@", 1)[1].split(":")[0], 4222)]
    if not live:
        return None

    async def go():
        nc = await nats.connect(live, connect_timeout=1, allow_reconnect=False, max_reconnect_attempts=0,
                                error_cb=_quiet)
        try:
            return await body(nc)
        finally:
            await nc.close()
    try:
        return system_module.run_async(lambda: asyncio.wait_for(go(), timeout))
    except Exception:  # noqa: BLE001 — a probe: any failure is a "no"
        return None


async def _quiet(_error: Exception) -> None:
    """nats-py prints every connection error otherwise; probes expect them."""


# --- processes on hosts ----------------------------------------------------------------------------------------

@dataclass
class Cluster:
    """What system.Process needs of its system (a directory for logs), plus the hosts and processes."""
    dir: Path
    net: Network
    args: argparse.Namespace
    nodes: list["NatsNode"] = field(default_factory=list)
    chat_services: list["NetService"] = field(default_factory=list)
    broadcasters: list["NetService"] = field(default_factory=list)
    gateways: list["NetGateway"] = field(default_factory=list)

    @property
    def services(self) -> list["NetService"]:
        return [*self.chat_services, *self.broadcasters, *self.gateways]

    @property
    def processes(self) -> list[Process]:
        return [*self.nodes, *self.services]

    @property
    def admin_urls(self) -> list[str]:
        return [admin_url(node.host.ip) for node in self.nodes]

    def stop(self) -> None:
        for process in reversed(self.processes):
            try:
                process.stop()
            except Exception as error:  # keep stopping the others
                print(f"could not stop {process.name}: {error}", flush=True)


class NatsNode(Process):
    kind = "nats-server"

    def __init__(self, cluster: Cluster, host: Host):
        self.host = host
        store = cluster.dir / f"{host.name}-store"
        wrapper = cluster.dir / f"{host.name}.conf"
        include = os.path.relpath(DEPLOY / "nats-cluster.conf", cluster.dir)
        sync = ", sync_interval: always" if cluster.args.sync_always else ""
        # Monitoring on the host's private address (not loopback) so the checker can read every node's /jsz.
        wrapper.write_text(f'include "{include}"\nhttp: {host.ip}:8222\n'
                           f'jetstream {{ store_dir: "{store}", max_memory_store: 256M, max_file_store: 10G{sync} }}\n')
        routes = ",".join(f"nats-route://route:{ROUTE_PASSWORD}@{cluster.net[n].ip}:6222" for n in NODES)
        env = dict(os.environ, **PASSWORDS, NATS_SERVER_NAME=host.name)
        env[ROUTE_PASSWORD_VARIABLE] = ROUTE_PASSWORD
        binary = cluster.args.nats_server or str(NEWER_NATS_SERVER)
        super().__init__(cluster, host.name, host.exec_argv([binary, "-c", str(wrapper), "--routes", routes]), env)

    def probe(self) -> bool:
        async def js_info(nc) -> bool:
            await nc.request("$JS.API.INFO", b"", timeout=1)
            return True
        return bool(nats_call([admin_url(self.host.ip)], js_info))

    def jsz(self) -> dict[str, Any]:
        status, body = http_get(f"http://{self.host.ip}:8222/jsz?accounts=true&streams=true", timeout=2)
        if status != 200:
            raise OSError(f"/jsz of {self.name}: {status}")
        return json.loads(body)

    def stream_states(self) -> dict[str, int]:
        """Stream name → last sequence, of the replicas this node holds (`{}` when it does not answer)."""
        try:
            info = self.jsz()
        except (OSError, ValueError):
            return {}
        states = {}
        for account in info.get("account_details") or []:
            for stream in account.get("stream_detail") or []:
                states[stream["name"]] = stream.get("state", {}).get("last_seq", 0)
        return states


class NetService(Process):
    """A chat-service or broadcaster on its host, `/health` on SERVICE_PORT; under libfaketime when skewed."""

    def __init__(self, cluster: Cluster, host: Host, binary: str, user: str, srv: str, env: dict[str, str]):
        self.host = host
        self.srv = srv
        self.instance_id = host.name
        self.cluster = cluster
        self.clock_file = cluster.dir / f"{host.name}.faketime"
        prefix: list[str] = []
        if host.name in SKEWED:
            self.clock_file.write_text("+0\n")
            prefix = ["env", f"LD_PRELOAD={LIBFAKETIME}", f"FAKETIME_TIMESTAMP_FILE={self.clock_file}",
                      "FAKETIME_DONT_FAKE_MONOTONIC=1", "FAKETIME_CACHE_DURATION=1"]
        urls = ",".join(f"nats://{cluster.net[n].ip}:4222" for n in NODES)
        full_env = dict(os.environ, NATS_URL=urls, NATS_USER=user, NATS_PASSWORD=password(user),
                        LOG_LEVEL=os.environ.get("LOG_LEVEL", "info"), CHAT_REPLICAS="3", **env)
        argv = host.exec_argv([*prefix, str(service_binary(binary))])
        super().__init__(cluster, host.name, argv, full_env)

    @property
    def base_url(self) -> str:
        return f"http://{self.host.ip}:{SERVICE_PORT}"

    def health(self) -> int:
        try:
            return http_get(self.base_url + "/health", timeout=2)[0]
        except OSError:
            return 0

    def srv_ping(self) -> bool:
        async def ping(nc) -> bool:
            inbox = nc.new_inbox()
            sub = await nc.subscribe(inbox)
            await nc.publish(f"$SRV.PING.{self.srv}", b"", reply=inbox)
            end = time.monotonic() + 0.5
            while (left := end - time.monotonic()) > 0:
                try:
                    reply = json.loads((await sub.next_msg(timeout=left)).data)
                except Exception:
                    return False
                if (reply.get("metadata") or {}).get("instance") == self.instance_id:
                    return True
            return False
        return bool(nats_call(self.cluster.admin_urls, ping))

    def probe(self) -> bool:
        return self.health() == 200 and self.srv_ping()

    def skew(self, seconds: int) -> None:
        self.clock_file.write_text(f"{seconds:+d}\n")


class NetGateway(NetService):
    @property
    def gateway_id(self) -> str:
        return self.instance_id

    def ws_url(self, username: str) -> str:
        return f"ws://{self.host.ip}:{SERVICE_PORT}/ws?username={username}"

    def probe(self) -> bool:
        return self.health() == 200


def make_cluster(base: Path, args: argparse.Namespace, net: Network) -> Cluster:
    cluster = Cluster(base, net, args)
    cluster.nodes = [NatsNode(cluster, net[n]) for n in NODES]
    # The stream's and buckets' default max_bytes (4 GiB + 7 × 1 GiB) exceed nats-cluster.conf's
    # max_file_store (10G): the last bucket is then refused ("insufficient storage") whenever the meta leader
    # already knows its peers' reservations, a race at start. Smaller limits here keep the start reliable.
    chat_env = {"CHAT_EVENTS_MAX_BYTES": str(1 << 30), "CHAT_KV_MAX_BYTES": str(256 << 20),
                "HTTP_HOST": "0.0.0.0", "HTTP_PORT": str(SERVICE_PORT),
                "CHAT_PRESENCE_TIMEOUT_MS": str(PRESENCE_TIMEOUT_MS), "CHAT_RETENTION_PER_ROOM": "100000000"}
    for name in ("cs1", "cs2"):
        cluster.chat_services.append(NetService(cluster, net[name], "chat-service", "chat-service", "chat",
                                                {**chat_env, "INSTANCE_ID": name}))
    for name in ("b1", "b2"):
        cluster.broadcasters.append(NetService(cluster, net[name], "broadcaster", "broadcaster", "broadcaster",
                                               {"HTTP_HOST": "0.0.0.0", "HTTP_PORT": str(SERVICE_PORT),
                                                "INSTANCE_ID": name, "BROADCASTER_LEASE_MS": str(BROADCASTER_LEASE_MS)}))
    for name in ("g1", "g2"):
        cluster.gateways.append(NetGateway(cluster, net[name], "gateway", "gateway", "gateway",
                                           {"HOST": "0.0.0.0", "PORT": str(SERVICE_PORT), "GATEWAY_ID": name,
                                            "MAX_CONNECTIONS_PER_IP": "0", "ROOM_CREATE_PER_MIN": "1000000",
                                            "RATE_LIMIT_PER_SEC": "100000", "RATE_LIMIT_BURST": "100000"}))
    return cluster


def start_cluster(cluster: Cluster) -> None:
    for node in cluster.nodes:
        node.start()
    for node in cluster.nodes:
        node.wait_ready(30)
    if not wait_sync(lambda: meta_leader(cluster), 60):
        raise SystemError_("no JetStream meta leader within 60 s")
    for service in cluster.chat_services:
        service.start()
    for service in cluster.chat_services:
        service.wait_ready(60)
    for service in [*cluster.broadcasters, *cluster.gateways]:
        service.start()
    for service in [*cluster.broadcasters, *cluster.gateways]:
        service.wait_ready(60)


def wait_sync(predicate, timeout: float, interval: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return True
        except Exception:
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def meta_leader(cluster: Cluster) -> bool:
    for node in cluster.nodes:
        try:
            info = node.jsz()
        except (OSError, ValueError):
            return False
        if not (info.get("meta_cluster") or {}).get("leader"):
            return False
    return True


def placement(cluster: Cluster) -> str:
    """Which service hosts hold a NATS connection to which node (from each node's /connz), e.g.
    "n1:cs1,g2 n2:b1 n3:-": the services a node fault cuts off until their client notices."""
    by_ip = {host.ip: host.name for host in cluster.net.hosts.values()}
    parts = []
    for node in cluster.nodes:
        try:
            status, body = http_get(f"http://{node.host.ip}:8222/connz?limit=1000", timeout=2)
            names = sorted({by_ip.get(c.get("ip"), "?") for c in json.loads(body).get("connections") or []}
                           - {"client"}) if status == 200 else ["?"]
        except (OSError, ValueError):
            names = ["?"]
        parts.append(f"{node.name}:{','.join(names) or '-'}")
    return " ".join(parts)


def replica_states(cluster: Cluster) -> dict[str, dict[str, int]]:
    return {node.name: node.stream_states() for node in cluster.nodes}


def converged(states: dict[str, dict[str, int]]) -> bool:
    """Every node holds every stream, at the same last sequence."""
    return all(len({states[n].get(stream, -1) for n in states} - {-1}) == 1
               and all(stream in states[n] for n in states) for stream in STREAMS)


# --- clients ---------------------------------------------------------------------------------------------------

class JepsenClient(ChaosClient):
    """chaos.py's client (idempotent retries, `since` after every reconnect) that also leaves a gateway that
    keeps failing (a gateway cut from NATS still accepts sockets) for the other one."""

    FAILOVER_AFTER = 2       # consecutive failed attempts of one send
    JOIN_FAILOVER_S = 20.0   # joins not done in this long

    def __init__(self, harness: "Harness", index: int, rooms: list[str]):
        super().__init__(harness, index, rooms)
        self.failed_attempts = 0
        self.avoid: str | None = None
        self.failovers = 0

    def endpoints(self) -> list[str]:
        gateways = list(self.h.system.gateways)
        self.rng.shuffle(gateways)
        gateways.sort(key=lambda g: g.gateway_id == self.avoid)  # the one that failed last, last
        return [g.ws_url(self.username) for g in gateways]

    def failover(self, why: str) -> None:
        self.avoid = self.gateway_id
        self.failed_attempts = 0
        self.failovers += 1
        raise ConnectionError(why)

    async def join_all(self, ws) -> None:
        try:
            await asyncio.wait_for(super().join_all(ws), self.JOIN_FAILOVER_S)
        except asyncio.TimeoutError:
            self.errors["join_failover"] += 1
            self.failover("joins did not finish")

    async def send_pending(self, ws) -> None:
        acked = len(self.acks)
        await super().send_pending(ws)
        if len(self.acks) > acked:
            self.failed_attempts = 0
            return
        self.failed_attempts += 1
        if self.failed_attempts >= self.FAILOVER_AFTER:
            self.failover("sends keep failing")


# --- the nemesis -----------------------------------------------------------------------------------------------

@dataclass
class Fault:
    at: float
    kind: str
    target: str
    held_s: float
    recovered_s: float = 0.0
    acked_during: int = 0
    placement: str = ""


@dataclass
class Harness:
    args: argparse.Namespace
    system: Cluster  # `system` for ChaosClient (it reads .gateways)
    net: Network
    nginx: Any = None
    clients: list[JepsenClient] = field(default_factory=list)
    rooms: list[str] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    stop_sending: bool = False
    finished: bool = False
    recovery_failures: list[str] = field(default_factory=list)

    def acked(self) -> int:
        return sum(len(c.acks) for c in self.clients)

    async def create_rooms(self) -> None:
        base = self.system.gateways[0].base_url
        for n in range(self.args.rooms):
            name = f"jepsen-{self.args.seed}-{n}-{uuid.uuid4().hex[:6]}"
            response = await asyncio.to_thread(requests.post, base + "/api/v1/rooms", json={"name": name}, timeout=10)
            assert response.status_code == 201, (response.status_code, response.text)
            self.rooms.append(response.json()["id"])

    async def nemesis(self, until: float) -> None:
        rng = random.Random(self.args.seed)
        rotation: list[str] = []
        while True:
            gap = rng.uniform(2.0, 5.0)
            hold = rng.uniform(6.0, 10.0)
            if now() + gap + hold >= until:
                return
            await asyncio.sleep(gap)
            if not rotation:
                rotation = list(self.args.scenarios)
                rng.shuffle(rotation)
            await self.inject(rotation.pop(), hold, rng)

    async def inject(self, kind: str, hold: float, rng: random.Random) -> None:
        c, net = self.system, self.net
        others = [h for h in HOSTS if h != "client"]
        fault = Fault(now(), kind, "", hold, placement=await asyncio.to_thread(placement, c))
        acked_before = self.acked()
        heal = net.heal
        if kind == "partition-one":
            victim = rng.choice(NODES)
            fault.target = f"{victim} | everyone else"
            net.cut([victim], [h for h in others if h != victim])
        elif kind == "partition-majority":
            minority = rng.choice(NODES)
            services = [s for s in SERVICE_HOSTS if rng.random() < 0.5]
            small = [minority, *services]
            large = [h for h in others if h not in small]
            fault.target = f"{','.join(small)} | {','.join(large)}"
            net.partition([small, large])
        elif kind == "partition-oneway":
            victim = rng.choice(NODES)
            fault.target = f"{victim} -/-> other nodes"
            net.cut_one_way([victim], [n for n in NODES if n != victim])
        elif kind == "cut-service":
            victim = rng.choice(SERVICE_HOSTS)
            fault.target = f"{victim} | n1,n2,n3 (drop)"
            net.cut([victim], NODES)
        elif kind == "loss":
            victim = rng.choice([*NODES, *SERVICE_HOSTS])
            percent = rng.randint(20, 35)
            fault.target = f"{percent}% on {victim}"
            net.loss(victim, percent)
        elif kind == "pause":
            process = rng.choice(c.services)
            hold = fault.held_s = rng.uniform(*PAUSE_S)
            fault.target = f"SIGSTOP {process.name} pid {process.pid}"
            process.pause()
            heal = process.resume
        elif kind == "kill":
            process = rng.choice(c.services)
            hold = fault.held_s = rng.uniform(0.5, 2.0)
            fault.target = f"kill -9 {process.name} pid {process.pid}"
            await process.akill()
            heal = process.start
        elif kind == "crash-node":
            node = rng.choice(c.nodes)
            fault.target = f"kill -9 {node.name} pid {node.pid}"
            await node.akill()
            heal = node.start
        elif kind == "skew":
            skewed = rng.choice(SKEWED)
            process = next(s for s in c.services if s.name == skewed)
            seconds = rng.choice([-1, 1]) * rng.randint(60, 300)
            fault.target = f"clock of {process.name} {seconds:+d} s"
            process.skew(seconds)
            heal = lambda: process.skew(0)  # noqa: E731
        else:
            raise ValueError(kind)
        self.faults.append(fault)
        say(f"FAULT #{len(self.faults)} {kind}: {fault.target}; heal in {hold:.1f} s (connections {fault.placement})")
        await asyncio.sleep(hold)
        heal()
        started = time.monotonic()
        recovered = await asyncio.to_thread(self.wait_recovered, RECOVERY_BOUND_S)
        fault.recovered_s = time.monotonic() - started
        fault.acked_during = self.acked() - acked_before
        if not recovered:
            self.recovery_failures.append(f"#{len(self.faults)} {kind} {fault.target}: {recovered}")
        say(f"        healed; {'recovered' if recovered else 'NOT recovered'} in {fault.recovered_s:.1f} s "
            f"({fault.acked_during} acks during the fault and recovery)")

    def wait_recovered(self, timeout: float) -> bool:
        """Every process ready again, a meta leader on every node, every replica current."""
        c = self.system
        return wait_sync(lambda: all(p.running and p.probe() for p in c.processes)
                         and meta_leader(c) and converged(replica_states(c)), timeout, 0.5)

    async def wait_pending_acked(self, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        while (pending := [c.username for c in self.clients if c.pending is not None]) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        return pending

    async def wait_caught_up(self, finals: dict[str, int], timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            behind = [f"{c.username}:{room[:8]} {c.last_seen[room]}/{finals[room]}"
                      for c in self.clients for room in c.rooms if c.last_seen[room] < finals[room]]
            if not behind or time.monotonic() > deadline:
                return behind
            await asyncio.sleep(0.1)


# --- final checks beyond chaos.py's ------------------------------------------------------------------------------

async def probe_send(gateway: NetGateway, room: str) -> str:
    """One member joins `room` through `gateway`, sends, and must get the ack and the message back."""
    async with connect(gateway.ws_url(f"probe-{gateway.name}"), open_timeout=5, ping_interval=None) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "connected"
        await ws.send(json.dumps({"type": "join", "room_id": room}))
        cmid = f"probe-{gateway.name}-{uuid.uuid4().hex[:6]}"
        sent = False
        got_ack = got_message = False
        deadline = time.monotonic() + 20
        while not (got_ack and got_message):
            frame = json.loads(await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic())))
            if frame["type"] == "joined" and not sent:
                sent = True
                await ws.send(json.dumps({"type": "message", "room_id": room, "client_msg_id": cmid, "content": "x"}))
            elif frame["type"] == "ack" and frame.get("client_msg_id") == cmid:
                got_ack = True
            elif frame["type"] == "message" and frame.get("client_msg_id") == cmid:
                got_message = True
            elif frame["type"] == "error":
                return f"{gateway.name}: {frame}"
    return ""


async def services_serving(h: Harness) -> dict[str, Any]:
    c = h.system
    health = {s.name: await asyncio.to_thread(s.health) for s in c.services}
    pings = {s.name: await asyncio.to_thread(s.srv_ping) for s in [*c.chat_services, *c.broadcasters]}
    response = await asyncio.to_thread(requests.post, c.gateways[0].base_url + "/api/v1/rooms",
                                       json={"name": f"probe-{uuid.uuid4().hex[:6]}"}, timeout=10)
    sends = {}
    if response.status_code == 201:
        room = response.json()["id"]
        for gateway in c.gateways:
            try:
                sends[gateway.name] = await probe_send(gateway, room) or "ok"
            except Exception as error:  # noqa: BLE001 — reported
                sends[gateway.name] = f"{type(error).__name__}: {error}"
    else:
        sends["room"] = f"create: {response.status_code}"
    ok = (all(v == 200 for v in health.values()) and all(pings.values()) and sends
          and all(v == "ok" for v in sends.values()))
    return {"ok": bool(ok), "health": health, "srv_ping": pings, "send": sends}


def fault_at(h: Harness, at: float) -> str:
    """The fault that was held or recovering at run time `at`, for the problems' context."""
    for number, fault in reversed(list(enumerate(h.faults, 1))):
        if fault.at <= at:
            end = fault.at + fault.held_s + fault.recovered_s
            return f"fault #{number} {fault.kind} {fault.target}" + ("" if at <= end else f" (ended at {end:.1f}s)")
    return "before the first fault"


def wrong_acks(h: Harness, stored: list[dict[str, Any]]) -> list[str]:
    """When each ack that differs from the stored message came, and what fault was under way then."""
    by_cmid = {m.get("client_msg_id"): m for m in stored}
    out = []
    for client in h.clients:
        for ack in client.acks:
            message = by_cmid.get(ack.cmid)
            if message is not None and (message["seq"], message["message_id"]) != (ack.seq, ack.message_id):
                out.append(f"ack_context: {ack.cmid} acked at {ack.at:.1f}s after {ack.latency:.1f}s as seq {ack.seq}, "
                           f"stored as seq {message['seq']}; {fault_at(h, ack.at)}")
    return out


async def presence_settle(h: Harness) -> dict[str, Any]:
    started = time.monotonic()
    while True:
        try:
            members = await members_of(h.system.admin_urls, h.rooms)
        except Exception:  # noqa: BLE001 — a node still catching up: try again within the bound
            members = {room: set() for room in h.rooms}
        connected = all(c.joined.is_set() for c in h.clients)
        expected = {room: {c.user_id for c in h.clients if room in c.rooms} for room in h.rooms}
        stale = {room: members[room] - expected[room] for room in h.rooms}
        missing = {room: expected[room] - members[room] for room in h.rooms}
        n_stale, n_missing = sum(map(len, stale.values())), sum(map(len, missing.values()))
        took = time.monotonic() - started
        if (connected and not n_stale and not n_missing) or took > PRESENCE_BOUND_S:
            return {"stale": n_stale, "missing": n_missing, "settled_in_s": round(took, 1),
                    "detail": [f"stale {r[:8]}:{u}" for r, us in stale.items() for u in us]
                    + [f"missing {r[:8]}:{u}" for r, us in missing.items() for u in us]}
        await asyncio.sleep(0.5)


# --- main ------------------------------------------------------------------------------------------------------

async def run(args: argparse.Namespace, base: Path, net: Network) -> dict[str, Any]:
    say(f"jepsen: seed {args.seed}, {args.duration:.0f} s, scenarios {','.join(args.scenarios)}, {args.clients} "
        f"clients in {args.rooms} rooms{', sync_interval: always' if args.sync_always else ''}; logs in {base}")
    cluster = make_cluster(base, args, net)
    h = Harness(args, cluster, net)
    result: dict[str, Any] = {"seed": args.seed, "duration_s": args.duration, "scenarios": args.scenarios,
                              "clients": args.clients, "rooms": args.rooms, "sync_always": args.sync_always,
                              "log_dir": str(base)}
    try:
        await asyncio.to_thread(start_cluster, cluster)
        say("cluster up: " + ", ".join(f"{p.name} pid {p.pid}" for p in cluster.processes))
        await h.create_rooms()
        rng = random.Random(args.seed)
        for index in range(args.clients):
            h.clients.append(JepsenClient(h, index, rng.sample(h.rooms, k=min(2, len(h.rooms)))))
        for client in h.clients:
            client.task = asyncio.create_task(client.run())
        await asyncio.wait_for(asyncio.gather(*(c.joined.wait() for c in h.clients)), 60)
        say(f"{len(h.clients)} clients joined; traffic and nemesis start")
        until = now() + args.duration
        nemesis = asyncio.create_task(h.nemesis(until))
        while now() < until and not nemesis.done():
            await asyncio.sleep(1)
        await nemesis
        net.heal()
        say(f"nemesis done ({len(h.faults)} faults, {h.acked()} acked); clients finish their pending sends")
        h.stop_sending = True
        pending = await h.wait_pending_acked(90)
        stored = await read_stream(cluster.admin_urls)
        finals = {room: 0 for room in h.rooms}
        for message in stored:
            finals[message["room_id"]] = max(finals.get(message["room_id"], 0), message["seq"])
        behind = await h.wait_caught_up(finals, 60)
        started = time.monotonic()
        replicas_equal = await asyncio.to_thread(wait_sync, lambda: converged(replica_states(cluster)),
                                                 CONVERGE_BOUND_S, 0.5)
        converge_s = time.monotonic() - started
        states = replica_states(cluster)
        presence = await presence_settle(h)
        stored = await read_stream(cluster.admin_urls)
        histories = {room: await asyncio.to_thread(rest_history, cluster.gateways[0].base_url, room) for room in h.rooms}
        verdict = check(h, stored, histories, presence)
        serving = await services_serving(h)
        verdict["problems"] += wrong_acks(h, stored)
        counts, bad = verdict["counts"], verdict["bad"]
        if pending or behind:
            counts["not_settled"] += len(pending) + len(behind)
            bad["not_settled"] = counts["not_settled"]
        if not replicas_equal:
            bad["replicas_differ"] = 1
        if not serving["ok"]:
            bad["not_serving"] = 1
        if h.recovery_failures:
            bad["not_recovered"] = len(h.recovery_failures)
        errors: Counter[str] = Counter()
        for client in h.clients:
            errors.update(client.errors)
        result.update({
            "counts": dict(counts), "bad": bad, "problems": verdict["problems"] + h.recovery_failures,
            "faults": dict(Counter(f.kind for f in h.faults)), "fault_log": [f.__dict__ for f in h.faults],
            "replicas": {"equal": replicas_equal, "converged_in_s": round(converge_s, 1), "last_seq": states},
            "presence": {k: v for k, v in presence.items() if k != "detail"} | {"detail": presence["detail"][:10]},
            "serving": serving, "client_errors": dict(errors),
            "connections": sum(c.connections for c in h.clients),
            "failovers": sum(c.failovers for c in h.clients),
            "retries": sum(c.retries for c in h.clients),
            "slowest_acks_ms": sorted((round(a.latency * 1000) for c in h.clients for a in c.acks), reverse=True)[:5],
            "not_acked_at_end": pending, "behind_at_end": behind[:10],
        })
        result["pass"] = not bad and counts["acked"] > 0 and len(h.faults) > 0
    finally:
        h.finished = True
        for client in h.clients:
            if client.task is not None:
                client.task.cancel()
        await asyncio.gather(*(c.task for c in h.clients if c.task is not None), return_exceptions=True)
        for client in h.clients:
            if client.ws is not None:
                client.ws.transport.abort()
        await asyncio.to_thread(cluster.stop)
    return result


def report(result: dict[str, Any]) -> None:
    c = result.get("counts", {})
    lines = ["", "===== jepsen result =====",
             f"seed {result['seed']}, {result['duration_s']:.0f} s, scenarios {','.join(result['scenarios'])}"
             f"{', sync_interval: always' if result['sync_always'] else ''}"]
    for fault in result.get("fault_log", []):
        lines.append(f"  fault at {fault['at']:7.1f}s {fault['kind']:<18} {fault['target']:<48} held "
                     f"{fault['held_s']:4.1f} s, recovered in {fault['recovered_s']:5.1f} s, {fault['acked_during']} acks; "
                     f"{fault['placement']}")
    lines += [
        f"acknowledged / stored / exactly once:  {c.get('acked', 0)} / {c.get('stored_messages', 0)} / "
        f"{c.get('acked_stored_exactly_once', 0)}",
        f"acked not stored / stored twice / stored never acked: {c.get('acked_not_stored', 0)} / "
        f"{c.get('stored_more_than_once', 0)} / {c.get('stored_not_acked', 0)}",
        f"member×room streams exact:             {c.get('member_rooms_exact', 0)} of {c.get('member_rooms', 0)} "
        f"({c.get('deliveries', 0)} deliveries)",
        f"rooms whose REST history = stream:     {c.get('history_rooms_equal', 0)} of {result['rooms']}",
        f"connections / failovers / retries:     {result.get('connections', 0)} / {result.get('failovers', 0)} / "
        f"{result.get('retries', 0)}; client errors {result.get('client_errors', {})}",
        f"slowest acks (ms):                     {result.get('slowest_acks_ms', [])}",
        f"replicas equal after healing:          {result.get('replicas', {}).get('equal')} (in "
        f"{result.get('replicas', {}).get('converged_in_s')} s, bound {CONVERGE_BOUND_S:.0f} s)",
        f"presence after healing:                {result.get('presence', {})} (bound {PRESENCE_BOUND_S:.0f} s)",
        f"services serving after healing:        {result.get('serving', {})}",
    ]
    lines += [f"  PROBLEM {p}" for p in result.get("problems", [])]
    lines.append(f"VERDICT: {'PASS' if result.get('pass') else 'FAIL'}"
                 + ("" if result.get("pass") else f" ({result.get('bad') or result.get('error')})"))
    print("\n".join(lines), flush=True)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/jepsen", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=None, help="RNG seed of the nemesis and clients (printed)")
    parser.add_argument("--duration", type=float, default=180, help="seconds of traffic under the nemesis [180]")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated fault kinds [all: {','.join(SCENARIOS)}]")
    parser.add_argument("--sync-always", action="store_true", help="nats-server with jetstream { sync_interval: always }")
    parser.add_argument("--clients", type=int, default=8, help="WebSocket clients [8]")
    parser.add_argument("--rooms", type=int, default=3, help="rooms (each client joins 2) [3]")
    parser.add_argument("--send-interval", type=float, default=0.1, help="mean pause after each ack per client [0.1]")
    parser.add_argument("--nats-server", default=None, help="nats-server binary [.data/nats-server-2.15.1]")
    parser.add_argument("--json", default=None, help="also write the result as JSON to this file")
    parser.add_argument("--keep-logs", default=None, help="directory for the process logs [a temp dir]")
    parser.add_argument("--prefix", default="jn", help="prefix of the network namespaces [jn]")
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 1_000_000)
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown or not args.scenarios:
        parser.error(f"unknown scenarios {unknown}; choose from {','.join(SCENARIOS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if os.geteuid() != 0:
        print("scripts/jepsen needs root (network namespaces)", file=sys.stderr)
        return 2
    base = Path(args.keep_logs).resolve() if args.keep_logs else Path(tempfile.mkdtemp(prefix="nats-chat-jepsen-"))
    base.mkdir(parents=True, exist_ok=True)
    net = Network(prefix=args.prefix)
    try:
        net.build(HOSTS)
        enter(net["client"].namespace)  # this process's sockets (clients, probes, checker) live on the client host
        result = asyncio.run(asyncio.wait_for(run(args, base, net), args.duration + 900))
    except (Exception, asyncio.TimeoutError) as error:  # noqa: BLE001 — reported as a FAIL with the reason
        result = {"seed": args.seed, "duration_s": args.duration, "scenarios": args.scenarios, "rooms": args.rooms,
                  "sync_always": args.sync_always, "pass": False, "error": f"{type(error).__name__}: {error}",
                  "log_dir": str(base)}
    finally:
        net.teardown()
        system_module.cleanup_binaries()
    report(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    if not result.get("pass"):
        print(f"process logs kept in {base} (replay with --seed {args.seed})", flush=True)
    return 0 if result.get("pass") else 1


if __name__ == "__main__":
    sys.exit(main())
