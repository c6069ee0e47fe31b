"""Who may do what to a room (token mode), as one table checked cell by cell against the real system:
every room operation (WebSocket frames, REST reads, the room list, every management route, opening a
direct room) for every kind of caller (owner, admin, member, non-member, banned, muted, anonymous) in
every kind of room (public, private, direct).

`MATRIX` is the expectation: what the right answer is, derived from the access rules (a room the caller
may not see does not exist for them, managing needs a rank above the target). Operations that change
state run on a fresh room per cell; reads share one room per visibility with the whole cast. A cell
answered with a 2xx is also checked for its effect (a deleted room is gone, a transferred room has its
new owner …), so "ok" means done, not just accepted.

`python e2e/python/test_access_matrix.py --markdown` prints the table as Markdown; docs/access-matrix.md
holds that output between its markers, and `test_the_document_shows_this_table` keeps the two equal.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from accessclient import TOKEN_ENV, User, sign_in
from chatclient import Client, Rejected, run, unique
from system import System

ACTORS = ("owner", "admin", "member", "non-member", "banned", "muted", "anonymous")
VISIBILITIES = ("public", "private", "direct")

# Cell values: "ok" (2xx, or the WebSocket reply the operation asks for, and its effect seen), an HTTP
# status with the error code (REST, and a refused WebSocket upgrade), or a WebSocket error frame's code.
OK = "ok"
NA = "—"  # a direct room has two members and no roles, bans or mutes: no such caller exists
LISTED, HIDDEN = "listed", "hidden"
NOT_FOUND = "404 room_not_found"
FORBIDDEN = "403 forbidden"
NOT_MEMBER = "403 not_member"
# Token mode: the gateway refuses a WebSocket upgrade or a REST write without a valid token itself.
UNAUTHORIZED = "401 unauthorized"
INVALID = "400 invalid_request"
WS_NOT_FOUND = "room_not_found"
NOT_IN_ROOM = "not_in_room"
WS_BANNED = "banned"
WS_MUTED = "muted"

# What each operation does, in the order of the table (the target, where there is one, in brackets).
OPERATIONS = {
    "ws join": "`join` frame",
    "ws send": "`message` frame after a `join` (sent also when the join was refused)",
    "ws history": "`history` frame",
    "ws members": "`members` frame",
    "get room": "`GET /api/v1/rooms/:id`",
    "rest history": "`GET /api/v1/rooms/:id/history`",
    "rest members": "`GET /api/v1/rooms/:id/members`",
    "room list": "the room on a page of `GET /api/v1/rooms`",
    "rename": "`PATCH /api/v1/rooms/:id {name}`",
    "archive": "`PATCH /api/v1/rooms/:id {archived: true}`",
    "delete": "`DELETE /api/v1/rooms/:id`",
    "invite": "`POST /api/v1/rooms/:id/members {user_id}` [a signed-in user not on the roster]",
    "remove member": "`DELETE /api/v1/rooms/:id/members/:user_id` [a member]",
    "leave": "`DELETE /api/v1/rooms/:id/members/:user_id` [the caller; anonymous: a member]",
    "set role": "`PUT /api/v1/rooms/:id/members/:user_id {role: admin}` [a member]",
    "transfer": "`PUT /api/v1/rooms/:id/members/:user_id {role: owner}` [a member]",
    "ban": "`POST /api/v1/rooms/:id/bans {user_id}` [a member]",
    "unban": "`DELETE /api/v1/rooms/:id/bans/:user_id` [a banned user]",
    "mute": "`POST /api/v1/rooms/:id/mutes {user_id}` [a member]",
    "unmute": "`DELETE /api/v1/rooms/:id/mutes/:user_id` [a muted user]",
    "open dm": "`POST /api/v1/dms {user_id}` [a member of the room; the member: the room's other member]",
}

# THE table: operation -> visibility -> one answer per actor, in ACTORS order
# (owner, admin, member, non-member, banned, muted, anonymous).
MATRIX: dict[str, dict[str, tuple[str, ...]]] = {
    "ws join": {
        "public": (OK, OK, OK, OK, WS_BANNED, OK, UNAUTHORIZED),
        "private": (OK, OK, OK, WS_NOT_FOUND, WS_NOT_FOUND, OK, UNAUTHORIZED),
        "direct": (NA, NA, OK, WS_NOT_FOUND, NA, NA, UNAUTHORIZED),
    },
    "ws send": {
        "public": (OK, OK, OK, OK, NOT_IN_ROOM, WS_MUTED, UNAUTHORIZED),
        "private": (OK, OK, OK, NOT_IN_ROOM, NOT_IN_ROOM, WS_MUTED, UNAUTHORIZED),
        "direct": (NA, NA, OK, NOT_IN_ROOM, NA, NA, UNAUTHORIZED),
    },
    "ws history": {
        "public": (OK, OK, OK, OK, OK, OK, UNAUTHORIZED),
        "private": (OK, OK, OK, WS_NOT_FOUND, WS_NOT_FOUND, OK, UNAUTHORIZED),
        "direct": (NA, NA, OK, WS_NOT_FOUND, NA, NA, UNAUTHORIZED),
    },
    "ws members": {
        "public": (OK, OK, OK, OK, OK, OK, UNAUTHORIZED),
        "private": (OK, OK, OK, WS_NOT_FOUND, WS_NOT_FOUND, OK, UNAUTHORIZED),
        "direct": (NA, NA, OK, WS_NOT_FOUND, NA, NA, UNAUTHORIZED),
    },
    "get room": {
        "public": (OK, OK, OK, OK, OK, OK, OK),
        "private": (OK, OK, OK, NOT_FOUND, NOT_FOUND, OK, NOT_FOUND),
        "direct": (NA, NA, OK, NOT_FOUND, NA, NA, NOT_FOUND),
    },
    "rest history": {
        "public": (OK, OK, OK, OK, OK, OK, OK),
        "private": (OK, OK, OK, NOT_FOUND, NOT_FOUND, OK, NOT_FOUND),
        "direct": (NA, NA, OK, NOT_FOUND, NA, NA, NOT_FOUND),
    },
    "rest members": {
        "public": (OK, OK, OK, OK, OK, OK, OK),
        "private": (OK, OK, OK, NOT_FOUND, NOT_FOUND, OK, NOT_FOUND),
        "direct": (NA, NA, OK, NOT_FOUND, NA, NA, NOT_FOUND),
    },
    "room list": {
        "public": (LISTED, LISTED, LISTED, LISTED, LISTED, LISTED, LISTED),
        "private": (LISTED, LISTED, LISTED, HIDDEN, HIDDEN, LISTED, HIDDEN),
        "direct": (NA, NA, LISTED, HIDDEN, NA, NA, HIDDEN),
    },
    "rename": {
        "public": (OK, OK, FORBIDDEN, FORBIDDEN, FORBIDDEN, FORBIDDEN, UNAUTHORIZED),
        "private": (OK, OK, FORBIDDEN, NOT_FOUND, NOT_FOUND, FORBIDDEN, UNAUTHORIZED),
        "direct": (NA, NA, FORBIDDEN, NOT_FOUND, NA, NA, UNAUTHORIZED),
    },
    "archive": {
        "public": (OK, OK, FORBIDDEN, FORBIDDEN, FORBIDDEN, FORBIDDEN, UNAUTHORIZED),
        "private": (OK, OK, FORBIDDEN, NOT_FOUND, NOT_FOUND, FORBIDDEN, UNAUTHORIZED),
        "direct": (NA, NA, FORBIDDEN, NOT_FOUND, NA, NA, UNAUTHORIZED),
    },
    "delete": {
        "public": (OK, FORBIDDEN, FORBIDDEN, FORBIDDEN, FORBIDDEN, FORBIDDEN, UNAUTHORIZED),
        "private": (OK, FORBIDDEN, FORBIDDEN, NOT_FOUND, NOT_FOUND, FORBIDDEN, UNAUTHORIZED),
        "direct": (NA, NA, FORBIDDEN, NOT_FOUND, NA, NA, UNAUTHORIZED),
    },
    "invite": {
        # A public room has no invitations: anyone may join it.
        "public": (INVALID, INVALID, INVALID, INVALID, INVALID, INVALID, UNAUTHORIZED),
        "private": (OK, OK, FORBIDDEN, NOT_FOUND, NOT_FOUND, FORBIDDEN, UNAUTHORIZED),
        "direct": (NA, NA, FORBIDDEN, NOT_FOUND, NA, NA, UNAUTHORIZED),
    },
    "remove member": {
        # A public room's roster holds only its owner and admins: a plain member is not on it.
        "public": (NOT_MEMBER, NOT_MEMBER, FORBIDDEN, FORBIDDEN, FORBIDDEN, FORBIDDEN, UNAUTHORIZED),
        "private": (OK, OK, FORBIDDEN, NOT_FOUND, NOT_FOUND, FORBIDDEN, UNAUTHORIZED),
        "direct": (NA, NA, FORBIDDEN, NOT_FOUND, NA, NA, UNAUTHORIZED),
    },
    "leave": {
        "public": (FORBIDDEN, OK, NOT_MEMBER, NOT_MEMBER, NOT_MEMBER, NOT_MEMBER, UNAUTHORIZED),
        "private": (FORBIDDEN, OK, OK, NOT_FOUND, NOT_FOUND, OK, UNAUTHORIZED),
        "direct": (NA, NA, OK, NOT_FOUND, NA, NA, UNAUTHORIZED),
    },
    "set role": {
        "public": (OK, FORBIDDEN, FORBIDDEN, FORBIDDEN, FORBIDDEN, FORBIDDEN, UNAUTHORIZED),
        "private": (OK, FORBIDDEN, FORBIDDEN, NOT_FOUND, NOT_FOUND, FORBIDDEN, UNAUTHORIZED),
        "direct": (NA, NA, FORBIDDEN, NOT_FOUND, NA, NA, UNAUTHORIZED),
    },
    "transfer": {
        "public": (OK, FORBIDDEN, FORBIDDEN, FORBIDDEN, FORBIDDEN, FORBIDDEN, UNAUTHORIZED),
        "private": (OK, FORBIDDEN, FORBIDDEN, NOT_FOUND, NOT_FOUND, FORBIDDEN, UNAUTHORIZED),
        "direct": (NA, NA, FORBIDDEN, NOT_FOUND, NA, NA, UNAUTHORIZED),
    },
    "ban": {
        "public": (OK, OK, FORBIDDEN, FORBIDDEN, FORBIDDEN, FORBIDDEN, UNAUTHORIZED),
        "private": (OK, OK, FORBIDDEN, NOT_FOUND, NOT_FOUND, FORBIDDEN, UNAUTHORIZED),
        "direct": (NA, NA, FORBIDDEN, NOT_FOUND, NA, NA, UNAUTHORIZED),
    },
    "unban": {
        "public": (OK, OK, FORBIDDEN, FORBIDDEN, FORBIDDEN, FORBIDDEN, UNAUTHORIZED),
        "private": (OK, OK, FORBIDDEN, NOT_FOUND, NOT_FOUND, FORBIDDEN, UNAUTHORIZED),
        "direct": (NA, NA, FORBIDDEN, NOT_FOUND, NA, NA, UNAUTHORIZED),
    },
    "mute": {
        "public": (OK, OK, FORBIDDEN, FORBIDDEN, FORBIDDEN, FORBIDDEN, UNAUTHORIZED),
        "private": (OK, OK, FORBIDDEN, NOT_FOUND, NOT_FOUND, FORBIDDEN, UNAUTHORIZED),
        "direct": (NA, NA, FORBIDDEN, NOT_FOUND, NA, NA, UNAUTHORIZED),
    },
    "unmute": {
        "public": (OK, OK, FORBIDDEN, FORBIDDEN, FORBIDDEN, FORBIDDEN, UNAUTHORIZED),
        "private": (OK, OK, FORBIDDEN, NOT_FOUND, NOT_FOUND, FORBIDDEN, UNAUTHORIZED),
        "direct": (NA, NA, FORBIDDEN, NOT_FOUND, NA, NA, UNAUTHORIZED),
    },
    "open dm": {
        "public": (OK, OK, OK, OK, OK, OK, UNAUTHORIZED),
        "private": (OK, OK, OK, OK, OK, OK, UNAUTHORIZED),
        "direct": (NA, NA, OK, OK, NA, NA, UNAUTHORIZED),
    },
}

WS_OPERATIONS = ("ws join", "ws send", "ws history", "ws members")
SHARED_OPERATIONS = (*WS_OPERATIONS, "get room", "rest history", "rest members", "room list", "open dm")
FRESH_OPERATIONS = tuple(op for op in OPERATIONS if op not in SHARED_OPERATIONS)

DOC = Path(__file__).resolve().parents[2] / "docs" / "access-matrix.md"
BEGIN, END = "<!-- access-matrix:begin -->", "<!-- access-matrix:end -->"


def expected(operation: str, visibility: str, actor: str) -> str:
    return MATRIX[operation][visibility][ACTORS.index(actor)]


def cells() -> list[tuple[str, str, str]]:
    return [(op, vis, actor) for op in OPERATIONS for vis in VISIBILITIES for actor in ACTORS
            if expected(op, vis, actor) != NA]


def markdown() -> str:
    """The table as Markdown: one table per visibility, operations down, callers across."""
    lines = [BEGIN, ""]
    for vis in VISIBILITIES:
        lines += [f"### {vis.capitalize()} rooms", "", "| operation | " + " | ".join(ACTORS) + " |",
                  "|---|" + "---|" * len(ACTORS)]
        lines += [f"| {op} | " + " | ".join(f"`{v}`" if v != NA else v for v in MATRIX[op][vis]) + " |"
                  for op in OPERATIONS]
        lines.append("")
    lines += ["Operations:", ""]
    lines += [f"- **{op}**: {what}" for op, what in OPERATIONS.items()]
    lines += ["", END]
    return "\n".join(lines) + "\n"


# --- tests without a system ---------------------------------------------------------------------------------

def test_the_table_covers_every_operation_visibility_and_caller():
    assert set(MATRIX) == set(OPERATIONS)
    for op, row in MATRIX.items():
        assert set(row) == set(VISIBILITIES), op
        for vis, answers in row.items():
            assert len(answers) == len(ACTORS), (op, vis)
            # Only a direct room lacks callers: it has no owner, admin, bans or mutes.
            missing = {actor for actor, answer in zip(ACTORS, answers) if answer == NA}
            assert missing == ({"owner", "admin", "banned", "muted"} if vis == "direct" else set()), (op, vis)


def test_the_document_shows_this_table():
    text = DOC.read_text()
    assert BEGIN in text and END in text, f"{DOC} lacks the table markers"
    shown = text[text.index(BEGIN):text.index(END) + len(END)] + "\n"
    assert shown == markdown(), ("docs/access-matrix.md differs from the table: regenerate it with "
                                 "`python e2e/python/test_access_matrix.py --markdown`")


# --- the running system ------------------------------------------------------------------------------------


# Many rooms and invitations from one address and user in a short time: limits out of the way (and a
# patient gateway: a busy 2-core host can hold a debug chat-service past the 5 s default).
CHAT_ENV = {"CHAT_INVITES_PER_MIN": "100000", "CHAT_MAX_OWNED_ROOMS": "1000000"}
GATEWAY_ENV = {"ROOM_CREATE_PER_MIN": "1000000", "USER_DIRECTORY_PER_MIN": "1000000", "REQUEST_TIMEOUT_MS": "8000"}


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    system = System(tmp_path_factory.mktemp("access-matrix-system"))
    try:
        system.start(chat_env={**TOKEN_ENV, **CHAT_ENV}, gateway_env={**TOKEN_ENV, **GATEWAY_ENV})
        yield system
    finally:
        system.stop()


def answer(reply) -> str:
    if 200 <= reply.status_code < 300:
        return OK
    try:
        code = reply.json().get("code")
    except ValueError:
        code = reply.text[:60]
    return f"{reply.status_code} {code}"


@dataclass
class Cast:
    """The users every cell draws on: one per role (standings are per room, so the same user can be the
    owner of one room and nobody in another), targets, and the member's partner for direct rooms."""
    gateway: object
    users: dict[str, User] = field(default_factory=dict)

    def __getitem__(self, name: str) -> User:
        return self.users[name]

    @classmethod
    def sign_in(cls, gateway) -> "Cast":
        cast = cls(gateway)
        names = ("owner", "admin", "member", "non-member", "banned", "muted", "target", "banned-target",
                 "muted-target", "invitee", "partner")
        with ThreadPoolExecutor(8) as pool:
            for name, user in zip(names, pool.map(lambda n: sign_in(gateway, unique(n)), names)):
                cast.users[name] = user
        return cast


def ok(reply) -> dict:
    assert 200 <= reply.status_code < 300, (reply.request.method, reply.request.url, reply.status_code, reply.text)
    return reply.json() if reply.text else {}


def make_room(cast: Cast, visibility: str, standings: dict[str, str]) -> str:
    """A fresh room of the owner with `standings` (user name -> admin, member, banned or muted)."""
    owner = cast["owner"]
    rid = ok(owner.call("POST", "/api/v1/rooms", {"name": unique("matrix"), "visibility": visibility}))["id"]
    for name, standing in standings.items():
        user = cast[name]
        if visibility == "private":
            role = "admin" if standing == "admin" else "member"
            ok(owner.call("POST", f"/api/v1/rooms/{rid}/members", {"user_id": user.id, "role": role}))
        elif standing == "admin":
            ok(owner.call("PUT", f"/api/v1/rooms/{rid}/members/{user.id}", {"role": "admin"}))
        if standing == "banned":
            ok(owner.call("POST", f"/api/v1/rooms/{rid}/bans", {"user_id": user.id}))
        if standing == "muted":
            ok(owner.call("POST", f"/api/v1/rooms/{rid}/mutes", {"user_id": user.id}))
    return rid


ACTOR_STANDING = {"admin": "admin", "member": "member", "banned": "banned", "muted": "muted"}
# The user each management operation acts on, and the standing it needs first.
TARGETS = {
    "invite": ("invitee", None), "remove member": ("target", "member"), "set role": ("target", "member"),
    "transfer": ("target", "member"), "ban": ("target", "member"), "mute": ("target", "member"),
    "unban": ("banned-target", "banned"), "unmute": ("muted-target", "muted"),
}


@dataclass
class Scene:
    """One cell's fresh room: who acts (None: anonymous) on whom, and who can see the effect."""
    room: str
    actor: User | None
    target: User | None
    witness: User  # on the roster, to read the room afterwards


def fresh_scene(cast: Cast, operation: str, visibility: str, actor: str) -> Scene:
    target_name, target_standing = TARGETS.get(operation, (None, None))
    if visibility == "direct":
        # A fresh pair per cell: its member acts, its other member is the target.
        one, other = (sign_in(cast.gateway, unique(n)) for n in ("dm-one", "dm-other"))
        rid = ok(one.call("POST", "/api/v1/dms", {"user_id": other.id}))["id"]
        acting = {"member": one, "non-member": cast["non-member"], "anonymous": None}[actor]
        target = cast["invitee"] if operation == "invite" else other
        if operation == "leave":
            target = one
        return Scene(rid, acting, target, other if operation == "leave" else one)
    standings = {}
    if actor in ACTOR_STANDING:
        standings[actor] = ACTOR_STANDING[actor]
    if target_name and target_standing:
        standings[target_name] = target_standing
    if operation == "leave" and actor == "anonymous":
        standings["member"] = "member"
    rid = make_room(cast, visibility, standings)
    acting = None if actor == "anonymous" else cast[actor]
    target = cast[target_name] if target_name else None
    if operation == "leave":
        target = acting or cast["member"]
    return Scene(rid, acting, target, cast["owner"])


def call(scene: Scene, method: str, path: str, body=None):
    if scene.actor is None:
        return scene.witness.call(method, path, body, anonymous=True)
    return scene.actor.call(method, path, body)


def my_role(user: User, rid: str):
    reply = user.call("GET", f"/api/v1/rooms/{rid}")
    return reply.json().get("my_role") if reply.status_code == 200 else "gone"


def perform(scene: Scene, operation: str, visibility: str) -> str:
    """Runs one management operation and, when it is accepted, checks that it took effect."""
    rid, target, witness = scene.room, scene.target, scene.witness
    room_path = f"/api/v1/rooms/{rid}"
    name = unique("renamed")
    requests_ = {
        "rename": ("PATCH", room_path, {"name": name}),
        "archive": ("PATCH", room_path, {"archived": True}),
        "delete": ("DELETE", room_path, None),
        "invite": ("POST", f"{room_path}/members", {"user_id": target.id if target else ""}),
        "remove member": ("DELETE", f"{room_path}/members/{target.id if target else ''}", None),
        "leave": ("DELETE", f"{room_path}/members/{target.id if target else ''}", None),
        "set role": ("PUT", f"{room_path}/members/{target.id if target else ''}", {"role": "admin"}),
        "transfer": ("PUT", f"{room_path}/members/{target.id if target else ''}", {"role": "owner"}),
        "ban": ("POST", f"{room_path}/bans", {"user_id": target.id if target else ""}),
        "unban": ("DELETE", f"{room_path}/bans/{target.id if target else ''}", None),
        "mute": ("POST", f"{room_path}/mutes", {"user_id": target.id if target else ""}),
        "unmute": ("DELETE", f"{room_path}/mutes/{target.id if target else ''}", None),
    }
    method, path, body = requests_[operation]
    result = answer(call(scene, method, path, body))
    if result != OK:
        return result
    room = witness.call("GET", room_path)
    effect: dict[str, Callable[[], bool]] = {
        "rename": lambda: room.json().get("name") == name,
        "archive": lambda: room.json().get("archived") is True,
        "delete": lambda: room.status_code == 404,
        "invite": lambda: target.id in [m["user_id"] for m in witness.call("GET", f"{room_path}/members").json()["members"]],
        "remove member": lambda: my_role(target, rid) in (None, "gone"),
        "leave": lambda: my_role(target, rid) in (None, "gone"),
        "set role": lambda: my_role(target, rid) == "admin",
        "transfer": lambda: my_role(target, rid) == "owner" and room.json().get("owner_id") == target.id,
        # A banned member of a private room is off its roster; in a public room the ban shows on join.
        "ban": lambda: visibility == "public" or my_role(target, rid) == "gone",
        # A lifted ban lets the owner invite the user again (refused with `banned` before).
        "unban": lambda: visibility == "public" or witness.call(
            "POST", f"{room_path}/members", {"user_id": target.id}).status_code == 201,
        "mute": lambda: True,
        "unmute": lambda: True,
    }
    return OK if effect[operation]() else "ok without effect"


def room_lists(cast: Cast, actors: dict[str, User | None]) -> dict[str, set[str]]:
    """Every room id on every page of each actor's room list."""
    def listing(user: User | None) -> set[str]:
        seen: set[str] = set()
        after = None
        while True:
            path = "/api/v1/rooms?limit=50" + (f"&after={after}" if after else "")
            page = (user or cast["owner"]).call("GET", path, anonymous=user is None).json()
            seen |= {room["id"] for room in page["rooms"]}
            if not page.get("has_more"):
                return seen
            after = page["next"]

    with ThreadPoolExecutor(8) as pool:
        return dict(zip(actors, pool.map(listing, actors.values())))


async def ws_cells(gateway, rid: str, user: User | None) -> dict[str, str]:
    """history, members, join and send on one socket of `user` (None: a socket without a token)."""
    if user is None:
        try:
            client = await Client.open(gateway.ws_url(None), "anonymous")
        except Rejected as refused:
            code = f"{refused.status} {refused.json().get('code')}"
            return dict.fromkeys(WS_OPERATIONS, code)
        await client.ws.close()
        return dict.fromkeys(WS_OPERATIONS, "upgraded without a token")
    client = await Client.open(user.ws_url(), user.name)

    def code(reply: dict, wanted: str) -> str:
        return OK if reply.get("type") == wanted else str(reply.get("code"))

    found = {
        "ws history": code(await client.request({"type": "history", "room_id": rid}, "history"), "history"),
        "ws members": code(await client.request({"type": "members", "room_id": rid}, "members"), "members"),
        "ws join": code(await client.request({"type": "join", "room_id": rid}, "joined"), "joined"),
        "ws send": code(await client.send_message(unique("hello"), rid), "ack"),
    }
    await client.ws.close()
    return found


def shared_rooms(cast: Cast) -> dict[str, str]:
    standings = {"admin": "admin", "member": "member", "banned": "banned", "muted": "muted"}
    with ThreadPoolExecutor(2) as pool:
        public, private = pool.map(lambda vis: make_room(cast, vis, standings), ("public", "private"))
    direct = ok(cast["member"].call("POST", "/api/v1/dms", {"user_id": cast["partner"].id}))["id"]
    return {"public": public, "private": private, "direct": direct}


def actor_user(cast: Cast, actor: str) -> User | None:
    return None if actor == "anonymous" else cast[actor]


def observe_shared(cast: Cast, rooms: dict[str, str]) -> dict[tuple[str, str, str], str]:
    found: dict[tuple[str, str, str], str] = {}
    present = [(vis, actor) for vis in VISIBILITIES for actor in ACTORS if expected("get room", vis, actor) != NA]

    async def sockets():
        results = await asyncio.gather(*(ws_cells(cast.gateway, rooms[vis], actor_user(cast, actor))
                                         for vis, actor in present))
        for (vis, actor), cells_ in zip(present, results):
            for op, value in cells_.items():
                found[(op, vis, actor)] = value

    run(sockets())

    def reads(item):
        vis, actor = item
        user = actor_user(cast, actor)
        caller = user or cast["owner"]
        rid = rooms[vis]
        values = {op: answer(caller.call("GET", path, anonymous=user is None))
                  for op, path in (("get room", f"/api/v1/rooms/{rid}"), ("rest history", f"/api/v1/rooms/{rid}/history"),
                                   ("rest members", f"/api/v1/rooms/{rid}/members"))}
        other = cast["partner"] if actor == "member" else cast["member"]
        reply = caller.call("POST", "/api/v1/dms", {"user_id": other.id}, anonymous=user is None)
        values["open dm"] = answer(reply)
        if values["open dm"] == OK:
            room = reply.json()
            if room.get("visibility") != "direct" or (vis == "direct" and actor == "member" and room["id"] != rid):
                values["open dm"] = f"ok but another room: {room.get('id')} {room.get('visibility')}"
        return item, values

    with ThreadPoolExecutor(8) as pool:
        for (vis, actor), values in pool.map(reads, present):
            for op, value in values.items():
                found[(op, vis, actor)] = value
    lists = room_lists(cast, {actor: actor_user(cast, actor) for actor in ACTORS})
    for vis, actor in present:
        found[("room list", vis, actor)] = LISTED if rooms[vis] in lists[actor] else HIDDEN
    return found


def observe_fresh(cast: Cast) -> dict[tuple[str, str, str], str]:
    todo = [(op, vis, actor) for op, vis, actor in cells() if op in FRESH_OPERATIONS]

    def one(cell):
        op, vis, actor = cell
        return cell, perform(fresh_scene(cast, op, vis, actor), op, vis)

    with ThreadPoolExecutor(8) as pool:
        return dict(pool.map(one, todo))


@pytest.fixture(scope="module")
def observed(system) -> dict[tuple[str, str, str], str]:
    cast = Cast.sign_in(system.gateways[0])
    found = observe_shared(cast, shared_rooms(cast))
    found.update(observe_fresh(cast))
    return found


@pytest.mark.parametrize("operation,visibility,actor", cells(), ids=lambda value: value.replace(" ", "-"))
def test_cell(observed, operation, visibility, actor):
    assert observed[(operation, visibility, actor)] == expected(operation, visibility, actor)


if __name__ == "__main__":
    if sys.argv[1:] != ["--markdown"]:
        sys.exit("usage: test_access_matrix.py --markdown")
    sys.stdout.write(markdown())
