"""After the chat-service has started, its JetStream resources exist (checked with nats-py's JetStream API)."""

from __future__ import annotations

import asyncio

import pytest
from nats.js.errors import BucketNotFoundError, NotFoundError

EVENT_STREAM = "CHAT_EVENTS"
BUCKETS = ["chat_rooms", "chat_members"]
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


@pytest.mark.parametrize("bucket", BUCKETS)
def test_kv_bucket_exists(nats_run, bucket):
    async def body(nc):
        js = nc.jetstream()
        kv = await eventually(lambda: js.key_value(bucket), (BucketNotFoundError, NotFoundError))
        return await kv.status()

    status = nats_run(body)
    assert status.bucket == bucket
