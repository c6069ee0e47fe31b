"""The chat-service speaks the NATS service API (micro v1), checked with nats-py as an independent client.

Contract: NATS ADR-32, micro v1 (`$SRV.PING|INFO|STATS`,
optionally `.<name>` and `.<name>.<id>`; errors in `Nats-Service-Error` / `Nats-Service-Error-Code`).
"""

from __future__ import annotations

import asyncio
import json
import re
from datetime import datetime
from typing import Any

SERVICE = "chat"
LIST_ROOMS = "chat.svc.room.list"
CREATE_ROOM = "chat.svc.room.create"
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


async def request_json(nc, subject: str, payload: bytes = b"") -> dict[str, Any]:
    reply = await nc.request(subject, payload, timeout=5)
    body = json.loads(reply.data)
    assert isinstance(body, dict), f"{subject} answered {body!r}"
    return body


async def gather_replies(nc, subject: str, wait: float = 0.5) -> list[dict[str, Any]]:
    """Every reply to one request within `wait` seconds (a `$SRV.PING` is answered by every service)."""
    inbox = nc.new_inbox()
    replies: list[dict[str, Any]] = []
    subscription = await nc.subscribe(inbox)
    try:
        await nc.publish(subject, b"", reply=inbox)
        await nc.flush()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while (left := deadline - loop.time()) > 0:
            try:
                message = await subscription.next_msg(timeout=left)
            except Exception:  # nats.errors.TimeoutError
                break
            replies.append(json.loads(message.data))
    finally:
        await subscription.unsubscribe()
    return replies


def check_identity(body: dict[str, Any], type_: str) -> None:
    assert body.get("type") == type_, body
    assert body.get("name") == SERVICE, body
    assert isinstance(body.get("id"), str) and body["id"], body
    assert isinstance(body.get("version"), str) and body["version"], body
    assert isinstance(body.get("metadata"), dict), body


def endpoint_stats(stats: dict[str, Any], subject: str) -> dict[str, Any]:
    matches = [endpoint for endpoint in stats["endpoints"] if endpoint.get("subject") == subject]
    assert len(matches) == 1, f"expected one endpoint with subject {subject} in {stats['endpoints']}"
    return matches[0]


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def test_ping_on_all_three_subjects(nats_run):
    async def body(nc):
        everyone = [reply for reply in await gather_replies(nc, "$SRV.PING") if reply.get("name") == SERVICE]
        assert everyone, "no chat service answered $SRV.PING"
        by_name = await request_json(nc, f"$SRV.PING.{SERVICE}")
        by_id = await request_json(nc, f"$SRV.PING.{SERVICE}.{by_name['id']}")
        return everyone, by_name, by_id

    everyone, by_name, by_id = nats_run(body)
    for reply in [*everyone, by_name, by_id]:
        check_identity(reply, "io.nats.micro.v1.ping_response")
    assert by_id["id"] == by_name["id"]
    assert by_name["id"] in {reply["id"] for reply in everyone}


def test_info_lists_endpoints(nats_run):
    info = nats_run(lambda nc: request_json(nc, f"$SRV.INFO.{SERVICE}"))
    check_identity(info, "io.nats.micro.v1.info_response")
    endpoints = info.get("endpoints")
    assert isinstance(endpoints, list) and endpoints, info
    for endpoint in endpoints:
        assert isinstance(endpoint.get("name"), str) and endpoint["name"], endpoint
        assert isinstance(endpoint.get("subject"), str) and endpoint["subject"].startswith("chat.svc."), endpoint
        assert isinstance(endpoint.get("queue_group"), str) and endpoint["queue_group"], endpoint
    subjects = {endpoint["subject"] for endpoint in endpoints}
    assert {LIST_ROOMS, CREATE_ROOM} <= subjects, subjects
    assert len(subjects) == len(endpoints), "endpoint subjects must be unique"


def test_stats_shape(nats_run):
    stats = nats_run(lambda nc: request_json(nc, f"$SRV.STATS.{SERVICE}"))
    check_identity(stats, "io.nats.micro.v1.stats_response")
    started = stats.get("started")
    assert isinstance(started, str) and RFC3339.match(started), f"started={started!r} is not RFC 3339"
    datetime.fromisoformat(started.replace("Z", "+00:00").replace("z", "+00:00"))
    endpoints = stats.get("endpoints")
    assert isinstance(endpoints, list) and endpoints, stats
    for endpoint in endpoints:
        assert isinstance(endpoint.get("name"), str) and endpoint["name"], endpoint
        assert isinstance(endpoint.get("subject"), str) and endpoint["subject"].startswith("chat.svc."), endpoint
        for key in ("num_requests", "num_errors", "processing_time", "average_processing_time"):
            assert is_int(endpoint.get(key)), f"{key} of {endpoint.get('name')} is {endpoint.get(key)!r}"
            assert endpoint[key] >= 0, endpoint


def test_request_is_counted(nats_run):
    async def body(nc):
        before = endpoint_stats(await request_json(nc, f"$SRV.STATS.{SERVICE}"), LIST_ROOMS)
        reply = await nc.request(LIST_ROOMS, b"{}", timeout=5)
        after = endpoint_stats(await request_json(nc, f"$SRV.STATS.{SERVICE}"), LIST_ROOMS)
        return before, reply, after

    before, reply, after = nats_run(body)
    headers = reply.headers or {}
    assert "Nats-Service-Error" not in headers, f"room.list failed: {headers} {reply.data!r}"
    json.loads(reply.data)
    assert after["num_requests"] == before["num_requests"] + 1, (before, after)
    assert after["num_errors"] == before["num_errors"], (before, after)
    assert after["processing_time"] >= before["processing_time"], (before, after)


def test_invalid_request_is_an_error(nats_run):
    async def body(nc):
        before = endpoint_stats(await request_json(nc, f"$SRV.STATS.{SERVICE}"), CREATE_ROOM)
        reply = await nc.request(CREATE_ROOM, b"not json", timeout=5)
        after = endpoint_stats(await request_json(nc, f"$SRV.STATS.{SERVICE}"), CREATE_ROOM)
        return before, reply, after

    before, reply, after = nats_run(body)
    headers = reply.headers or {}
    assert headers.get("Nats-Service-Error"), f"no Nats-Service-Error header: {headers} {reply.data!r}"
    code = headers.get("Nats-Service-Error-Code", "")
    assert code.isdigit() and 400 <= int(code) < 600, f"Nats-Service-Error-Code={code!r}"
    assert after["num_requests"] == before["num_requests"] + 1, (before, after)
    assert after["num_errors"] == before["num_errors"] + 1, (before, after)
