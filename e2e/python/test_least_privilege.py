"""What a holder of the gateway's NATS credential can no longer do (issue 21), against a real nats-server,
chat-service, broadcaster and gateway. Here the server has no authorization at all, so these are the
application's own checks — the NATS permissions of deploy/auth.conf are tested in test_permissions.py:

- bytes published to ``chat.typing.<room>`` reach no socket unless they are a valid typing notice for
  that room (the gateway rebuilds the frame from validated fields);
- presence calls, joins, sends and leaves need the gateway's credential (its presence id and the key it
  registered), so a forged ``presence_sync`` cannot remove another gateway's members and a forged send or
  leave cannot act for them;
- the gateway's request replies come back under its own inbox prefix (``_INBOX_gateway.``), which
  deploy/auth.conf lets only the gateway user read.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import nats
import pytest

from chatclient import run, Client, create_room, history
from system import System


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    system = System(tmp_path_factory.mktemp("least-privilege"))
    try:
        system.start()
        yield system
    finally:
        system.stop()


async def request(nc, subject: str, body: dict, headers: dict[str, str] | None = None) -> dict:
    reply = await nc.request(subject, json.dumps(body).encode(), timeout=5, headers=headers)
    return json.loads(reply.data)


def test_forged_typing_notices_never_reach_a_socket(system):
    gateway = system.gateways[0]
    rid = create_room(gateway)["id"]
    other = create_room(gateway)["id"]

    async def body():
        typist = await Client.joined(gateway, "typist", rid)
        watcher = await Client.joined(gateway, "watcher", rid)
        nc = await system.nats.connect()
        try:
            forged_user = str(uuid.uuid4())
            forgeries = [
                b"garbage",
                b"",
                json.dumps({"type": "message", "room_id": rid, "user_id": forged_user, "username": "admin",
                            "content": "fake", "seq": 1}).encode(),
                json.dumps({"type": "connected", "user_id": forged_user}).encode(),
                json.dumps({"type": "typing", "room_id": other, "user_id": forged_user, "username": "x"}).encode(),
                json.dumps({"type": "typing", "room_id": rid, "user_id": "not-a-uuid", "username": "x"}).encode(),
                json.dumps({"type": "typing", "room_id": rid, "user_id": forged_user, "username": "\u0000"}).encode(),
                json.dumps({"type": "typing", "room_id": rid, "user_id": forged_user, "username": "x",
                            "content": "smuggled"}).encode(),
                b'{"type":"typing","type":"message","room_id":"' + rid.encode() + b'"}',
            ]
            for payload in forgeries:
                await nc.publish(f"chat.typing.{rid}", payload)
            # A well-formed notice from NATS is still a typing notice (another gateway's), rebuilt.
            await nc.publish(f"chat.typing.{rid}", json.dumps(
                {"type": "typing", "room_id": rid, "user_id": forged_user, "username": "remote"}).encode())
            await nc.flush()
            notice = await watcher.wait_for("typing")
            assert notice == {"type": "typing", "room_id": rid, "user_id": forged_user, "username": "remote"}, notice
            # The real typist's notice comes after; nothing else came before or between.
            await typist.send({"type": "typing", "room_id": rid})
            real = await watcher.wait_for("typing")
            assert real["user_id"] == typist.user_id, real
            seen = [f.data["type"] for f in watcher.frames]
            assert seen.count("typing") == 2 and "message" not in seen, seen
            assert watcher.raw == [], watcher.raw
        finally:
            await nc.close()
        await typist.close()
        await watcher.close()

    run(body())
    metrics = system.gateways[0].metrics()
    assert "gateway_typing_notices_refused_total" in metrics


def test_forged_presence_sends_and_leaves_are_refused(system):
    gateway = system.gateways[0]
    rid = create_room(gateway)["id"]

    async def body():
        victim = await Client.joined(gateway, "victim", rid)
        presence_id = None
        nc = await system.nats.connect()
        try:
            # The victim's gateway is whoever holds its membership record.
            members = await request(nc, "chat.svc.room.members", {"room_id": rid})
            assert [m["user_id"] for m in members["members"]] == [victim.user_id], members
            info = json.loads((await nc.request("$JS.API.DIRECT.GET.KV_chat_members",
                                                json.dumps({"last_by_subj": f"$KV.chat_members.{rid}.{victim.user_id}"}).encode(),
                                                timeout=5)).data)
            presence_id = info["gateway_id"]
            forged_key = {"Chat-Gateway": presence_id, "Chat-Gateway-Key": "f" * 64}
            own_key = {"Chat-Gateway": "gw-attacker", "Chat-Gateway-Key": "a" * 64}
            for headers, expected in ((None, "unauthorized"), (forged_key, "forbidden"), (own_key, "forbidden")):
                sync = await request(nc, "chat.svc.gateway.presence_sync",
                                     {"gateway_id": presence_id, "room_id": rid, "users": []}, headers)
                assert sync.get("code") == expected, (headers, sync)
            beat = await request(nc, "chat.svc.gateway.heartbeat", {"gateway_id": presence_id, "connections": 0}, forged_key)
            assert beat.get("code") == "forbidden", beat
            send = {"room_id": rid, "user_id": victim.user_id, "username": "victim", "content": "forged"}
            for headers, expected in ((None, "unauthorized"), (forged_key, "forbidden"), (own_key, "not_member")):
                reply = await request(nc, "chat.svc.message.send", send, headers)
                assert reply.get("code") == expected, (headers, reply)
            left = await request(nc, "chat.svc.room.leave", {"room_id": rid, "user_id": victim.user_id}, own_key)
            assert left.get("left") is False, left
            members = await request(nc, "chat.svc.room.members", {"room_id": rid})
            assert [m["user_id"] for m in members["members"]] == [victim.user_id], members
        finally:
            await nc.close()
        # The victim was told nothing and still sends.
        ack = await victim.send_message("still here", rid)
        assert ack["type"] == "ack", ack
        await victim.close()

    run(body())
    assert [m["content"] for m in history(gateway, rid)["messages"]] == ["still here"]


def test_the_gateways_replies_come_back_under_its_own_inbox_prefix(system):
    gateway = system.gateways[0]

    async def body():
        nc = await system.nats.connect()
        replies: list[str] = []
        seen = asyncio.Event()

        async def copy(msg):
            replies.append(msg.reply)
            seen.set()

        try:
            await nc.subscribe("chat.svc.room.list", cb=copy)  # a plain subscription sees a copy of each request
            await nc.flush()
            create_room(gateway)
            await asyncio.to_thread(lambda: __import__("requests").get(gateway.base_url + "/api/v1/rooms", timeout=5))
            await asyncio.wait_for(seen.wait(), 5)
        finally:
            await nc.close()
        assert replies and all(r.startswith("_INBOX_gateway.") for r in replies), replies

    run(body())


TOKEN_SECRET = "least-privilege-secret-that-is-long-enough"


def user_token(sub: str, name: str) -> str:
    import time

    import jwt
    return jwt.encode({"sub": sub, "username": name, "exp": int(time.time()) + 600}, TOKEN_SECRET, algorithm="HS256")


@pytest.fixture(scope="module")
def token_system(tmp_path_factory):
    """Token mode on both sides: the gateway and the chat-service know the secret."""
    system = System(tmp_path_factory.mktemp("least-privilege-token"))
    try:
        system.start(chat_env={"AUTH_JWT_SECRET": TOKEN_SECRET}, gateway_env={"AUTH_JWT_SECRET": TOKEN_SECRET})
        yield system
    finally:
        system.stop()


def test_in_token_mode_a_gateway_credential_alone_cannot_act_as_a_user(token_system):
    gateway = token_system.gateways[0]
    headers = {"Authorization": f"Bearer {user_token('room-maker', 'maker')}"}
    rid = __import__("requests").post(gateway.base_url + "/api/v1/rooms", json={"name": "token-room"},
                                      headers=headers, timeout=5).json()["id"]

    async def body():
        victim = await Client.open(gateway.ws_url(token=user_token("victim-sub", "victim")), "victim")
        await victim.join(rid)
        nc = await token_system.nats.connect()
        try:
            own = {"Chat-Gateway": "gw-attacker", "Chat-Gateway-Key": "b" * 64}
            join = {"room_id": rid, "user_id": victim.user_id, "username": "victim", "gateway_id": "gw-attacker"}
            reply = await request(nc, "chat.svc.room.join", join, own)
            assert reply.get("code") == "unauthorized", reply
            # Its own valid token does not make it someone else.
            reply = await request(nc, "chat.svc.room.join", join,
                                  {**own, "Chat-User-Token": user_token("attacker-sub", "victim")})
            assert reply.get("code") == "forbidden", reply
            send = {"room_id": rid, "user_id": victim.user_id, "username": "victim", "content": "forged"}
            for extra in ({}, {"Chat-User-Token": "not.a.jwt"}, {"Chat-User-Token": user_token("attacker-sub", "x")}):
                reply = await request(nc, "chat.svc.message.send", send, {**own, **extra})
                assert reply.get("code") in ("unauthorized", "forbidden"), (extra, reply)
        finally:
            await nc.close()
        assert (await victim.send_message("mine", rid))["type"] == "ack"
        await victim.close()

    run(body())
    assert [m["content"] for m in history(gateway, rid)["messages"]] == ["mine"]


def test_idempotency_is_keyed_on_the_verified_user_not_the_display_name(token_system):
    gateway = token_system.gateways[0]
    headers = {"Authorization": f"Bearer {user_token('room-maker', 'maker')}"}
    rid = __import__("requests").post(gateway.base_url + "/api/v1/rooms", json={"name": "same-name-room"},
                                      headers=headers, timeout=5).json()["id"]

    async def body():
        attacker = await Client.open(gateway.ws_url(token=user_token("attacker-sub", "sam")), "attacker")
        victim = await Client.open(gateway.ws_url(token=user_token("victim-sub", "sam")), "victim")
        for client in (attacker, victim):
            await client.join(rid)
        first = await attacker.send_message("attacker's", rid, client_msg_id="c-1")
        second = await victim.send_message("victim's", rid, client_msg_id="c-1")
        assert first["type"] == second["type"] == "ack", (first, second)
        assert first["message_id"] != second["message_id"], (first, second)
        # The same user's retry (another connection, same sub) is still recognised.
        again = await Client.open(gateway.ws_url(token=user_token("victim-sub", "sam")), "victim-2")
        await again.join(rid)
        retry = await again.send_message("victim's", rid, client_msg_id="c-1")
        assert retry["message_id"] == second["message_id"], (retry, second)
        for client in (attacker, victim, again):
            await client.close()

    run(body())
    messages = history(gateway, rid)["messages"]
    assert [m["content"] for m in messages] == ["attacker's", "victim's"], messages


def test_deliveries_that_are_not_frames_of_their_room_never_reach_a_socket(system):
    # Only the broadcaster user may publish chat.deliver.> under deploy/auth.conf; the gateway checks
    # what arrives anyway (this server has no authorization, so anyone can publish here).
    gateway = system.gateways[0]
    rid = create_room(gateway)["id"]
    other = create_room(gateway)["id"]
    refused_before = gateway.metric("gateway_deliveries_refused_total")

    async def body():
        watcher = await Client.joined(gateway, "delivery-watcher", rid)
        nc = await system.nats.connect()
        try:
            forged = [
                (b"garbage", {}),
                (json.dumps({"type": "connected", "user_id": str(uuid.uuid4())}).encode(), {}),
                (json.dumps({"type": "message", "room_id": other, "seq": 1, "content": "x"}).encode(), {"Chat-Seq": "1"}),
                (json.dumps({"type": "message", "room_id": rid, "seq": 7, "content": "x"}).encode(), {"Chat-Seq": "1"}),
                (json.dumps({"type": "user_joined", "room_id": other, "user_id": str(uuid.uuid4())}).encode(), {}),
            ]
            for payload, headers in forged:
                await nc.publish(f"chat.deliver.room.{rid}", payload, headers=headers or None)
            await nc.publish("chat.deliver.rooms", b'{"type":"message","content":"to everyone"}')
            await nc.flush()
            # A real message after them arrives, and nothing forged came before it.
            assert (await watcher.send_message("real", rid))["type"] == "ack"
            got = await watcher.wait_messages(rid, 1)
            assert [m["content"] for m in got] == ["real"], got
            types = [f.data["type"] for f in watcher.frames]
            assert "connected" not in types[1:] and "room_created" not in types, types
            assert watcher.raw == [], watcher.raw
        finally:
            await nc.close()
        await watcher.close()

    run(body())
    assert gateway.metric("gateway_deliveries_refused_total") - refused_before == 6
