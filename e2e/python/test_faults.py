"""Misbehaving clients and lost requests (issue 9), against the real binaries:

- a half-open connection (the client vanishes without FIN or RST: a proxy that stops forwarding both
  ways) is found by the gateway's ping timeout and closed; the room gets `user_left` and the member is
  gone from the member list;
- a disconnect while no chat-service is reachable still removes the member once one is back (the
  gateway retries the leave; it used to drop it, leaving the member listed for as long as the gateway
  lived);
- presence anti-entropy: a member record the gateway does not hold (planted, or brought back by
  nats-server 2.15.1 after two crashes: it resurrects purged KV entries) is removed with `user_left`;
- 10 % of a room's clients stop reading: each is disconnected and counted in
  `gateway_slow_client_disconnects_total`; when it reads again (within the gateway's 10 s close
  timeout) it gets what was in flight, then the close frame 1008, then the end of the connection; the
  readers get every message exactly once and in order, and the gateway's memory stays bounded.
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
import uuid
from pathlib import Path

import nats

from chatclient import run, Client, create_room
from system import NEWER_NATS_SERVER, REPO_ROOT, System, http_get
from proxy import TcpProxy
from test_gateway import RawWebSocket

FAST = {"RATE_LIMIT_PER_SEC": "100000", "RATE_LIMIT_BURST": "100000"}



def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


async def member_ids(url: str, room: str) -> set[str]:
    nc = await nats.connect(url, connect_timeout=2)
    try:
        reply = await nc.request("chat.svc.room.members", json.dumps({"room_id": room}).encode(), timeout=5)
        return {m["user_id"] for m in json.loads(reply.data)["members"]}
    finally:
        await nc.close()


async def witness_and_member(gateway, room: str, name: str) -> tuple[Client, Client]:
    """A witness and a member `name` in `room`, once the witness has seen the member join."""
    witness = await Client.joined(gateway, "witness", room)
    member = await Client.joined(gateway, name, room)
    await witness.wait_for("user_joined", user_id=member.user_id)
    return witness, member


def test_half_open_connection_is_closed_by_ping_timeout_and_the_room_told(make_system):
    system = make_system(gateway_env={"PING_INTERVAL_MS": "500"})
    gateway = system.gateway
    room = create_room(gateway)["id"]
    proxy = TcpProxy(gateway.port)

    async def body():
        witness = await Client.joined(gateway, "witness", room)
        ghost = await Client.open(f"ws://127.0.0.1:{proxy.port}/ws?username=ghost", "ghost", ping_interval=None)
        await ghost.join(room)
        await witness.wait_for("user_joined", user_id=ghost.user_id)
        assert ghost.user_id in await member_ids(system.nats.url, room)
        connections_before = gateway.metric("gateway_connections")

        proxy.freeze()  # no FIN, no RST: the gateway's pings just go unanswered
        frozen_at = time.monotonic()
        left = await witness.wait_for("user_left", timeout=10, user_id=ghost.user_id)
        detected = time.monotonic() - frozen_at
        assert left["room_id"] == room
        assert detected < 5.0, f"half-open connection found only after {detected:.1f} s with PING_INTERVAL_MS=500"
        assert ghost.user_id not in await member_ids(system.nats.url, room)
        assert gateway.metric("gateway_connections") == connections_before - 1
        # The witness, which answers pings, is still there and still served.
        assert (await witness.send_message("still here"))["type"] == "ack"
        assert witness.user_id in await member_ids(system.nats.url, room)
        print(f"half-open connection closed and user_left sent {detected:.2f} s after it froze")
        await witness.close()
        ghost.abort()

    try:
        run(body())
    finally:
        proxy.close()


def test_a_disconnect_while_no_chat_service_answers_still_removes_the_member(make_system):
    system = make_system(gateway_env={"REQUEST_TIMEOUT_MS": "1000"})
    gateway, service = system.gateway, system.chat_service
    room = create_room(gateway)["id"]

    async def body():
        witness, leaver = await witness_and_member(gateway, room, "leaver")
        retries_before = gateway.metric("gateway_leave_retries_total")
        await service.akill()              # no chat-service: the leave of the disconnect cannot be served
        leaver.abort()
        # The gateway's first leave attempts fail (and are to be retried) while no chat-service runs.
        deadline = time.monotonic() + 15
        while gateway.metric("gateway_leave_retries_total") < retries_before + 2:
            assert time.monotonic() < deadline, "the gateway did not retry the leave"
            await asyncio.sleep(0.05)
        await service.arestart()
        left = await witness.wait_for("user_left", timeout=20, user_id=leaver.user_id)
        assert left["room_id"] == room
        assert await member_ids(system.nats.url, room) == {witness.user_id}
        await witness.close()

    run(body())


async def member_record(url: str, room: str, user: str) -> dict | None:
    nc = await nats.connect(url, connect_timeout=2)
    try:
        kv = await nc.jetstream().key_value("chat_members")
        try:
            entry = await kv.get(f"{room}.{user}")
        except nats.js.errors.KeyNotFoundError:
            return None
        return json.loads(entry.value) if entry.value else None
    finally:
        await nc.close()


def test_a_member_record_the_gateway_does_not_hold_is_removed(make_system):
    """The gateway's periodic presence sync: a record naming it for a user it does not hold (a lost
    leave, a resurrected entry) is removed and the room told."""
    system = make_system(gateway_env={"PRESENCE_SYNC_INTERVAL_MS": "500"})
    gateway = system.gateway
    room = create_room(gateway)["id"]

    async def body():
        witness = await Client.joined(gateway, "witness", room)
        record = await member_record(system.nats.url, room, witness.user_id)
        assert record is not None
        ghost = str(uuid.uuid4())
        planted = {**record, "user_id": ghost, "username": "ghost",
                   "joined_at_ms": record["joined_at_ms"] - 60_000}
        nc = await nats.connect(system.nats.url, connect_timeout=2)
        kv = await nc.jetstream().key_value("chat_members")
        await kv.put(f"{room}.{ghost}", json.dumps(planted).encode())
        await nc.close()
        assert ghost in await member_ids(system.nats.url, room)
        # Judged by when nats-server stored the record: removed once it is older than the sync grace
        # (CHAT_PRESENCE_SYNC_GRACE_MS, 10 s), at the next statement.
        left = await witness.wait_for("user_left", timeout=25, user_id=ghost)
        assert left["room_id"] == room
        assert await member_ids(system.nats.url, room) == {witness.user_id}
        # The witness itself (held, and its record young) stays through many syncs.
        assert (await witness.send_message("still here"))["type"] == "ack"
        await witness.close()

    run(body())


def test_a_statement_longer_than_one_request_goes_out_in_partitions(make_system):
    """`PRESENCE_SYNC_MAX_ENTRIES=1`: a gateway holding two users in a room and members in two rooms
    states them in partitions by leading hex digit. Stale records in the held room and in a room it
    does not hold are removed; the members it holds stay, although their records are made old enough
    to be removed if a partition left them out."""
    # ~33 requests a round (16+ partitions of the rooms, 16+ of one room's users), each a KV scan.
    system = make_system(gateway_env={"PRESENCE_SYNC_INTERVAL_MS": "1000", "PRESENCE_SYNC_MAX_ENTRIES": "1"})
    gateway = system.gateway
    room, other, unheld = (create_room(gateway)["id"] for _ in range(3))

    async def body():
        witness, member = await witness_and_member(gateway, room, "member")
        await member.join(other)
        nc = await nats.connect(system.nats.url, connect_timeout=2)
        kv = await nc.jetstream().key_value("chat_members")
        template = json.loads((await kv.get(f"{room}.{witness.user_id}")).value)

        async def members_of(of_room: str) -> set[str]:
            reply = await nc.request("chat.svc.room.members", json.dumps({"room_id": of_room}).encode(), timeout=10)
            return {m["user_id"] for m in json.loads(reply.data)["members"]}

        async def plant_and_wait_gone(ghost_room: str, ghost: str):
            planted = {**template, "user_id": ghost, "username": "ghost", "joined_at_ms": template["joined_at_ms"] - 60_000}
            await kv.put(f"{ghost_room}.{ghost}", json.dumps(planted).encode())
            deadline = time.monotonic() + 15
            while ghost in await members_of(ghost_room):
                assert time.monotonic() < deadline, f"the stale record {ghost_room}.{ghost} stayed"
                await asyncio.sleep(0.1)

        first = str(uuid.uuid4())
        await plant_and_wait_gone(room, first)
        await witness.wait_for("user_left", timeout=15, user_id=first)
        await plant_and_wait_gone(unheld, str(uuid.uuid4()))
        # Rounds of statements have run since the joins. Now the held records get older than the sync
        # grace: only being listed in their partition keeps them.
        for held_room, user in [(room, witness.user_id), (room, member.user_id), (other, member.user_id)]:
            record = json.loads((await kv.get(f"{held_room}.{user}")).value)
            await kv.put(f"{held_room}.{user}", json.dumps({**record, "joined_at_ms": record["joined_at_ms"] - 60_000}).encode())
        # Two more ghosts in the same partitions (same 8 leading digits; the same unheld room), each
        # removed by a later round: between the two removals every partition was stated again.
        for _ in range(2):
            await plant_and_wait_gone(room, first[:8] + str(uuid.uuid4())[8:])
            await plant_and_wait_gone(unheld, str(uuid.uuid4()))
        assert await members_of(room) == {witness.user_id, member.user_id}
        assert await members_of(other) == {member.user_id}
        await nc.close()
        await witness.close()
        await member.close()

    run(body())


def test_members_brought_back_by_a_second_nats_crash_are_removed_again(tmp_path):
    """nats-server 2.15.1 (also 2.12; not 2.9 or 2.10) brings KV entries back that were written before
    it crashed once and purged after some later write, when it crashes again. A member who left in between is listed again; the
    gateway's presence sync after the reconnect removes it (`PRESENCE_SYNC_INTERVAL_MS=0`: only the
    reconnect triggers it here)."""
    system = System(tmp_path)
    try:
        system.start_nats(binary=str(NEWER_NATS_SERVER))
        system.start(chat_env={"CHAT_PRESENCE_SYNC_GRACE_MS": "1000"}, gateway_env={"PRESENCE_SYNC_INTERVAL_MS": "0"})
        gateway = system.gateway
        room = create_room(gateway)["id"]

        async def wait_reconnected():
            deadline = time.monotonic() + 20
            while gateway.metric("gateway_nats_connected") != 1 or not await asyncio.to_thread(system.chat_service.probe):
                assert time.monotonic() < deadline, "the services did not reconnect to nats-server"
                await asyncio.sleep(0.1)

        async def crash_nats():
            await system.nats.akill()
            await system.nats.arestart()
            await wait_reconnected()

        async def body():
            witness, leaver = await witness_and_member(gateway, room, "leaver")
            await crash_nats()                                  # crash 1: the leaver's record predates it
            newcomer = await Client.connect(gateway, "newcomer")  # a write after crash 1 (needed to trigger it)
            await newcomer.join(room)
            await witness.wait_for("user_joined", user_id=newcomer.user_id)
            await leaver.close()
            await witness.wait_for("user_left", timeout=10, user_id=leaver.user_id)
            assert await member_ids(system.nats.url, room) == {witness.user_id, newcomer.user_id}
            await crash_nats()                                  # crash 2: 2.15.1 brings the record back
            deadline = time.monotonic() + 20
            while (members := await member_ids(system.nats.url, room)) != {witness.user_id, newcomer.user_id}:
                assert time.monotonic() < deadline, f"stale members after the second crash: {members}"
                await asyncio.sleep(0.1)
            # The record did come back (the fault happened): the sync's removal told the room again.
            again = await witness.wait_for("user_left", timeout=10, user_id=leaver.user_id)
            assert again["room_id"] == room
            print(f"after the second crash the leaver was listed again and removed with {again}")
            assert (await witness.send_message("after two crashes"))["type"] == "ack"
            await witness.close()
            await newcomer.close()

        run(body())
    finally:
        system.stop()


def test_ten_percent_of_clients_stop_reading(make_system):
    readers_n, sloths_n = 27, 3  # 10 % of the 30 members do not read
    system = make_system(gateway_env={**FAST, "OUTBOUND_QUEUE_LIMIT": "64"})
    gateway = system.gateway
    room = create_room(gateway)["id"]
    slow_before = gateway.metric("gateway_slow_client_disconnects_total")
    content = "z" * 3000

    sloths = []
    for n in range(sloths_n):
        sloth = RawWebSocket(gateway.port, f"/ws?username=sloth{n}")
        sloth.send_text(json.dumps({"type": "join", "room_id": room}))
        sloth.read_until(b'"type":"joined"')
        sloths.append(sloth)  # from here on it never reads

    async def body():
        readers = [await Client.connect(gateway, f"reader{n}") for n in range(readers_n)]
        for reader in readers:
            await reader.join(room)
        sender = readers[0]
        rss_start = rss_kib(gateway.pid)
        rss_peak = rss_start
        acks = []
        deadline = time.monotonic() + 90
        while gateway.metric("gateway_slow_client_disconnects_total") < slow_before + sloths_n or len(acks) < 300:
            ack = await sender.send_message(content)
            assert ack["type"] == "ack", ack
            acks.append(ack)
            if len(acks) % 8 == 0:
                # The readers keep up (at most 8 frames behind, well under the 64-frame limit) even when
                # this one Python process is starved; only the non-readers fall behind.
                await asyncio.gather(*(reader.wait_messages(room, len(acks), timeout=30) for reader in readers))
            if len(acks) % 25 == 0:
                rss_peak = max(rss_peak, rss_kib(gateway.pid))
            assert time.monotonic() < deadline, (
                f"after {len(acks)} messages only {gateway.metric('gateway_slow_client_disconnects_total') - slow_before:.0f} "
                f"of {sloths_n} non-readers were disconnected")
        # The non-readers read again now: each must get the close frame 1008, then the end of the stream.
        drained = await asyncio.gather(*(asyncio.to_thread(sloth.drain_until_closed, 15) for sloth in sloths))
        want = [a["seq"] for a in acks]
        for reader in readers:
            got = await reader.wait_messages(room, len(acks), timeout=30)
            assert [m["seq"] for m in got] == want, f"{reader.label} lost, doubled or reordered messages"
        rss_peak = max(rss_peak, rss_kib(gateway.pid))
        for reader in readers:
            await reader.close()
        return len(acks), rss_start, rss_peak, drained

    sent, rss_start, rss_peak, drained = run(body())
    for sloth in sloths:
        sloth.close()
    close_codes = []
    for closed, tail in drained:
        assert closed, "a non-reader's connection is still open"
        assert b"\x88" in tail[-64:], f"no close frame before the end of the stream: {tail[-64:]!r}"
        frame = tail[tail.rindex(b"\x88"):]
        close_codes.append(struct.unpack("!H", frame[2:4])[0])
    assert close_codes == [1008] * sloths_n, close_codes
    assert gateway.metric("gateway_slow_client_disconnects_total") == slow_before + sloths_n
    growth_mib = (rss_peak - rss_start) / 1024
    print(f"{sloths_n} of {readers_n + sloths_n} clients stopped reading: all disconnected with 1008 after {sent} messages of 3 KB; gateway RSS {rss_start // 1024} -> peak "
          f"{rss_peak // 1024} MiB")
    # Bounded: 64 queued frames of 3 KB per non-reader, not everything that was sent.
    assert growth_mib < 64, f"gateway RSS grew by {growth_mib:.0f} MiB"


def test_requests_fail_over_from_a_chat_service_cut_off_from_nats(tmp_path):
    """A chat-service replica whose NATS connection stays up but passes nothing (a host cut off, a frozen
    VM) keeps receiving its share of the queue group's requests until nats-server closes it. With
    deploy/nats-server.conf's ping_interval 5 s and ping_max 2, nats-server 2.15 closes it within about
    15 s (with its defaults, 2 min × 2, requests still failed 45 s later; 2.9.10 never closed it); after
    that every request is answered by the other replica."""
    conf = tmp_path / "nats.conf"
    settings = [line for line in (REPO_ROOT / "deploy" / "nats-server.conf").read_text().splitlines()
                if line.startswith(("ping_interval", "ping_max"))]
    assert len(settings) == 2, "deploy/nats-server.conf sets ping_interval and ping_max"
    conf.write_text("\n".join(settings) + "\n")
    system = System(tmp_path / "system")
    proxy = None
    try:
        system.start_nats(extra_args=["-c", str(conf)], binary=NEWER_NATS_SERVER)
        system.add_chat_service()
        proxy = TcpProxy(system.nats.port)
        cut = system.add_chat_service({"NATS_URL": f"nats://127.0.0.1:{proxy.port}"})
        system.add_broadcaster()
        gateway = system.add_gateway({"REQUEST_TIMEOUT_MS": "2000"})
        room = create_room(gateway)["id"]
        proxy.freeze()  # no FIN, no RST: the replica's subscriptions stay registered, its replies never come
        frozen_at = time.monotonic()
        streak, failed = 0, 0
        while streak < 20:
            assert time.monotonic() - frozen_at < 40, f"requests still routed to the cut-off replica ({failed} failed)"
            status, _ = http_get(f"{gateway.base_url}/api/v1/rooms/{room}", timeout=5)
            streak, failed = (streak + 1, failed) if status == 200 else (0, failed + 1)
        settled = time.monotonic() - frozen_at
        print(f"failed over in {settled:.1f} s ({failed} requests answered 503 meanwhile)")
        assert settled < 25, f"failover took {settled:.1f} s"
        assert cut.running, "the cut-off replica itself keeps running (it reconnects once the link is back)"
    finally:
        if proxy is not None:
            proxy.close()
        system.stop()
