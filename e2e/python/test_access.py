"""Rooms people own (token mode) against the real system: private rooms exist only for their roster,
invitations, removal and bans cut a member off at once, mutes, archiving, deletion that erases, direct
rooms that are one room per pair, and the directory. The full matrix of who may do what is in
test_access_matrix.py."""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from accessclient import TOKEN_ENV, sign_in
from chatclient import Client, run, unique
from system import System


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    system = System(tmp_path_factory.mktemp("access-system"))
    try:
        system.start(chat_env=TOKEN_ENV, gateway_env=TOKEN_ENV)
        yield system
    finally:
        system.stop()


@pytest.fixture(scope="module")
def gw(system):
    return system.gateways[0]


def private_room(owner, name: str | None = None) -> dict:
    reply = owner.call("POST", "/api/v1/rooms", {"name": name or unique("secret"), "visibility": "private"})
    assert reply.status_code == 201, reply.text
    room = reply.json()
    assert room["visibility"] == "private" and room["my_role"] == "owner" and room["owner_id"] == owner.id
    return room


def test_a_private_room_does_not_exist_for_others_until_they_are_invited(gw):
    owner, guest = sign_in(gw, unique("owner")), sign_in(gw, unique("guest"))
    room = private_room(owner, "Plans for the merger")
    rid = room["id"]
    for path in (f"/api/v1/rooms/{rid}", f"/api/v1/rooms/{rid}/history", f"/api/v1/rooms/{rid}/members"):
        for anonymous in (False, True):
            reply = guest.call("GET", path, anonymous=anonymous)
            assert reply.status_code == 404 and reply.json()["code"] == "room_not_found", (path, reply.text)
    assert rid not in [r["id"] for r in guest.call("GET", "/api/v1/rooms").json()["rooms"]]
    assert rid not in [r["id"] for r in guest.call("GET", "/api/v1/rooms", anonymous=True).json()["rooms"]]
    assert "Plans for the merger" not in guest.call("GET", "/api/v1/rooms?limit=1000").text
    # Malformed requests about it get what they get for a room that does not exist.
    for room_id in (rid, str(uuid.uuid4())):
        for method, path, body in (("POST", f"/api/v1/rooms/{room_id}/members", {"user_id": "nope", "role": "king"}),
                                   ("PUT", f"/api/v1/rooms/{room_id}/members/{guest.id}", {"role": "king"}),
                                   ("POST", f"/api/v1/rooms/{room_id}/bans", {"user_id": guest.id, "seconds": -1}),
                                   ("PATCH", f"/api/v1/rooms/{room_id}", {"name": ""})):
            reply = guest.call(method, path, body)
            assert reply.status_code == 404 and reply.json()["code"] == "room_not_found", (method, path, reply.text)
    # A public room may take the same name: private names are not reserved (that would tell).
    assert guest.call("POST", "/api/v1/rooms", {"name": "Plans for the merger"}).status_code == 201

    async def scenario():
        outsider = await Client.open(guest.ws_url(), "guest")
        for frame in ({"type": "join", "room_id": rid}, {"type": "history", "room_id": rid},
                      {"type": "members", "room_id": rid}):
            reply = await outsider.request(frame, "never")
            assert reply["type"] == "error" and reply["code"] == "room_not_found", (frame, reply)
        listed = await outsider.request({"type": "room_list"}, "room_list")
        assert rid not in [r["id"] for r in listed["rooms"]]
        # Invited: told at once, then the room exists for them.
        assert owner.call("POST", f"/api/v1/rooms/{rid}/members", {"user_id": guest.id}).status_code == 201
        added = await outsider.wait_for("added", room_id=rid)
        assert added["room"]["name"] == "Plans for the merger" and added["role"] == "member"
        joined = await outsider.join(rid)
        assert joined["room"]["my_role"] == "member"
        ack = await outsider.send_message("hello", rid)
        assert ack["type"] == "ack", ack
        await outsider.ws.close()

    run(scenario())
    assert guest.call("GET", f"/api/v1/rooms/{rid}").json()["my_role"] == "member"
    members = guest.call("GET", f"/api/v1/rooms/{rid}/members").json()["members"]
    assert {(m["user_id"], m["role"]) for m in members} == {(owner.id, "owner"), (guest.id, "member")}
    assert all(m["online"] is False for m in members)


def test_removal_and_ban_cut_a_member_off_before_the_next_message(gw):
    owner, member, other = sign_in(gw, unique("own")), sign_in(gw, unique("mem")), sign_in(gw, unique("oth"))
    rid = private_room(owner)["id"]
    for user in (member, other):
        assert owner.call("POST", f"/api/v1/rooms/{rid}/members", {"user_id": user.id}).status_code == 201

    async def scenario():
        speaker = await Client.open(owner.ws_url(), "owner")
        victim = await Client.open(member.ws_url(), "member")
        witness = await Client.open(other.ws_url(), "other")
        for client in (speaker, victim, witness):
            await client.join(rid)
        assert (await speaker.send_message("before", rid))["type"] == "ack"
        await victim.wait_for("message", content="before")
        reply = await asyncio.to_thread(owner.call, "DELETE", f"/api/v1/rooms/{rid}/members/{member.id}")
        assert reply.status_code == 200, reply.text
        assert (await speaker.send_message("after", rid))["type"] == "ack"
        removed = await victim.wait_for("removed", room_id=rid)
        assert removed["reason"] == "removed"
        await witness.wait_for("member_removed", room_id=rid, user_id=member.id)
        await witness.wait_for("message", content="after")
        assert [m["content"] for m in victim.messages(rid)] == ["before"], "a message after the removal reached the removed member"
        refused = await victim.send_message("still here?", rid)
        assert refused["type"] == "error" and refused["code"] == "not_in_room", refused
        again = await victim.request({"type": "join", "room_id": rid}, "joined")
        assert again["type"] == "error" and again["code"] == "room_not_found", again

        # A ban: out at once, and kept out.
        reply = await asyncio.to_thread(owner.call, "POST", f"/api/v1/rooms/{rid}/bans", {"user_id": other.id})
        assert reply.status_code == 201, reply.text
        assert (await witness.wait_for("removed", room_id=rid))["reason"] == "banned"
        assert (await speaker.send_message("after ban", rid))["type"] == "ack"
        await speaker.wait_for("message", content="after ban")
        assert "after ban" not in [m["content"] for m in witness.messages(rid)]
        for client in (speaker, victim, witness):
            await client.ws.close()

    run(scenario())
    reply = other.call("POST", f"/api/v1/rooms/{rid}/members", {"user_id": other.id})
    assert reply.status_code == 404, reply.text  # not on the roster: the room does not exist for them
    reply = owner.call("POST", f"/api/v1/rooms/{rid}/members", {"user_id": other.id})
    assert reply.status_code == 403 and reply.json()["code"] == "banned", reply.text
    assert owner.call("DELETE", f"/api/v1/rooms/{rid}/bans/{other.id}").status_code == 200
    assert owner.call("POST", f"/api/v1/rooms/{rid}/members", {"user_id": other.id}).status_code == 201


def test_mutes_and_archived_rooms_refuse_sends_with_their_reason(gw):
    owner, member = sign_in(gw, unique("own")), sign_in(gw, unique("mem"))
    room = owner.call("POST", "/api/v1/rooms", {"name": unique("public")}).json()
    rid = room["id"]
    assert room["visibility"] == "public" and room["owner_id"] == owner.id
    reply = owner.call("POST", f"/api/v1/rooms/{rid}/mutes", {"user_id": member.id, "seconds": 600})
    assert reply.status_code == 201 and reply.json()["until"], reply.text

    async def scenario():
        client = await Client.open(member.ws_url(), "member")
        await client.join(rid)
        refused = await client.send_message("let me speak", rid)
        assert refused["type"] == "error" and refused["code"] == "muted" and refused["until"], refused
        assert (await asyncio.to_thread(owner.call, "DELETE", f"/api/v1/rooms/{rid}/mutes/{member.id}")).status_code == 200
        # One chat-service: the unmute replaced its cached standing at once.
        assert (await client.send_message("thanks", rid))["type"] == "ack"
        reply = await asyncio.to_thread(owner.call, "PATCH", f"/api/v1/rooms/{rid}", {"archived": True, "topic": "closed"})
        assert reply.status_code == 200 and reply.json()["archived"] is True, reply.text
        await client.wait_for("room_updated", room_id=rid)
        refused = await client.send_message("more", rid)
        assert refused["type"] == "error" and refused["code"] == "room_archived", refused
        await client.ws.close()

    run(scenario())
    assert member.call("PATCH", f"/api/v1/rooms/{rid}", {"archived": False}).json()["code"] == "forbidden"


def test_deleting_a_room_erases_it_and_tells_its_members(gw, system):
    owner, member = sign_in(gw, unique("own")), sign_in(gw, unique("mem"))
    rid = private_room(owner)["id"]
    owner.call("POST", f"/api/v1/rooms/{rid}/members", {"user_id": member.id})

    async def scenario():
        client = await Client.open(member.ws_url(), "member")
        await client.join(rid)
        assert (await client.send_message("secret content", rid))["type"] == "ack"
        assert member.call("DELETE", f"/api/v1/rooms/{rid}").json()["code"] == "forbidden"
        assert (await asyncio.to_thread(owner.call, "DELETE", f"/api/v1/rooms/{rid}")).status_code == 200
        await client.wait_for("room_deleted", room_id=rid)
        refused = await client.send_message("anyone?", rid)
        assert refused["type"] == "error" and refused["code"] == "not_in_room", refused
        await client.ws.close()

    run(scenario())
    assert owner.call("GET", f"/api/v1/rooms/{rid}").status_code == 404
    assert owner.call("GET", f"/api/v1/rooms/{rid}/history").status_code == 404


def test_a_direct_room_is_one_room_per_pair_whoever_opens_it(gw):
    ann, bob = sign_in(gw, unique("ann")), sign_in(gw, unique("bob"))
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda i: (ann, bob)[i % 2].call("POST", "/api/v1/dms",
                                                                {"user_id": (bob, ann)[i % 2].id}), range(8)))
    assert all(r.status_code == 200 for r in replies), [r.text for r in replies]
    assert len({r.json()["id"] for r in replies}) == 1
    room = replies[0].json()
    assert room["visibility"] == "direct"
    members = ann.call("GET", f"/api/v1/rooms/{room['id']}/members").json()["members"]
    assert sorted(m["user_id"] for m in members) == sorted([ann.id, bob.id])
    eve = sign_in(gw, unique("eve"))
    assert eve.call("GET", f"/api/v1/rooms/{room['id']}").status_code == 404
    assert ann.call("POST", f"/api/v1/rooms/{room['id']}/members", {"user_id": eve.id}).status_code == 403
    assert ann.call("POST", "/api/v1/dms", {"user_id": str(uuid.uuid4())}).json()["code"] == "user_not_found"


def test_the_directory_finds_users_by_name_prefix_and_pages(gw):
    prefix = unique("dir")
    users = [sign_in(gw, f"{prefix}-{i}") for i in range(5)]
    found = users[0].call("GET", f"/api/v1/users?prefix={prefix.upper()}&limit=2").json()
    assert [u["username"] for u in found["users"]] == [f"{prefix}-0", f"{prefix}-1"] and found["has_more"]
    rest = users[0].call("GET", f"/api/v1/users?prefix={prefix}&limit=10&after={found['next']}").json()
    assert [u["username"] for u in rest["users"]] == [f"{prefix}-{i}" for i in range(2, 5)] and not rest["has_more"]
    one = users[0].call("GET", f"/api/v1/users/{users[3].id}").json()
    assert one == {"user_id": users[3].id, "username": f"{prefix}-3"}
    assert users[0].call("GET", f"/api/v1/users?prefix={prefix}", anonymous=True).json()["code"] == "auth_required"


def test_username_mode_has_public_rooms_only(make_system):
    system = make_system()
    gw = system.gateways[0]
    import requests
    reply = requests.post(f"{gw.base_url}/api/v1/rooms", json={"name": unique("p"), "visibility": "private"}, timeout=5)
    assert reply.status_code == 401 and reply.json()["code"] == "auth_required", reply.text
    reply = requests.post(f"{gw.base_url}/api/v1/dms", json={"user_id": str(uuid.uuid4())}, timeout=5)
    assert reply.status_code == 401 and reply.json()["code"] == "auth_required", reply.text


def test_scripts_token_signs_a_token_the_system_accepts(gw):
    """`scripts/token NAME` (the development identity of `scripts/start --dev-tokens`)."""
    import os
    import subprocess

    from accessclient import SECRET, User
    name = unique("dev")
    jwt = subprocess.run(["scripts/token", name, "1"], env={**os.environ, "AUTH_JWT_SECRET": SECRET},
                         capture_output=True, text=True, check=True, timeout=20).stdout.strip()
    user = User(gw, name, jwt)
    assert user.call("GET", "/api/v1/rooms").status_code == 200
    assert [u["username"] for u in user.call("GET", f"/api/v1/users?prefix={name}").json()["users"]] == [name]
    wrong = subprocess.run(["scripts/token", name, "1"], env={**os.environ, "AUTH_JWT_SECRET": "another-secret-" * 3},
                           capture_output=True, text=True, check=True, timeout=20).stdout.strip()
    assert User(gw, name, wrong).call("GET", "/api/v1/rooms").status_code == 401


def test_rosters_bans_and_private_rooms_survive_restarts_of_every_part(make_system):
    """Everything of a private room lives in JetStream and KV: after nats-server and every service
    restart, the roster, the ban, the mute and the room's invisibility are as they were."""
    system = make_system(chat_env=TOKEN_ENV, gateway_env=TOKEN_ENV)
    gw = system.gateway
    owner, member, banned, muted = (sign_in(gw, unique(n)) for n in ("own", "mem", "ban", "mute"))
    rid = private_room(owner)["id"]
    for user in (member, banned, muted):
        assert owner.call("POST", f"/api/v1/rooms/{rid}/members", {"user_id": user.id}).status_code == 201
    assert owner.call("POST", f"/api/v1/rooms/{rid}/bans", {"user_id": banned.id}).status_code == 201
    assert owner.call("POST", f"/api/v1/rooms/{rid}/mutes", {"user_id": muted.id}).status_code == 201

    system.nats.restart()
    for process in (system.chat_service, system.broadcaster, gw):
        process.restart()
    members = owner.call("GET", f"/api/v1/rooms/{rid}/members").json()["members"]
    assert {(m["user_id"], m["role"]) for m in members} == {(owner.id, "owner"), (member.id, "member"), (muted.id, "member")}
    assert banned.call("GET", f"/api/v1/rooms/{rid}").status_code == 404
    assert owner.call("POST", f"/api/v1/rooms/{rid}/members", {"user_id": banned.id}).json()["code"] == "banned"

    async def scenario():
        speaker = await Client.open(muted.ws_url(), "muted")
        await speaker.join(rid)
        refused = await speaker.send_message("hello?", rid)
        assert refused["type"] == "error" and refused["code"] == "muted", refused
        await speaker.ws.close()

    run(scenario())
