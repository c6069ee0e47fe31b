"""Black-box tests of the broadcaster (issue 4) through the whole system: real nats-server -js,
chat-service, broadcaster(s) and gateways, checked by WebSocket clients.

Each test gets its own system (they kill things). A `Sender` sends numbered messages with
client_msg_ids, retrying the same id on `unavailable` until acknowledged, so every message is stored
exactly once; the checker then proves that every client saw every message of each of its rooms
exactly once and in `seq` order (rooms are fresh, so that is seq 1..N), and nothing of other rooms.
"""

from __future__ import annotations

import asyncio
import json
import time

import nats

from chatclient import run, Client, Sender, check_exactly_once_in_order, create_room, expected_by_room, wait_all_delivered
from system import http_get, metric_value, nats_request_all

# Senders must not be rate limited here; the limiter has its own test.
FAST = {"RATE_LIMIT_PER_SEC": "100000", "RATE_LIMIT_BURST": "100000"}



async def settle_and_check(members: dict[Client, list[str]], sender: Sender, timeout: float = 20.0) -> None:
    expected = expected_by_room(sender.sent)
    await wait_all_delivered(members, expected, timeout=timeout)
    await asyncio.sleep(0.5)  # late duplicates would arrive now
    for client, rooms in members.items():
        check_exactly_once_in_order(client, expected, rooms)
        assert client.close_code is None, f"{client.label} was disconnected ({client.close_code})"


async def stream_last_seq(url: str) -> int:
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().stream_info("CHAT_EVENTS")
        return info.state.last_seq
    finally:
        await nc.close()


async def broadcaster_stats(url: str) -> list[dict]:
    replies = await nats_request_all(url, "$SRV.STATS.broadcaster", wait=0.5)
    return [reply for reply in replies if reply.get("type") == "io.nats.micro.v1.stats_response"]


def health(broadcaster) -> dict:
    status, body = http_get(broadcaster.base_url + "/health")
    data = json.loads(body)
    data["_status"] = status
    return data


async def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            value = await asyncio.to_thread(predicate)
            if value:
                return value
        except (OSError, ValueError, KeyError):
            pass
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout} s")
        await asyncio.sleep(interval)


def arrival(client: Client, room: str, seq: int) -> float:
    [at] = [f.at for f in client.frames
            if f.data.get("type") == "message" and f.data["room_id"] == room and f.data["seq"] == seq]
    return at


async def send_with_faults(talker: Client, rooms: list[str], count: int, at: tuple[int, ...], fault,
                           pause: float | None = None) -> Sender:
    """Sends `count` messages round-robin to `rooms`; after the n-th send for each n in `at`, starts `fault()`
    concurrently. Returns once every send is acknowledged and every fault has finished."""
    tasks: list[asyncio.Task] = []

    def on_sent(n: int):
        if n in at:
            tasks.append(asyncio.create_task(fault()))

    kwargs = {} if pause is None else {"pause": pause}
    sender = Sender(talker, rooms, count=count, on_sent=on_sent, **kwargs)
    await sender.run()
    await asyncio.gather(*tasks)
    return sender


async def two_rooms_on_two_gateways(g1, g2, r1: str, r2: str) -> dict[Client, list[str]]:
    """Members a (both rooms, gateway 1), b (r1, gateway 2), c (r2, gateway 2) and a talker in both rooms."""
    a = await Client.connect(g1, "a")
    b = await Client.connect(g2, "b")
    c = await Client.connect(g2, "c")
    talker = await Client.connect(g1, "talker")
    members = {a: [r1, r2], b: [r1], c: [r2], talker: [r1, r2]}
    for client, rooms in members.items():
        for room in rooms:
            await client.join(room)
    return members


def test_fan_out_to_subscribers_of_several_rooms(make_system):
    system = make_system(gateways=2, gateway_env=FAST)
    g1, g2 = system.gateways
    r1, r2, r3 = (create_room(g1)["id"] for _ in range(3))

    async def body():
        c1 = await Client.connect(g1, "c1")
        c2 = await Client.connect(g1, "c2")
        c3 = await Client.connect(g2, "c3")
        c4 = await Client.connect(g2, "c4")
        idle = await Client.connect(g2, "idle")  # in no room: gets no message
        members = {c1: [r1, r2], c2: [r2, r3], c3: [r1, r3], c4: [r1, r2, r3]}
        for client, rooms in members.items():
            for room in rooms:
                await client.join(room)
        talker = await Client.connect(g1, "talker")
        for room in (r1, r2, r3):
            await talker.join(room)

        sender = Sender(talker, [r1, r2, r3], count=60)
        await sender.run()
        await settle_and_check({**members, talker: [r1, r2, r3]}, sender)
        assert idle.messages() == []

        # Latency in a quiet room: each message reaches every member at once, not after a fetch expiry.
        delays = []
        for n in range(8):
            await asyncio.sleep(0.15)
            start = time.monotonic()
            ack = await talker.send_message(f"quiet {n}", room_id=r1)
            for client in (c1, c3, c4):
                await client.wait_messages(r1, ack["seq"])
                delays.append(arrival(client, r1, ack["seq"]) - start)
        delays.sort()
        assert delays[len(delays) // 2] < 0.1 and delays[-1] < 0.5, f"send → delivery delays {delays}"

        # Health, $SRV STATS and metrics of the broadcaster: everything delivered, no lag. (The clients
        # stay connected meanwhile: leaving would add events.)
        broadcaster = system.broadcaster
        last = 0

        def caught_up():
            nonlocal last
            last = asyncio.run(stream_last_seq(system.nats.url))
            report = health(broadcaster)
            return report["last_stream_seq"] == last and report

        report = await wait_until(caught_up, 10, "broadcaster caught up with the stream")
        assert report["_status"] == 200 and report["status"] == "ok" and report["role"] == "active", report
        assert report["instance"] == broadcaster.instance_id and report["nats"]["status"] == "connected", report
        assert report["delivered"] == last and report["lag"] == 0 and report["redelivered"] == 0, report
        stats = await broadcaster_stats(system.nats.url)
        assert len(stats) == 1 and stats[0]["name"] == "broadcaster", stats
        data = stats[0]["endpoints"][0]["data"]
        assert data == {"leader": 1, "delivered": last, "redelivered": 0, "lag": 0}, data
        status, text = await asyncio.to_thread(http_get, broadcaster.base_url + "/metrics")
        text = text.decode()
        assert status == 200 and metric_value(text, "broadcaster_events_delivered_total") == last, text[:2000]
        assert metric_value(text, "broadcaster_leader") == 1 and metric_value(text, "broadcaster_lag_events") == 0
        for client in (*members, talker, idle):
            await client.close()

    run(body())


def test_kill_9_mid_stream_then_restart_loses_and_duplicates_nothing(make_system):
    system = make_system(gateways=2, gateway_env=FAST)
    g1, g2 = system.gateways
    broadcaster = system.broadcaster
    r1, r2 = create_room(g1)["id"], create_room(g1)["id"]
    kills: list[float] = []

    async def body():
        members = await two_rooms_on_two_gateways(g1, g2, r1, r2)
        talker = next(client for client in members if client.label.startswith("talker"))

        async def kill_and_restart():
            await broadcaster.akill()  # kill -9 while the sender keeps going
            kills.append(time.monotonic())
            await asyncio.sleep(0.7)
            await broadcaster.arestart()

        sender = await send_with_faults(talker, [r1, r2], 200, (50, 130), kill_and_restart)
        acked_while_down = [s for s in sender.sent if any(k < s.acked_at < k + 0.7 for k in kills)]
        assert acked_while_down, "no message was sent while the broadcaster was down: the test proves nothing"
        await settle_and_check(members, sender)
        for client in members:
            await client.close()

    run(body())
    assert len(kills) == 2 and broadcaster.running
    assert broadcaster.starts == 3


def test_two_replicas_standby_takes_over_within_5s_under_load(make_system):
    system = make_system(broadcasters=2, gateways=1, gateway_env=FAST)
    gateway = system.gateway
    r1, r2 = create_room(gateway)["id"], create_room(gateway)["id"]

    async def body():
        roles = await wait_until(
            lambda: sorted(h["role"] for h in map(health, system.broadcasters)) == ["active", "standby"]
            and [health(b)["role"] for b in system.broadcasters], 10, "one active and one standby broadcaster")
        active = system.broadcasters[roles.index("active")]
        standby = system.broadcasters[roles.index("standby")]
        stats = await broadcaster_stats(system.nats.url)
        assert sorted(s["endpoints"][0]["data"]["leader"] for s in stats) == [0, 1], stats

        a = await Client.connect(gateway, "a")
        b = await Client.connect(gateway, "b")
        talker = await Client.connect(gateway, "talker")
        members = {a: [r1, r2], b: [r1], talker: [r1, r2]}
        for client, rooms in members.items():
            for room in rooms:
                await client.join(room)

        timeline: dict[str, float] = {}

        async def fail_over():
            await active.akill()
            timeline["killed"] = time.monotonic()
            await wait_until(lambda: health(standby)["role"] == "active", 10, "standby became active", 0.02)
            timeline["taken_over"] = time.monotonic()

        sender = await send_with_faults(talker, [r1, r2], 220, (60,), fail_over, pause=0.02)
        takeover = timeline["taken_over"] - timeline["killed"]
        assert takeover < 5.0, f"takeover took {takeover:.2f} s"
        await settle_and_check(members, sender)

        # Messages acknowledged while nobody was broadcasting waited at most for the takeover.
        worst = max(arrival(a, s.room_id, s.seq) - s.acked_at for s in sender.sent)
        assert worst < 5.5, f"a message waited {worst:.2f} s for delivery (takeover {takeover:.2f} s)"
        assert any(timeline["killed"] < s.acked_at < timeline["taken_over"] for s in sender.sent), \
            "no message was sent during the takeover: the test proves nothing"

        # The old active comes back as a standby; the new one keeps the lease.
        await active.arestart()
        await asyncio.sleep(1.5)
        assert health(active)["role"] == "standby" and health(standby)["role"] == "active"
        for client in members:
            await client.close()

    run(body())


def test_nats_server_restart_mid_stream(make_system):
    env = {**FAST, "REQUEST_TIMEOUT_MS": "2000"}
    system = make_system(gateways=2, gateway_env=env)
    g1, g2 = system.gateways
    server = system.nats
    r1, r2 = create_room(g1)["id"], create_room(g1)["id"]
    outage: dict[str, float] = {}

    async def body():
        members = await two_rooms_on_two_gateways(g1, g2, r1, r2)
        talker = next(client for client in members if client.label.startswith("talker"))

        async def restart_server():
            await asyncio.to_thread(server.stop)  # SIGTERM: a clean nats-server shutdown
            outage["down"] = time.monotonic()
            await wait_until(lambda: http_get(g1.base_url + "/health")[0] == 503, 5, "gateway /health 503 without NATS")
            await asyncio.sleep(0.5)
            await server.arestart()
            outage["up"] = time.monotonic()

        sender = await send_with_faults(talker, [r1, r2], 150, (50,), restart_server, pause=0.01)
        # Sends in flight when the server went away were retried or waited for the reconnect.
        assert any(s.started_at < outage["up"] and s.acked_at > outage["down"] for s in sender.sent), \
            "no message was sent during the outage: the test proves nothing"
        assert any(s.started_at > outage["up"] for s in sender.sent)
        await settle_and_check(members, sender, timeout=30)

        # Every service reconnected by itself.
        for gateway in (g1, g2):
            report = json.loads(http_get(gateway.base_url + "/health")[1])
            assert report["status"] == "ok" and report["nats"]["reconnects"] >= 1, report
        report = await wait_until(lambda: (h := health(system.broadcaster))["role"] == "active" and h, 10,
                                  "broadcaster active again")
        assert report["_status"] == 200 and report["lag"] == 0, report
        for process in system.processes:
            process.assert_running()
        for client in members:
            await client.close()
        # ... and still shuts down cleanly on SIGTERM.
        for process in [*system.gateways, *system.broadcasters, *system.chat_services]:
            assert await process.aterminate(timeout=10) == 0, f"{process.name} exit code"

    run(body())


def test_a_paused_active_that_wakes_up_after_the_takeover_does_not_break_delivery(make_system):
    """SIGSTOP the active broadcaster long enough for the standby to take over, then SIGCONT it: for a
    moment both believe they lead. Clients must still see every message exactly once and in order,
    and afterwards exactly one broadcaster is active."""
    system = make_system(broadcasters=2, gateways=1, gateway_env=FAST)
    gateway = system.gateway
    r1, r2 = create_room(gateway)["id"], create_room(gateway)["id"]

    async def body():
        roles = await wait_until(
            lambda: sorted(h["role"] for h in map(health, system.broadcasters)) == ["active", "standby"]
            and [health(b)["role"] for b in system.broadcasters], 10, "one active and one standby broadcaster")
        active = system.broadcasters[roles.index("active")]
        standby = system.broadcasters[roles.index("standby")]
        a = await Client.connect(gateway, "a")
        talker = await Client.connect(gateway, "talker")
        members = {a: [r1, r2], talker: [r1, r2]}
        for client, rooms in members.items():
            for room in rooms:
                await client.join(room)

        async def pause_through_takeover():
            active.pause()
            try:
                await wait_until(lambda: health(standby)["role"] == "active", 10, "standby took over")
            finally:
                active.resume()
                resumed.append(time.monotonic())

        resumed: list[float] = []
        sender = await send_with_faults(talker, [r1, r2], 400, (40,), pause_through_takeover, pause=0.02)
        assert sender.sent[-1].acked_at - resumed[0] > 1.0, "the sender stopped before the old active woke up"
        await settle_and_check(members, sender)
        await wait_until(lambda: sorted(health(b)["role"] for b in system.broadcasters) == ["active", "standby"],
                         10, "exactly one active broadcaster again")
        for client in members:
            await client.close()

    run(body())
