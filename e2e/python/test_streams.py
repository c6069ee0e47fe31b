"""After the chat-service has started, its JetStream resources exist (checked with nats-py's JetStream API)."""

from __future__ import annotations

import asyncio

import pytest
from nats.js.errors import BucketNotFoundError, NotFoundError

EVENT_STREAM = "CHAT_EVENTS"
BUCKETS = ["chat_rooms", "chat_members", "chat_idempotency", "chat_gateways", "chat_leases"]
# The service creates these before it serves; a short grace period keeps the check free of start-up races.
DEADLINE = 10.0


async def eventually(make, missing: type[BaseException]):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while True:
        try:
            return await make()
        except missing:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.1)


def test_event_stream_exists(nats_run):
    async def body(nc):
        js = nc.jetstream()
        return await eventually(lambda: js.stream_info(EVENT_STREAM), NotFoundError)

    info = nats_run(body)
    assert info.config.name == EVENT_STREAM
    assert info.config.storage == "file", f"storage is {info.config.storage!r}"
    assert "chat.room.*.msg" in (info.config.subjects or []), info.config.subjects
    # Bounded (CHAT_EVENTS_MAX_BYTES, 4 GiB), oldest events discarded at the limit.
    assert info.config.max_bytes == 4 << 30, info.config.max_bytes
    assert str(getattr(info.config.discard, "value", info.config.discard)) == "old", info.config.discard


@pytest.mark.parametrize("bucket", BUCKETS)
def test_kv_bucket_exists(nats_run, bucket):
    async def body(nc):
        js = nc.jetstream()
        kv = await eventually(lambda: js.key_value(bucket), (BucketNotFoundError, NotFoundError))
        return await kv.status()

    status = nats_run(body)
    assert status.bucket == bucket
    # Bounded (CHAT_KV_MAX_BYTES, 1 GiB each); KV refuses new writes at the limit.
    assert status.stream_info.config.max_bytes == 1 << 30, status.stream_info.config.max_bytes
    assert str(getattr(status.stream_info.config.discard, "value", status.stream_info.config.discard)) == "new"


def test_at_the_event_limit_the_oldest_history_goes_and_sends_keep_working(make_system):
    import requests
    from chatclient import run, Client, create_room, history

    system = make_system(chat_env={"CHAT_EVENTS_MAX_BYTES": str(1 << 20)},
                         gateway_env={"RATE_LIMIT_PER_SEC": "100000", "RATE_LIMIT_BURST": "100000"})
    gw = system.gateway
    rid = create_room(gw)["id"]
    content = "x" * 4000

    async def body():
        client = await Client.joined(gw, "filler", rid)
        for i in range(400):  # ~1.7 MB of messages into a 1 MiB stream
            ack = await client.send_message(f"{i:04d}{content}", rid)
            assert ack["type"] == "ack", (i, ack)
        await client.close()

    run(body(), timeout=180)

    async def stream_bytes(nc):
        return (await nc.jetstream().stream_info("CHAT_EVENTS")).state

    from system import run_async
    import nats

    async def state():
        nc = await nats.connect(system.nats.url)
        try:
            return await stream_bytes(nc)
        finally:
            await nc.close()

    stream = run_async(state)
    assert stream.bytes <= 1 << 20, stream.bytes
    page = history(gw, rid, limit=200)["messages"]
    seqs = [m["seq"] for m in page]
    assert seqs[-1] == 400 and seqs == list(range(seqs[0], 401)), seqs[:3]
    oldest = requests.get(f"{gw.base_url}/api/v1/rooms/{rid}/history", params={"before": seqs[0], "limit": 200}, timeout=5).json()
    assert oldest["messages"] and oldest["messages"][0]["seq"] > 1, "the oldest messages were discarded"
