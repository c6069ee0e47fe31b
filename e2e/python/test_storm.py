"""Reconnect storm (issue 9): 5,000 WebSocket clients on two gateways drop at once (TCP abort, as in a
network blip) and come back with jitter, each re-joining its room with `since`, while messages keep
being sent into the rooms.

Asserted: every client is back (connected and joined) within the deadline; over its two connections it
got every message of its room exactly once and in `seq` order; no client got an error frame (in
particular no `unavailable`: no chat-service request timed out) and the gateways counted no
`unavailable` error; afterwards each room's members are exactly the live connections (the dropped
ones left).

STORM_CLIENTS (default 5000) and STORM_JITTER_S (default 30; with 10 s the debug-built chat-services
fall behind on the 5,000 leaves + 5,000 joins and requests time out) change the size; the open-file limit of
this process is raised to what it needs (the hard limit here is 20,000)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import resource
import time
import uuid
from typing import Any

import nats
import pytest
import requests

from chatclient import Client, unique
from system import System, metric_value

CLIENTS = int(os.environ.get("STORM_CLIENTS", "5000"))
JITTER = float(os.environ.get("STORM_JITTER_S", "30"))
PER_ROOM = 10
ROOMS = max(1, CLIENTS // PER_ROOM)
ROOMS_PER_SENDER = 20
FAST = {"RATE_LIMIT_PER_SEC": "100000", "RATE_LIMIT_BURST": "100000", "MAX_ROOMS_PER_CONNECTION": str(ROOMS_PER_SENDER)}


def raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft >= wanted, f"open-file limit {soft} < {wanted} needed for {CLIENTS} clients"


@pytest.fixture
def storm_system(tmp_path_factory):
    system = System(tmp_path_factory.mktemp("storm"))
    try:
        system.start(chat_services=2, broadcasters=1, gateways=2, gateway_env=FAST)
        yield system
    finally:
        system.stop()


async def gather_limited(coros, limit: int) -> list[Any]:
    semaphore = asyncio.Semaphore(limit)

    async def one(coro):
        async with semaphore:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))


def errors_unavailable(system: System) -> float:
    return sum(metric_value(g.metrics(), "gateway_errors_total", 'code="unavailable"') for g in system.gateways)


def test_reconnect_storm_all_back_and_caught_up(storm_system):
    system = storm_system
    raise_fd_limit(CLIENTS + 2000)
    gateways = system.gateways
    rooms = [requests.post(gateways[0].base_url + "/api/v1/rooms", json={"name": unique("storm")}, timeout=10).json()["id"]
             for _ in range(ROOMS)]
    room_of = {n: rooms[n % ROOMS] for n in range(CLIENTS)}
    unavailable_before = errors_unavailable(system)
    timings: dict[str, float] = {}

    async def body():
        started = time.monotonic()
        # Senders: one connection per 20 rooms, never dropped.
        senders = []
        for k in range(0, ROOMS, ROOMS_PER_SENDER):
            sender = await Client.open(gateways[1].ws_url(f"sender{k}"), f"sender{k}")
            for room in rooms[k:k + ROOMS_PER_SENDER]:
                await sender.join(room, timeout=30)
            senders.append((sender, rooms[k:k + ROOMS_PER_SENDER]))

        async def send_round(tag: str) -> None:
            async def one(sender: Client, room: str) -> None:
                cmid = f"{tag}-{uuid.uuid4().hex[:10]}"
                reply = await sender.send_message(f"{tag} to {room[:8]}", room_id=room, client_msg_id=cmid, timeout=30)
                assert reply["type"] == "ack", f"a send during the storm failed: {reply}"
            await gather_limited([one(s, r) for s, rs in senders for r in rs], 50)

        async def open_and_join(n: int, since: int | None, gateway) -> Client:
            client = await Client.open(gateway.ws_url(f"storm{n}"), f"storm{n}")
            await client.join(room_of[n], since=since, timeout=30)
            return client

        firsts = await gather_limited([open_and_join(n, None, gateways[n % 2]) for n in range(CLIENTS)], 200)
        timings["connect+join"] = time.monotonic() - started
        await send_round("before")
        for client in firsts:
            await client.wait_messages(room_of[int(client.label[5:])], 1, timeout=30)
        # The storm: every client's TCP connection is aborted at once ...
        for client in firsts:
            client.abort()
        storm_start = time.monotonic()
        rng = random.Random(CLIENTS)

        async def come_back(n: int) -> Client:
            await asyncio.sleep(rng.uniform(0, JITTER))
            since = max((m["seq"] for m in firsts[n].messages(room_of[n])), default=0)
            deadline = time.monotonic() + JITTER + 60
            while True:
                try:
                    return await open_and_join(n, since, rng.choice(gateways))
                except (OSError, AssertionError, asyncio.TimeoutError) as error:
                    assert time.monotonic() < deadline, f"storm{n} not back: {error}"
                    await asyncio.sleep(0.2)

        # ... and comes back with jitter while messages keep coming.
        returning = asyncio.gather(*(come_back(n) for n in range(CLIENTS)))
        await asyncio.sleep(JITTER / 3)
        await send_round("during")
        seconds = await returning
        timings["all back"] = time.monotonic() - storm_start
        await send_round("after")
        expected = {room: 3 for room in rooms}  # seq 1..3 in every room

        # Every client: seq 1..3 exactly once over its two connections, in order; no error frame.
        deadline = time.monotonic() + 60
        for n, (first, second) in enumerate(zip(firsts, seconds)):
            room = room_of[n]
            while True:
                seqs = [m["seq"] for c in (first, second) for m in c.messages(room)]
                if len(seqs) >= expected[room] or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            assert seqs == list(range(1, expected[room] + 1)), f"storm{n}: seqs {seqs} (since-resume lost or doubled)"
        errors = [f.data for c in [*firsts, *seconds] for f in c.frames if f.data.get("type") == "error"]
        assert not errors, f"{len(errors)} error frames, e.g. {errors[:3]}"
        for sender, _ in senders:
            assert not [f for f in sender.frames if f.data.get("type") == "error"]

        # Presence: the dropped connections left; every room lists exactly its 10 live connections + sender.
        nc = await nats.connect(system.nats.url)
        try:
            live = {room: set() for room in rooms}
            for n, client in enumerate(seconds):
                live[room_of[n]].add(client.user_id)
            sender_of = {room: s.user_id for s, rs in senders for room in rs}
            presence_deadline = time.monotonic() + 30
            for room in rooms:
                while True:
                    reply = await nc.request("chat.svc.room.members", json.dumps({"room_id": room}).encode(), timeout=10)
                    members = {m["user_id"] for m in json.loads(reply.data)["members"]}
                    if members == live[room] | {sender_of[room]} or time.monotonic() > presence_deadline:
                        break
                    await asyncio.sleep(0.2)
                assert members == live[room] | {sender_of[room]}, (
                    f"room {room}: {len(members - live[room]) - 1} stale, {len(live[room] - members)} missing")
        finally:
            await nc.close()
        await gather_limited([c.close() for c in seconds], 500)
        for sender, _ in senders:
            await sender.close()

    asyncio.run(asyncio.wait_for(body(), 600))
    print(f"storm of {CLIENTS} clients, jitter {JITTER} s: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    assert errors_unavailable(system) == unavailable_before, "a gateway answered `unavailable` (chat-service timeout)"
    for process in system.processes:
        process.assert_running()
