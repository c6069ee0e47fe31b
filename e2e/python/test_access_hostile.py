"""Hostile callers of rooms people own (token mode), against the real system: fields that name who the
caller is, which role they have or whose room it is are ignored wherever they are sent; the id of
another user's private (or direct) room is answered exactly like an id that was never used, by every
REST route and WebSocket frame, whatever the body; a removed or banned member's open sockets get
nothing of the room after the removal; no room list page shows another user's private room."""

from __future__ import annotations

import asyncio
import re
import uuid

import pytest

from accessclient import TOKEN_ENV, sign_in
from chatclient import Client, run, unique
from system import System

CHAT_ENV = {"CHAT_INVITES_PER_MIN": "100000", "CHAT_MAX_OWNED_ROOMS": "1000000"}
GATEWAY_ENV = {"ROOM_CREATE_PER_MIN": "1000000", "USER_DIRECTORY_PER_MIN": "1000000", "REQUEST_TIMEOUT_MS": "8000"}


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    system = System(tmp_path_factory.mktemp("access-hostile-system"))
    try:
        system.start(chat_env={**TOKEN_ENV, **CHAT_ENV}, gateway_env={**TOKEN_ENV, **GATEWAY_ENV})
        yield system
    finally:
        system.stop()


@pytest.fixture(scope="module")
def gw(system):
    return system.gateways[0]


def created(owner, visibility: str = "private") -> str:
    reply = owner.call("POST", "/api/v1/rooms", {"name": unique("hostile"), "visibility": visibility})
    assert reply.status_code == 201, reply.text
    return reply.json()["id"]


def invite(owner, rid: str, user, role: str = "member") -> None:
    reply = owner.call("POST", f"/api/v1/rooms/{rid}/members", {"user_id": user.id, "role": role})
    assert reply.status_code == 201, reply.text


# --- forged identity, role, owner and visibility fields ------------------------------------------------------

def test_forged_fields_in_rest_bodies_are_ignored(gw):
    owner, admin, member, other = (sign_in(gw, unique(n)) for n in ("own", "adm", "mem", "oth"))
    rid = created(owner)
    invite(owner, rid, admin, "admin")
    invite(owner, rid, member)

    def state():
        room = owner.call("GET", f"/api/v1/rooms/{rid}").json()
        roles = {m["user_id"]: m["role"] for m in owner.call("GET", f"/api/v1/rooms/{rid}/members").json()["members"]}
        return room["owner_id"], room["visibility"], roles

    before = state()
    # A member claims the room, or a role, through fields no route reads.
    forged = {"owner_id": member.id, "visibility": "public", "user_id": owner.id, "my_role": "owner", "role": "owner"}
    assert member.call("PATCH", f"/api/v1/rooms/{rid}", {"topic": "mine", **forged}).json()["code"] == "forbidden"
    reply = member.call("POST", f"/api/v1/rooms/{rid}/members", {"user_id": member.id, "role": "owner"})
    assert reply.status_code == 403 and reply.json()["code"] == "forbidden", reply.text
    reply = member.call("POST", f"/api/v1/rooms/{rid}/members", {"user_id": other.id, "by": owner.id, "caller": owner.id})
    assert reply.status_code == 403 and reply.json()["code"] == "forbidden", reply.text
    reply = member.call("PUT", f"/api/v1/rooms/{rid}/members/{member.id}", {"role": "owner", "user_id": owner.id})
    assert reply.status_code == 403 and reply.json()["code"] == "forbidden", reply.text
    reply = member.call("POST", f"/api/v1/rooms/{rid}/bans", {"user_id": admin.id, "by": owner.id, "role": "owner"})
    assert reply.status_code == 403 and reply.json()["code"] == "forbidden", reply.text
    # An admin's accepted PATCH changes only what PATCH may change.
    reply = admin.call("PATCH", f"/api/v1/rooms/{rid}", {"topic": "admin's", **{**forged, "owner_id": admin.id}})
    assert reply.status_code == 200, reply.text
    assert reply.json()["owner_id"] == owner.id and reply.json()["visibility"] == "private"
    assert reply.json()["my_role"] == "admin"
    # An admin cannot invite itself as owner, nor promote itself.
    reply = admin.call("POST", f"/api/v1/rooms/{rid}/members", {"user_id": admin.id, "role": "owner"})
    assert reply.status_code in (400, 403), reply.text
    reply = admin.call("PUT", f"/api/v1/rooms/{rid}/members/{admin.id}", {"role": "owner"})
    assert reply.status_code == 403 and reply.json()["code"] == "forbidden", reply.text
    assert state() == before
    # Creating a room for someone else, or with a role: the creator owns it.
    reply = member.call("POST", "/api/v1/rooms", {"name": unique("forged"), "visibility": "private",
                                                  "owner_id": owner.id, "my_role": "member", "user_id": owner.id})
    assert reply.status_code == 201, reply.text
    assert reply.json()["owner_id"] == member.id and reply.json()["my_role"] == "owner"
    assert owner.call("GET", f"/api/v1/rooms/{reply.json()['id']}").status_code == 404
    # A direct room cannot be made public (or anything) by its body.
    dm = other.call("POST", "/api/v1/dms", {"user_id": member.id, "visibility": "public", "name": "open"})
    assert dm.status_code == 200 and dm.json()["visibility"] == "direct", dm.text
    assert owner.call("GET", f"/api/v1/rooms/{dm.json()['id']}").status_code == 404


def test_forged_fields_in_websocket_frames_are_ignored(gw):
    owner, member, outsider = (sign_in(gw, unique(n)) for n in ("own", "mem", "out"))
    rid = created(owner)
    invite(owner, rid, member)

    async def scenario():
        watcher = await Client.open(owner.ws_url(), "owner")
        await watcher.join(rid)
        # The outsider's join names the member: the token decides who joins, so the room stays hidden.
        intruder = await Client.open(outsider.ws_url(), "outsider")
        for frame in ({"type": "join", "room_id": rid, "user_id": member.id, "username": member.name},
                      {"type": "join", "room_id": rid, "user_id": owner.id, "role": "owner", "token": owner.jwt}):
            reply = await intruder.request(frame, "joined")
            assert reply["type"] == "error" and reply["code"] == "room_not_found", reply
        reply = await intruder.request({"type": "history", "room_id": rid, "user_id": member.id}, "history")
        assert reply["type"] == "error" and reply["code"] == "room_not_found", reply
        # The member's frames that name the owner are the member's.
        client = await Client.open(member.ws_url(), "member")
        joined = await client.request({"type": "join", "room_id": rid, "user_id": owner.id, "username": "owner"}, "joined")
        assert joined["type"] == "joined" and joined["room"]["my_role"] == "member", joined
        # (The watcher's own join is announced too; the next one is the member's, whatever name it shows.)
        seen = await watcher.wait_for("user_joined", room_id=rid, where=lambda f: f.get("username") != owner.name)
        assert seen["user_id"] == member.id and seen["username"] == member.name, seen
        await client.send({"type": "message", "room_id": rid, "content": "forged", "client_msg_id": "f-1",
                           "user_id": owner.id, "username": owner.name, "role": "owner"})
        message = await watcher.wait_for("message", content="forged")
        assert message["user_id"] == member.id and message["username"] == member.name, message
        for c in (watcher, intruder, client):
            await c.ws.close()

    run(scenario())
    stored = owner.call("GET", f"/api/v1/rooms/{rid}/history").json()["messages"]
    assert [(m["user_id"], m["content"]) for m in stored] == [(member.id, "forged")]


# --- another user's private room is indistinguishable from a missing one --------------------------------------

def normalised(text: str, rid: str) -> str:
    return text.replace(rid, "<room>")


def rest_probes(owner, stranger) -> list[tuple[str, str, dict | None]]:
    """(method, path under the room, body): every route, with valid, invalid and forged bodies."""
    someone = str(uuid.uuid4())
    return [
        ("GET", "", None), ("GET", "/history", None), ("GET", "/history?limit=1", None), ("GET", "/members", None),
        ("GET", "/members?limit=1", None),
        ("PATCH", "", {"name": "taken over"}), ("PATCH", "", {"name": ""}), ("PATCH", "", {"archived": True}),
        ("PATCH", "", {"topic": "x" * 600}), ("DELETE", "", None),
        ("POST", "/members", {"user_id": stranger.id}), ("POST", "/members", {"user_id": owner.id, "role": "owner"}),
        ("POST", "/members", {"user_id": stranger.id, "role": "boss"}), ("POST", "/members", {"user_id": "nope"}),
        ("POST", "/members", {"user_id": someone}),
        ("DELETE", f"/members/{stranger.id}", None), ("DELETE", f"/members/{owner.id}", None),
        ("DELETE", f"/members/{someone}", None),
        ("PUT", f"/members/{stranger.id}", {"role": "owner"}), ("PUT", f"/members/{owner.id}", {"role": "member"}),
        ("PUT", f"/members/{owner.id}", {"role": "boss"}),
        ("POST", "/bans", {"user_id": owner.id}), ("POST", "/bans", {"user_id": owner.id, "seconds": 0}),
        ("POST", "/bans", {"user_id": "nope"}), ("POST", "/bans", {"user_id": stranger.id}),
        ("DELETE", f"/bans/{owner.id}", None), ("DELETE", f"/bans/{someone}", None),
        ("POST", "/mutes", {"user_id": owner.id}), ("POST", "/mutes", {"user_id": owner.id, "seconds": -5}),
        ("POST", "/mutes", {"user_id": "nope"}), ("DELETE", f"/mutes/{owner.id}", None),
    ]


@pytest.mark.parametrize("kind", ["private", "direct"])
@pytest.mark.parametrize("anonymous", [False, True], ids=["signed-in", "anonymous"])
def test_another_users_room_is_answered_like_a_random_id_by_every_route(gw, kind, anonymous):
    owner, friend, stranger = (sign_in(gw, unique(n)) for n in ("own", "fri", "str"))
    if kind == "private":
        rid = created(owner)
        invite(owner, rid, friend)
    else:
        rid = owner.call("POST", "/api/v1/dms", {"user_id": friend.id}).json()["id"]
    missing = str(uuid.uuid4())
    differ = []
    for method, path, body in rest_probes(owner, stranger):
        there = stranger.call(method, f"/api/v1/rooms/{rid}{path}", body, anonymous=anonymous)
        nowhere = stranger.call(method, f"/api/v1/rooms/{missing}{path}", body, anonymous=anonymous)
        seen = (there.status_code, normalised(there.text, rid))
        unseen = (nowhere.status_code, normalised(nowhere.text, missing))
        if seen != unseen:
            differ.append(f"{method} …{path} {body}: {seen} but for a random id {unseen}")
    assert not differ, "\n".join(differ)
    # Nothing changed: the owner's room is as it was.
    room = owner.call("GET", f"/api/v1/rooms/{rid}")
    assert room.status_code == 200 and room.json()["archived"] is False, room.text
    roles = {m["user_id"]: m["role"] for m in owner.call("GET", f"/api/v1/rooms/{rid}/members").json()["members"]}
    assert stranger.id not in roles and len(roles) == 2


def test_another_users_room_is_answered_like_a_random_id_by_every_frame(gw):
    owner, friend, stranger = (sign_in(gw, unique(n)) for n in ("own", "fri", "str"))
    rid = created(owner)
    invite(owner, rid, friend)
    dm = owner.call("POST", "/api/v1/dms", {"user_id": friend.id}).json()["id"]
    missing = str(uuid.uuid4())

    async def scenario():
        client = await Client.open(stranger.ws_url(), "stranger")
        frames = [
            {"type": "join"}, {"type": "join", "since": 0}, {"type": "history"}, {"type": "history", "limit": 1},
            {"type": "members"}, {"type": "members", "limit": 1}, {"type": "typing"}, {"type": "leave"},
            {"type": "message", "content": "hi", "client_msg_id": "p-1"},
        ]
        differ = []
        for frame in frames:
            answers = {}
            for room in (rid, dm, missing):
                start = len(client.frames)
                await client.send({**frame, "room_id": room})
                # Every frame here is answered with an error; the reader keeps them in order.
                reply = await client._find(start, lambda f: f.get("type") == "error", 5, f"answer to {frame}")
                answers[room] = normalised(str(client.frames[reply].data), room)
            if len(set(answers.values())) != 1:
                differ.append(f"{frame}: private {answers[rid]}, direct {answers[dm]}, random {answers[missing]}")
        listed = await client.request({"type": "room_list", "limit": 1000}, "room_list")
        assert {rid, dm}.isdisjoint(r["id"] for r in listed["rooms"])
        await client.ws.close()
        assert not differ, "\n".join(differ)

    run(scenario())


# --- a removed or banned member's sockets get nothing of the room afterwards -----------------------------------

@pytest.mark.parametrize("visibility,how", [("private", "remove"), ("private", "ban"), ("public", "ban")])
def test_a_cut_off_member_receives_nothing_of_the_room_afterwards(gw, visibility, how):
    owner, victim, witness, newcomer = (sign_in(gw, unique(n)) for n in ("own", "vic", "wit", "new"))
    rid = created(owner, visibility)
    if visibility == "private":
        for user in (victim, witness, newcomer):
            invite(owner, rid, user)

    async def scenario():
        speaker = await Client.open(owner.ws_url(), "owner")
        observer = await Client.open(witness.ws_url(), "witness")
        victims = [await Client.open(victim.ws_url(), f"victim-{i}") for i in range(2)]
        for client in (speaker, observer, *victims):
            await client.join(rid)
        assert (await speaker.send_message("before", rid))["type"] == "ack"
        for client in victims:
            await client.wait_for("message", content="before")
        marks = [len(client.frames) for client in victims]
        if how == "remove":
            reply = await asyncio.to_thread(owner.call, "DELETE", f"/api/v1/rooms/{rid}/members/{victim.id}")
        else:
            reply = await asyncio.to_thread(owner.call, "POST", f"/api/v1/rooms/{rid}/bans", {"user_id": victim.id})
        assert reply.status_code in (200, 201), reply.text
        # Everything a member sees: typing, a message, a join and a leave, a change of the room.
        await observer.send({"type": "typing", "room_id": rid})
        await speaker.send({"type": "typing", "room_id": rid})
        assert (await speaker.send_message("after", rid))["type"] == "ack"
        late = await Client.open(newcomer.ws_url(), "newcomer")
        await late.join(rid)
        await late.ws.close()
        patched = await asyncio.to_thread(owner.call, "PATCH", f"/api/v1/rooms/{rid}", {"topic": "after the cut"})
        assert patched.status_code == 200, patched.text
        assert (await speaker.send_message("last", rid))["type"] == "ack"
        await observer.wait_for("typing", room_id=rid, user_id=owner.id)
        await observer.wait_for("user_left", room_id=rid, user_id=newcomer.id)
        await observer.wait_for("room_updated", room_id=rid)
        await observer.wait_for("message", content="last")
        reason = "removed" if how == "remove" else "banned"
        for client, mark in zip(victims, marks):
            removed = await client.wait_for("removed", room_id=rid)
            assert removed["reason"] == reason, removed
            leaked = [f.data for f in client.frames[mark:] if f.data.get("room_id") == rid and f.data is not removed]
            assert not leaked, f"{client.label} got frames of the room after it was cut off: {leaked}"
            refused = await client.request({"type": "typing", "room_id": rid}, "never")
            assert refused["type"] == "error" and refused["code"] == "not_in_room", refused
        for client in (speaker, observer, *victims):
            await client.ws.close()

    run(scenario())


def test_a_muted_members_typing_notices_reach_nobody(gw):
    """RoomPolicy's send covers messages and typing notices: a mute silences both."""
    owner, muted, speaker = (sign_in(gw, unique(n)) for n in ("own", "mut", "spk"))
    rid = created(owner)
    for user in (muted, speaker):
        invite(owner, rid, user)
    reply = owner.call("POST", f"/api/v1/rooms/{rid}/mutes", {"user_id": muted.id})
    assert reply.status_code == 201, reply.text

    async def scenario():
        listener = await Client.open(owner.ws_url(), "owner")
        silenced = await Client.open(muted.ws_url(), "muted")
        talker = await Client.open(speaker.ws_url(), "speaker")
        for client in (listener, silenced, talker):
            await client.join(rid)
        refused = await silenced.send_message("may I?", rid)
        assert refused["type"] == "error" and refused["code"] == "muted", refused
        await silenced.send({"type": "typing", "room_id": rid})
        # Through the same gateway and NATS connection: the speaker's notice comes after the muted one's.
        await talker.send({"type": "typing", "room_id": rid})
        await listener.wait_for("typing", room_id=rid, user_id=speaker.id)
        typed = [f.data for f in listener.frames if f.data.get("type") == "typing" and f.data.get("user_id") == muted.id]
        assert not typed, f"a muted member's typing notice was delivered: {typed}"
        for client in (listener, silenced, talker):
            await client.ws.close()

    run(scenario())


# --- room lists ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def crowded(gw):
    """30 private rooms of one user with public rooms among them, and another user with a private room."""
    owner, other = sign_in(gw, unique("own")), sign_in(gw, unique("oth"))
    hidden = {created(owner) for _ in range(30)}
    shown = {created(owner, "public") for _ in range(5)}
    return owner, other, hidden, shown, created(other)


def list_pages(user, limit: int, anonymous: bool) -> list[list[str]]:
    found, after = [], None
    while True:
        path = f"/api/v1/rooms?limit={limit}" + (f"&after={after}" if after else "")
        page = user.call("GET", path, anonymous=anonymous).json()
        ids = [r["id"] for r in page["rooms"]]
        assert len(ids) <= limit, page
        found.append(ids)
        if not page.get("has_more"):
            return found
        after = page["next"]
        assert len(found) < 500, "paging does not end"


@pytest.mark.parametrize("limit", [1, 2, 3, 7, 50])
def test_no_room_list_page_shows_another_users_private_room(crowded, limit):
    _, other, hidden, shown, mine = crowded
    for anonymous in (False, True):
        flat = [rid for page in list_pages(other, limit, anonymous) for rid in page]
        assert not hidden & set(flat), f"limit {limit}: a private room of another user is listed"
        assert shown <= set(flat) and len(flat) == len(set(flat)), f"limit {limit}: public rooms missing or repeated"
        assert (mine in flat) is not anonymous

    async def socket_pages():
        client = await Client.open(other.ws_url(), "other")
        after, seen = None, []
        while True:
            frame = {"type": "room_list", "limit": limit, **({"after": after} if after else {})}
            page = await client.request(frame, "room_list")
            seen += [r["id"] for r in page["rooms"]]
            if not page.get("has_more"):
                break
            after = page["next"]
        await client.ws.close()
        return seen

    seen = run(socket_pages())
    assert not hidden & set(seen) and shown <= set(seen) and mine in seen


@pytest.mark.parametrize("limit", [1, 3])
def test_room_list_pages_do_not_tell_where_hidden_rooms_are(crowded, limit):
    """A page shorter than its limit before the last one tells that (and where, and how many) rooms
    the caller may not see were skipped: pages are full until the end."""
    _, other, _, _, _ = crowded
    listed = list_pages(other, limit, False)
    short = [i for i, page in enumerate(listed[:-1]) if len(page) < limit]
    assert not short, f"limit {limit}: {len(short)} of {len(listed)} pages short before the end: {listed}"
