"""Bounded replies (issue 21): the room and member lists are paged with cursors (REST `?limit=&after=`,
WS `room_list` / `members` with the same fields), and no chat-service reply can outgrow NATS's
`max_payload` whatever is stored. And `CHAT_MAX_ROOMS` is exact across chat-service replicas under
concurrent creates.

The store is filled through NATS requests to the chat-service, many at once (one HTTP call at a time
would take minutes): past 1 MB of rooms (64-emoji names) and past 1 MB of one room's members."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from typing import Any

import requests

from chatclient import Client, run, unique
from system import System, nats_request_all

MAX_PAYLOAD = 1024 * 1024
# Four UTF-8 bytes each; no case, so names made of them differ exactly when their code points do.
EMOJI = [chr(c) for c in range(0x1F600, 0x1F650)]


def emoji_text(n: int, length: int) -> str:
    """`length` emoji, unique per `n` (its three base-80 digits first)."""
    digits = [EMOJI[(n // 80 ** k) % 80] for k in range(3)]
    return "".join(digits) + EMOJI[7] * (length - 3)


async def requests_at_once(nc, subject: str, bodies: list[dict[str, Any]], concurrency: int,
                           headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Every body sent as a request, `concurrency` in flight; the JSON replies in order."""
    gate = asyncio.Semaphore(concurrency)

    async def one(body: dict[str, Any]) -> dict[str, Any]:
        async with gate:
            reply = await nc.request(subject, json.dumps(body).encode(), timeout=15, headers=headers)
            return json.loads(reply.data)

    return await asyncio.gather(*(one(body) for body in bodies))


def rest_pages(gateway, **params: Any) -> list[list[dict[str, Any]]]:
    """Follows `next` from the first page until `has_more` is false; every reply checked on the way."""
    pages = []
    query = dict(params)
    while True:
        response = requests.get(gateway.base_url + "/api/v1/rooms", params=query, timeout=15)
        assert response.status_code == 200, (response.status_code, response.text[:300])
        assert len(response.content) < MAX_PAYLOAD, len(response.content)
        body = response.json()
        assert body["total"] == len(body["rooms"]), {k: v for k, v in body.items() if k != "rooms"}
        pages.append(body["rooms"])
        assert len(pages) < 100, "the pages do not end"
        if not body.get("has_more"):
            assert "next" not in body, body.get("next")
            return pages
        query["after"] = body["next"]


async def ws_pages(client: Client, frame: dict[str, Any], items: str) -> list[list[dict[str, Any]]]:
    pages = []
    frame = dict(frame)
    while True:
        reply = await client.request(frame, frame["type"], timeout=15)
        assert reply["type"] == frame["type"], reply
        pages.append(reply[items])
        assert len(pages) < 100, "the pages do not end"
        if not reply.get("has_more"):
            assert "next" not in reply, reply.get("next")
            return pages
        frame["after"] = reply["next"]


def exactly_once(pages: list[list[dict[str, Any]]], key: str, expected: set[str]) -> None:
    ids = Counter(item[key] for page in pages for item in page)
    repeated = [i for i, n in ids.items() if n > 1]
    assert not repeated, f"{len(repeated)} listed more than once, e.g. {repeated[:3]}"
    assert set(ids) == expected, (len(ids), len(expected), len(set(ids) - expected), len(expected - set(ids)))


def test_lists_past_max_payload_stay_available(make_system):
    rooms_wanted, members_wanted = 3000, 6000
    # The filled members join through an invented gateway; a long presence timeout keeps them.
    system = make_system(chat_env={"CHAT_PRESENCE_TIMEOUT_MS": "600000"})
    gw = system.gateway

    async def fill():
        nc = await system.nats.connect()
        try:
            names = [emoji_text(n, 64) for n in range(rooms_wanted)]
            created = await requests_at_once(nc, "chat.svc.room.create", [{"name": name} for name in names], 16)
            assert all("id" in room for room in created), [r for r in created if "id" not in r][:3]
            big = created[0]["id"]
            users = [str(uuid.uuid4()) for _ in range(members_wanted)]
            joins = [{"room_id": big, "user_id": user, "username": emoji_text(n, 32), "gateway_id": "fill-gw"}
                     for n, user in enumerate(users)]
            # Joins need a gateway credential: an invented gateway's, fixed by its first request.
            credential = {"Chat-Gateway": "fill-gw", "Chat-Gateway-Key": "k" * 64}
            joined = await requests_at_once(nc, "chat.svc.room.join", joins, 32, headers=credential)
            assert all(reply.get("joined") is True for reply in joined), [r for r in joined if r.get("joined") is not True][:3]
            return {room["id"] for room in created}, big, set(users)
        finally:
            await nc.close()

    room_ids, big, users = run(fill(), timeout=240)

    # REST, unpaged request: the default page and a cursor to go on, then every room exactly once.
    pages = rest_pages(gw)
    room_bytes = sum(len(json.dumps(room, ensure_ascii=False).encode()) for page in pages for room in page)
    assert room_bytes > MAX_PAYLOAD, room_bytes
    assert len(pages[0]) == 500 and len(pages) == 6, [len(p) for p in pages]
    exactly_once(pages, "id", room_ids)
    counts = {room["id"]: room["member_count"] for page in pages for room in page}
    assert counts[big] == members_wanted and sum(counts.values()) == members_wanted
    # Pages of the largest size, and of an odd one: the same rooms.
    exactly_once(rest_pages(gw, limit=1000), "id", room_ids)
    exactly_once(rest_pages(gw, limit=777), "id", room_ids)
    # Bad paging parameters are refused, nothing else changes.
    for query in ({"limit": "0"}, {"limit": "x"}, {"after": "not-a-uuid"}, {"after": str(uuid.uuid4())}):
        response = requests.get(gw.base_url + "/api/v1/rooms", params=query, timeout=5)
        assert response.status_code == 400 and response.json()["code"] == "invalid_request", (query, response.text)

    # GET of the full room: its exact member count.
    response = requests.get(f"{gw.base_url}/api/v1/rooms/{big}", timeout=5)
    assert response.status_code == 200 and response.json()["member_count"] == members_wanted, response.text

    async def websocket():
        client = await Client.connect(gw, "pager")
        try:
            unpaged = await client.request({"type": "room_list"}, "room_list", timeout=15)
            assert len(unpaged["rooms"]) == 500 and unpaged["has_more"] is True and unpaged["next"], len(unpaged["rooms"])
            exactly_once(await ws_pages(client, {"type": "room_list", "limit": 1000}, "rooms"), "id", room_ids)
            joined = await client.join(big, timeout=15)
            # A join reply's count may lag by the joins that raced its last read (32 in flight here) for
            # up to Membership.countTTL; the room's GET is exact.
            assert joined["room"]["member_count"] >= members_wanted - 32, joined["room"]["member_count"]
            exact = requests.get(f"{gw.base_url}/api/v1/rooms/{big}", timeout=5).json()["member_count"]
            assert exact == members_wanted + 1, exact
            pages = await ws_pages(client, {"type": "members", "room_id": big}, "members")
            member_bytes = sum(len(json.dumps(member, ensure_ascii=False).encode()) for page in pages for member in page)
            assert member_bytes > MAX_PAYLOAD, member_bytes
            assert len(pages) == 13 and all(len(p) == 500 for p in pages[:-1]), [len(p) for p in pages]
            exactly_once(pages, "user_id", users | {client.user_id})
            exactly_once(await ws_pages(client, {"type": "members", "room_id": big, "limit": 1000}, "members"),
                         "user_id", users | {client.user_id})
            error = await client.request({"type": "members", "room_id": big, "after": "x"}, "members")
            assert error["type"] == "error" and error["code"] == "invalid_request", error
            error = await client.request({"type": "room_list", "limit": 0}, "room_list")
            assert error["type"] == "error" and error["code"] == "invalid_request", error
        finally:
            await client.close()

    run(websocket(), timeout=120)


def test_max_rooms_exact_across_replicas_and_small_lists_unchanged(make_system):
    system = make_system(chat_services=2, chat_env={"CHAT_MAX_ROOMS": "20"})
    gw = system.gateway

    async def create():
        nc = await system.nats.connect()
        try:
            bodies = [{"name": unique("cap")} for _ in range(50)]
            return await requests_at_once(nc, "chat.svc.room.create", bodies, 50)
        finally:
            await nc.close()

    replies = run(create())
    created = [reply for reply in replies if "id" in reply]
    refused = [reply for reply in replies if reply.get("code") == "room_limit_reached"]
    assert len(created) == 20 and len(refused) == 30, [r for r in replies if "id" not in r and r.get("code") != "room_limit_reached"]
    stats = run(nats_request_all(system.nats.url, "$SRV.STATS.chat"))
    served = [sum(e["num_requests"] for e in s["endpoints"] if e["name"] == "room_create") for s in stats]
    assert len(served) == 2 and all(n > 0 for n in served), served
    response = requests.post(gw.base_url + "/api/v1/rooms", json={"name": unique("cap")}, timeout=5)
    assert response.status_code == 409 and response.json()["code"] == "room_limit_reached", response.text

    # A small list, no paging parameters: the reply has exactly the fields it had before paging.
    response = requests.get(gw.base_url + "/api/v1/rooms", timeout=5)
    listing = response.json()
    assert set(listing) == {"rooms", "total"} and listing["total"] == 20, listing
    assert {room["id"] for room in listing["rooms"]} == {room["id"] for room in created}
    stamps = [(room["created_at"], room["name"]) for room in listing["rooms"]]
    assert stamps == sorted(stamps), "oldest first"
    # Paged: has_more and next while more follow, has_more false on the last page.
    first = requests.get(gw.base_url + "/api/v1/rooms", params={"limit": 15}, timeout=5).json()
    assert len(first["rooms"]) == 15 and first["has_more"] is True, first
    last = requests.get(gw.base_url + "/api/v1/rooms", params={"limit": 15, "after": first["next"]}, timeout=5).json()
    assert len(last["rooms"]) == 5 and last["has_more"] is False and "next" not in last, last
    assert {r["id"] for r in first["rooms"] + last["rooms"]} == {r["id"] for r in created}

    async def websocket():
        client = await Client.connect(gw, "small")
        try:
            frame = await client.request({"type": "room_list"}, "room_list")
            assert set(frame) == {"type", "rooms"} and len(frame["rooms"]) == 20, frame
            room = created[0]["id"]
            await client.join(room)
            frame = await client.request({"type": "members", "room_id": room}, "members")
            assert set(frame) == {"type", "room_id", "members"} and [m["user_id"] for m in frame["members"]] == [client.user_id]
            frame = await client.request({"type": "members", "room_id": room, "limit": 1}, "members")
            assert frame["has_more"] is False and "next" not in frame, frame
        finally:
            await client.close()

    run(websocket())


def test_pages_are_cut_to_a_small_max_payload(tmp_path):
    # nats-server with max_payload 128 KiB: a default page of 500 long-named rooms (~180 KiB) could not be
    # sent, so pages stop at half of max_payload and every room is still listed exactly once.
    max_payload = 128 * 1024
    config = tmp_path / "nats.conf"
    config.write_text(f"max_payload: {max_payload}\n")
    system = System(tmp_path / "system")
    try:
        system.start_nats(extra_args=["-c", str(config)])
        system.start()

        async def fill():
            nc = await system.nats.connect()
            try:
                assert nc.max_payload == max_payload, nc.max_payload
                bodies = [{"name": emoji_text(n, 64)} for n in range(600)]
                created = await requests_at_once(nc, "chat.svc.room.create", bodies, 16)
                assert all("id" in room for room in created), [r for r in created if "id" not in r][:3]
                return {room["id"] for room in created}
            finally:
                await nc.close()

        room_ids = run(fill())
        pages = rest_pages(system.gateway)
        assert 1 < len(pages[0]) < 500 and len(pages) >= 3, [len(p) for p in pages]
        exactly_once(pages, "id", room_ids)
        for limit in (1000, 7):
            exactly_once(rest_pages(system.gateway, limit=limit), "id", room_ids)
        response = requests.get(system.gateway.base_url + "/api/v1/rooms", params={"limit": 1000}, timeout=5)
        assert len(response.content) < max_payload and response.json()["has_more"] is True, len(response.content)
    finally:
        system.stop()


def test_history_pages_are_cut_below_max_payload_and_lose_nothing(make_system):
    # 200 messages of 4,000 quotes: each encodes to ~8 KB, a full page of 200 to ~1.6 MB.
    system = make_system(gateway_env={"RATE_LIMIT_PER_SEC": "100000", "RATE_LIMIT_BURST": "100000"})
    gw = system.gateway
    room = requests.post(gw.base_url + "/api/v1/rooms", json={"name": unique("quotes")}, timeout=5).json()["id"]
    content = '"' * 4000

    async def fill_and_resume():
        sender = await Client.joined(gw, "quoter", room)
        acks = await asyncio.gather(*(sender.send_message(content, room) for _ in range(200)))
        assert all(ack["type"] == "ack" for ack in acks), [a for a in acks if a["type"] != "ack"][:2]
        await sender.close()
        # A member resuming from the start gets all 200 through the cut pages, once each, in order.
        late = await Client.connect(gw, "late")
        await late.send({"type": "join", "room_id": room, "since": 0})
        await late.wait_messages(room, 200, timeout=30)
        assert [m["seq"] for m in late.messages(room)] == list(range(1, 201))
        # A WS history page is cut too (and says so).
        reply = await late.request({"type": "history", "room_id": room, "limit": 200}, "history", timeout=15)
        assert reply["has_more"] is True and 0 < len(reply["messages"]) < 200, len(reply["messages"])
        assert reply["messages"][-1]["seq"] == 200
        await late.close()

    run(fill_and_resume(), timeout=120)
    seen: list[int] = []
    before = None
    for _ in range(50):
        params = {"limit": 200, **({"before": before} if before else {})}
        response = requests.get(f"{gw.base_url}/api/v1/rooms/{room}/history", params=params, timeout=15)
        assert response.status_code == 200 and len(response.content) < MAX_PAYLOAD, (response.status_code, len(response.content))
        page = response.json()
        seqs = [m["seq"] for m in page["messages"]]
        assert seqs == sorted(seqs) and all(m["content"] == content for m in page["messages"])
        seen = seqs + seen
        if not page["has_more"]:
            break
        before = seqs[0]
    assert seen == list(range(1, 201)), (len(seen), seen[:3], seen[-3:])
