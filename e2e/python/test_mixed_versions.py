"""Mixed versions in token mode: the current build next to release a5fbf68 (the release before private
rooms) on one real nats-server, each part replaced by its old build in turn.

The old binaries are found in ``A5FBF68_BIN_DIR`` (``scripts/test`` builds them once with
``scripts/old-release`` into ``.build-a5fbf68/bin``); without the variable that directory is used if it
is there, and the module is skipped otherwise.

- An old gateway (new chat-service and broadcaster): it sends no gateway credential (and no user token),
  so by default the chat-service refuses every join and send it makes (``unauthorized``); with
  ``CHAT_ALLOW_LEGACY_GATEWAYS=1`` on the chat-service its public rooms work end to end, as before. A
  private room created through a new gateway does not exist through it (list, GET, history, join), the
  same member joins through a new gateway.
- An old chat-service in the queue group of a new one (new gateway): a private create is answered by the
  new replica or fails 503, never yields a public room; whatever the old replica answers about a private
  room is ``room_not_found``, never its name or messages; with the old replica stopped everything works.
- An old broadcaster (new chat-service and gateway): public rooms are delivered; the membership and
  moderation events are skipped ("skipping unknown event"). So a gateway takes every socket out of a
  private room at that room's first delivery without ``Chat-Broadcaster-Features: access`` (they get
  ``removed`` with reason ``unavailable``): nothing of a private room is delivered through an old
  broadcaster, and a removed member cannot keep receiving it.

Which replica of a queue group answers is nats-server's random choice per request, so the tests repeat
requests (``TRIES``) and require that both answers were seen.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from accessclient import TOKEN_ENV, User, sign_in, token
from chatclient import Client, run, unique
from system import REPO_ROOT, System

OLD_BIN_DIR = Path(os.environ.get("A5FBF68_BIN_DIR") or REPO_ROOT / ".build-a5fbf68" / "bin")
OLD = {name: OLD_BIN_DIR / name for name in ("gateway", "chat-service", "broadcaster")}
# Requests repeated so that a two-replica queue group sends some to each (each one is a coin flip).
TRIES = 40


@pytest.fixture
def system(tmp_path):
    if not all(os.access(binary, os.X_OK) for binary in OLD.values()):
        if os.environ.get("A5FBF68_BIN_DIR"):
            pytest.fail(f"A5FBF68_BIN_DIR={OLD_BIN_DIR} lacks the a5fbf68 gateway, chat-service or broadcaster")
        pytest.skip(f"no a5fbf68 binaries in {OLD_BIN_DIR} (scripts/old-release builds them)")
    system = System(tmp_path / "mixed")
    try:
        system.start_nats()
        yield system
    finally:
        system.stop()


def private_room(owner: User, *members: User) -> dict:
    reply = owner.call("POST", "/api/v1/rooms", {"name": unique("secret"), "visibility": "private"})
    assert reply.status_code == 201 and reply.json()["visibility"] == "private", reply.text
    room = reply.json()
    for member in members:
        invited = owner.call("POST", f"/api/v1/rooms/{room['id']}/members", {"user_id": member.id})
        assert invited.status_code == 201, invited.text
    return room


def through(gateway, user: User) -> User:
    """The same user (same token) talking to another gateway."""
    return User(gateway, user.name, user.jwt, user.id)


async def first_of(client: Client, start: int, timeout: float, **cases) -> tuple[str, dict]:
    """The first frame from index `start` that one of `cases` (name → predicate) matches, and its name."""
    index = await client._find(start, lambda f: any(match(f) for match in cases.values()), timeout, " or ".join(cases))
    frame = client.frames[index].data
    return next(name for name, match in cases.items() if match(frame)), frame


def assert_all_running(system: System) -> None:
    for process in system.processes:
        process.assert_running()


# --- an old gateway ------------------------------------------------------------------------------------------

def old_gateway_system(system: System, legacy: bool = True):
    system.add_chat_service({**TOKEN_ENV, "CHAT_ALLOW_LEGACY_GATEWAYS": "1" if legacy else "0"})
    system.add_broadcaster()
    new = system.add_gateway(TOKEN_ENV)
    old = system.add_gateway(TOKEN_ENV, binary=OLD["gateway"])
    return new, old


def test_an_old_gateway_shows_no_private_room_and_can_join_no_one(system):
    new, old = old_gateway_system(system)
    owner, member = sign_in(new, unique("own")), sign_in(new, unique("mem"))
    room = private_room(owner, member)
    rid = room["id"]
    assert owner.call("GET", f"/api/v1/rooms/{rid}").status_code == 200
    public = through(old, owner).call("POST", "/api/v1/rooms", {"name": unique("public")})
    assert public.status_code == 201, public.text

    # Through the old gateway (it forwards no user token: every REST call is anonymous there).
    for user in (through(old, owner), through(old, member)):
        listed = user.call("GET", "/api/v1/rooms?limit=1000")
        assert listed.status_code == 200 and rid not in listed.text and room["name"] not in listed.text, listed.text
        assert public.json()["id"] in listed.text
        for path in (f"/api/v1/rooms/{rid}", f"/api/v1/rooms/{rid}/history"):
            reply = user.call("GET", path)
            assert reply.status_code == 404 and reply.json()["code"] == "room_not_found", (path, reply.text)
            assert room["name"] not in reply.text

    async def scenario():
        old_socket = await Client.open(through(old, member).ws_url(), "member@old")
        # A legacy gateway is taken on its word, which names no verified user: the private room does not
        # exist for its joins; its public rooms work.
        reply = await old_socket.request({"type": "join", "room_id": rid}, "joined")
        assert reply["type"] == "error" and reply["code"] == "room_not_found", reply
        assert room["name"] not in str(reply)
        assert (await old_socket.join(public.json()["id"]))["room_id"] == public.json()["id"]
        refused = await old_socket.send_message("through the old gateway", rid)
        assert refused["type"] == "error", refused
        new_socket = await Client.open(member.ws_url(), "member@new")
        joined = await new_socket.join(rid)
        assert joined["room"]["name"] == room["name"] and joined["room"]["my_role"] == "member", joined
        speaker = await Client.open(owner.ws_url(), "owner@new")
        await speaker.join(rid)
        assert (await speaker.send_message("hello member", rid))["type"] == "ack"
        await new_socket.wait_for("message", content="hello member")
        assert not old_socket.messages(rid), old_socket.messages(rid)
        for client in (old_socket, new_socket, speaker):
            await client.close()

    run(scenario())
    history = member.call("GET", f"/api/v1/rooms/{rid}/history").json()["messages"]
    assert [m["content"] for m in history] == ["hello member"], history
    assert_all_running(system)


def test_without_the_legacy_setting_an_old_gateway_joins_and_sends_nothing(system):
    new, old = old_gateway_system(system, legacy=False)
    ann = sign_in(new, unique("ann"))
    rid = ann.call("POST", "/api/v1/rooms", {"name": unique("public")}).json()["id"]

    async def scenario():
        old_socket = await Client.open(through(old, ann).ws_url(), "ann@old")
        reply = await old_socket.request({"type": "join", "room_id": rid}, "joined")
        assert reply["type"] == "error" and reply["code"] == "unauthorized", reply
        await old_socket.close()

    run(scenario())


def test_an_old_gateway_serves_public_rooms_end_to_end(system):
    new, old = old_gateway_system(system)
    ann, bob = sign_in(new, unique("ann")), sign_in(new, unique("bob"))
    created = through(old, ann).call("POST", "/api/v1/rooms", {"name": unique("public")})
    assert created.status_code == 201, created.text
    rid = created.json()["id"]
    assert rid in through(old, bob).call("GET", "/api/v1/rooms?limit=1000").text

    async def scenario():
        sender = await Client.open(through(old, ann).ws_url(), "ann@old")
        listener = await Client.open(through(old, bob).ws_url(), "bob@old")
        on_new = await Client.open(bob.ws_url(), "bob@new")
        for client in (sender, listener, on_new):
            await client.join(rid)
        ack = await sender.send_message("through the old gateway", rid)
        assert ack["type"] == "ack", ack
        for client in (listener, on_new):
            await client.wait_for("message", content="through the old gateway")
        for client in (sender, listener, on_new):
            await client.close()

    run(scenario())
    history = through(old, bob).call("GET", f"/api/v1/rooms/{rid}/history").json()["messages"]
    assert [m["content"] for m in history] == ["through the old gateway"]


# --- an old chat-service in the queue group -------------------------------------------------------------------

def test_an_old_chat_service_replica_never_makes_or_shows_a_private_room(system):
    new_service = system.add_chat_service(TOKEN_ENV)
    old_service = system.add_chat_service(TOKEN_ENV, binary=OLD["chat-service"])
    system.add_broadcaster()
    gw = system.add_gateway(TOKEN_ENV)
    owner, member = sign_in(gw, unique("own")), sign_in(gw, unique("mem"))

    # Creates: private ones go to the subject only the new replica serves.
    for _ in range(TRIES // 4):
        reply = owner.call("POST", "/api/v1/rooms", {"name": unique("secret"), "visibility": "private"})
        assert reply.status_code == 201 and reply.json()["visibility"] == "private", reply.text
    room = private_room(owner, member)
    rid = room["id"]

    async def join_and_send():
        """Joined and one message stored, retried while the old replica answers (room_not_found)."""
        client = await Client.open(owner.ws_url(), "owner")
        for _ in range(TRIES):
            reply = await client.request({"type": "join", "room_id": rid}, "joined")
            if reply["type"] == "joined":
                break
            assert reply["code"] == "room_not_found", reply
        else:
            raise AssertionError(f"no join answered by the new replica in {TRIES} tries")
        for _ in range(TRIES):
            reply = await client.send_message("secret content", rid)
            if reply["type"] == "ack":
                break
            assert reply["code"] == "room_not_found", reply
        else:
            raise AssertionError(f"no send answered by the new replica in {TRIES} tries")
        await client.close()

    run(join_and_send())

    # Reads: the new replica's answer, or the old replica's room_not_found; both must be seen.
    answers: dict[str, set[int]] = {"room": set(), "history": set(), "list": set()}
    for _ in range(TRIES):
        for user in (owner, member):
            reply = user.call("GET", f"/api/v1/rooms/{rid}")
            answers["room"].add(reply.status_code)
            if reply.status_code == 200:
                assert reply.json()["visibility"] == "private" and reply.json()["name"] == room["name"], reply.text
            else:
                assert reply.status_code == 404 and reply.json()["code"] == "room_not_found", reply.text
                assert room["name"] not in reply.text
            reply = user.call("GET", f"/api/v1/rooms/{rid}/history")
            answers["history"].add(reply.status_code)
            if reply.status_code == 200:
                assert [m["content"] for m in reply.json()["messages"]] == ["secret content"], reply.text
            else:
                assert reply.status_code == 404 and reply.json()["code"] == "room_not_found", reply.text
                assert "secret content" not in reply.text
            listed = user.call("GET", "/api/v1/rooms?limit=1000").json()["rooms"]
            mine = [r for r in listed if r["id"] == rid]
            answers["list"].add(len(mine))
            assert all(r["visibility"] == "private" for r in mine), mine
            assert all(r["visibility"] == "public" for r in listed if r["id"] != rid and "owner_id" not in r)
    assert answers == {"room": {200, 404}, "history": {200, 404}, "list": {0, 1}}, answers

    async def member_joins():
        client = await Client.open(member.ws_url(), "member")
        codes = set()
        for _ in range(TRIES):
            reply = await client.request({"type": "join", "room_id": rid}, "joined")
            if reply["type"] == "joined":
                assert reply["room"]["name"] == room["name"] and reply["room"]["visibility"] == "private", reply
                codes.add("joined")
                # A leave answered by the old replica fails too (room_not_found; the socket stays in the room).
                for _ in range(TRIES):
                    left = await client.request({"type": "leave", "room_id": rid}, "left")
                    if left["type"] == "left":
                        break
                    assert left["code"] == "room_not_found", left
                    codes.add("leave refused")
                else:
                    raise AssertionError(f"no leave answered by the new replica in {TRIES} tries")
            else:
                assert reply["code"] == "room_not_found" and room["name"] not in str(reply), reply
                codes.add(reply["code"])
        assert {"joined", "room_not_found"} <= codes, codes
        await client.close()

    run(member_joins())

    # Only the old replica: private creates have no responder; the private room does not exist.
    assert new_service.terminate() == 0
    reply = owner.call("POST", "/api/v1/rooms", {"name": unique("secret"), "visibility": "private"})
    assert reply.status_code == 503 and reply.json()["code"] == "unavailable", reply.text
    for path in (f"/api/v1/rooms/{rid}", f"/api/v1/rooms/{rid}/history"):
        reply = owner.call("GET", path)
        assert reply.status_code == 404 and reply.json()["code"] == "room_not_found", (path, reply.text)
    assert rid not in owner.call("GET", "/api/v1/rooms?limit=1000").text
    public = owner.call("POST", "/api/v1/rooms", {"name": unique("public")})
    assert public.status_code == 201 and public.json()["visibility"] == "public", public.text

    # The old replica gone, the new one back: everything works, every time.
    new_service.restart()
    assert old_service.terminate() == 0
    for _ in range(TRIES // 4):
        assert owner.call("GET", f"/api/v1/rooms/{rid}").json()["name"] == room["name"]
        history = member.call("GET", f"/api/v1/rooms/{rid}/history").json()["messages"]
        assert [m["content"] for m in history] == ["secret content"]
        reply = owner.call("POST", "/api/v1/rooms", {"name": unique("secret"), "visibility": "private"})
        assert reply.status_code == 201 and reply.json()["visibility"] == "private", reply.text

    async def all_new():
        speaker, listener = await Client.open(owner.ws_url(), "owner"), await Client.open(member.ws_url(), "member")
        for client in (speaker, listener):
            await client.join(rid)
        assert (await speaker.send_message("all new", rid))["type"] == "ack"
        await listener.wait_for("message", content="all new")
        await speaker.close()
        await listener.close()

    run(all_new())
    for process in (system.nats, new_service, *system.broadcasters, *system.gateways):
        process.assert_running()


# --- an old broadcaster ---------------------------------------------------------------------------------------

def old_broadcaster_system(system: System):
    system.add_chat_service(TOKEN_ENV)
    broadcaster = system.add_broadcaster(binary=OLD["broadcaster"])
    gw = system.add_gateway(TOKEN_ENV)
    owner, member, other = (sign_in(gw, unique(name)) for name in ("own", "mem", "oth"))
    public = owner.call("POST", "/api/v1/rooms", {"name": unique("public")}).json()["id"]
    room = private_room(owner, member, other)
    return broadcaster, owner, member, other, public, room["id"]


def test_an_old_broadcaster_delivers_public_rooms_and_no_private_room(system):
    broadcaster, owner, member, other, public, rid = old_broadcaster_system(system)

    async def scenario():
        speaker, victim, witness = [await Client.open(u.ws_url(), u.name) for u in (owner, member, other)]
        for client in (speaker, victim, witness):
            await client.join(public)
            await client.join(rid)
        # The private room's first delivery through the old broadcaster (a join's UserJoined or this
        # message) takes every socket out of it: the old broadcaster would skip removals.
        await speaker.send_message("private before", rid)  # stored, or refused when the socket is already out
        for client in (speaker, victim, witness):
            removed = await client.wait_for("removed", room_id=rid)
            assert removed["reason"] == "unavailable", removed
        assert (await speaker.send_message("public before", public))["type"] == "ack"
        removal = await asyncio.to_thread(owner.call, "DELETE", f"/api/v1/rooms/{rid}/members/{member.id}")
        assert removal.status_code == 200, removal.text
        again = await Client.open(member.ws_url(), "member again")
        reply = await again.request({"type": "join", "room_id": rid}, "joined")
        assert reply["type"] == "error" and reply["code"] == "room_not_found", reply
        # The owner may join again (its socket left the room with a leave), and is taken out again at the
        # room's next delivery (its own UserJoined, unless that came before its socket was added, or this
        # message); the removed member gets nothing of the room.
        await speaker.join(rid)
        await speaker.send_message("private after", rid)
        await speaker.wait_for("removed", room_id=rid)
        assert (await speaker.send_message("public after", public))["type"] == "ack"
        for client in (speaker, victim, witness):
            await client.wait_for("message", content="public after")
        leaked = [m for c in (victim, witness, again) for m in c.messages(rid)]
        assert not leaked, leaked
        for client in (speaker, victim, witness, again):
            await client.close()

    run(scenario())

    def skipped() -> list[str]:
        return [line for line in broadcaster.log.read_text(errors="replace").splitlines()
                if "skipping unknown event" in line and f"chat.room.{rid}.presence" in line]

    # Two MemberAdded.v1 and the MemberRemoved.v1 at least (the broadcaster logs as it consumes).
    deadline = time.monotonic() + 10
    while len(skipped()) < 3:
        assert time.monotonic() < deadline, f"the old broadcaster logged {len(skipped())} skipped events of the room"
        time.sleep(0.05)
    assert_all_running(system)


# --- the order that works ----------------------------------------------------------------------------------

def test_gateways_then_broadcaster_then_chat_services_keeps_a_public_room_going(system):
    """From an all-a5fbf68 system, one part at a time: the gateway (the old chat-service ignores the new
    headers; private creates have no responder), the broadcaster, then the chat-service (private rooms
    exist only from here on, when every part applies removals)."""
    old_service = system.add_chat_service(TOKEN_ENV, binary=OLD["chat-service"])
    old_broadcaster = system.add_broadcaster(binary=OLD["broadcaster"])
    old_gateway = system.add_gateway(TOKEN_ENV, binary=OLD["gateway"])
    ann, bob = token("ann"), token("bob")
    created = User(old_gateway, "ann", ann).call("POST", "/api/v1/rooms", {"name": unique("public")})
    assert created.status_code == 201, created.text
    rid = created.json()["id"]
    sent: list[str] = []

    async def chat(gateway, step: str):
        speaker = await Client.open(gateway.ws_url(None, token=ann), "ann")
        listener = await Client.open(gateway.ws_url(None, token=bob), "bob")
        for client in (speaker, listener):
            await client.join(rid)
        ack = await speaker.send_message(step, rid)
        assert ack["type"] == "ack" and ack["seq"] == len(sent) + 1, (step, ack)
        sent.append(step)
        await listener.wait_for("message", content=step)
        await speaker.close()
        await listener.close()

    def private_create(gateway) -> int:
        return User(gateway, "ann", ann).call("POST", "/api/v1/rooms", {"name": unique("secret"), "visibility": "private"}).status_code

    run(chat(old_gateway, "all old"))
    new_gateway = system.add_gateway(TOKEN_ENV)
    assert old_gateway.terminate() == 0
    run(chat(new_gateway, "new gateway"))
    assert private_create(new_gateway) == 503
    assert old_broadcaster.terminate() == 0
    system.add_broadcaster()
    run(chat(new_gateway, "new broadcaster"))
    assert private_create(new_gateway) == 503
    system.add_chat_service(TOKEN_ENV)
    assert old_service.terminate() == 0
    run(chat(new_gateway, "new chat-service"))
    assert private_create(new_gateway) == 201
    history = User(new_gateway, "ann", ann).call("GET", f"/api/v1/rooms/{rid}/history").json()
    assert [m["content"] for m in history["messages"]] == sent
