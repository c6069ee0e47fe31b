"""deploy/auth.conf, proven on a real nats-server running deploy/nats-server.conf unchanged: each service's
user logs in and tries every subject it must not use, publishing and subscribing (plain and in the
chat-service's queue group). Every attempt must be answered with its own "Permissions Violation", and
must have no effect:

- a refused publish reaches nobody: admin, subscribed to `>`, sees none of them, though it sees the
  marker the same user publishes afterwards on an allowed subject (one publisher's messages arrive in
  order, so the marker arriving means every earlier publish would have arrived before it);
- a refused subscription receives nothing: admin publishes to a subject each one would match, then to
  one of the user's allowed subscriptions; when that arrives, nothing has arrived on the refused ones.

The subjects each user needs are tried too (no violation), and admin tries all of them (no violation):
so a refusal is the permission's doing, not the probe's. The services' real traffic under auth.conf
(nothing of it refused) is test_deploy_nats.py's.
"""

from __future__ import annotations

import asyncio

import pytest

from deployment import INBOX_PREFIXES, ConfiguredNats, DeploySystem

# The other services' reply inboxes: JetStream and KV answers, chat.svc.* replies, consumer batches.
ALL_INBOXES = ["_INBOX", *INBOX_PREFIXES.values()]
# The chat-service's state: its buckets and, through the JetStream API, their streams.
CHAT_BUCKETS = ["chat_rooms", "chat_members", "chat_idempotency", "chat_gateways"]


def others_inboxes(user: str) -> list[str]:
    return [prefix for prefix in ALL_INBOXES if prefix != INBOX_PREFIXES.get(user)]


def chat_state_publishes() -> list[str]:
    subjects = []
    for bucket in CHAT_BUCKETS:
        subjects += [f"$KV.{bucket}.probe", f"$JS.API.STREAM.INFO.KV_{bucket}", f"$JS.API.DIRECT.GET.KV_{bucket}",
                     f"$JS.API.STREAM.MSG.GET.KV_{bucket}", f"$JS.API.CONSUMER.CREATE.KV_{bucket}",
                     f"$JS.API.STREAM.PURGE.KV_{bucket}", f"$JS.API.STREAM.DELETE.KV_{bucket}"]
    return subjects


# user → what it must not do. "publish": literal subjects; "subscribe": subjects or wildcards;
# "queue": (subject, queue group) pairs.
REFUSED: dict[str, dict[str, list]] = {
    "gateway": {
        "publish": [
            *[f"{prefix}.probe" for prefix in others_inboxes("gateway")],
            "$JS.API.INFO", "$JS.API.STREAM.LIST", "$JS.API.STREAM.INFO.CHAT_EVENTS",
            "$JS.API.STREAM.MSG.GET.CHAT_EVENTS", "$JS.API.CONSUMER.CREATE.CHAT_EVENTS.broadcaster",
            "$JS.ACK.CHAT_EVENTS.broadcaster.1.1.1.1.1", "$JS.FC.probe",
            *chat_state_publishes(), "$KV.chat_leases.broadcaster",
            "chat.room.probe.msg", "chat.room.probe.presence", "chat.rooms.created",
            "chat.deliver.room.probe", "chat.deliver.rooms",
            "$SRV.PING", "$SRV.INFO.chat", "$SRV.STATS.broadcaster", "chat.broadcaster.status.probe",
        ],
        "subscribe": [
            *[f"{prefix}.>" for prefix in others_inboxes("gateway")],
            "$JS.>", "$JS.API.>", "$KV.>", *[f"$KV.{bucket}.>" for bucket in CHAT_BUCKETS],
            "chat.room.>", "chat.room.*.msg", "chat.rooms.>", "chat.svc.>", "chat.svc.message.send",
            "$SRV.>", "$SRV.PING", ">", "chat.>", "chat.broadcaster.status.>",
        ],
        "queue": [("chat.svc.>", "chat-service"), ("chat.svc.message.send", "chat-service")],
    },
    "broadcaster": {
        "publish": [
            *[f"{prefix}.probe" for prefix in others_inboxes("broadcaster")],
            *chat_state_publishes(),
            "$JS.API.STREAM.PURGE.CHAT_EVENTS", "$JS.API.STREAM.DELETE.CHAT_EVENTS",
            "$JS.API.STREAM.UPDATE.CHAT_EVENTS", "$JS.API.STREAM.MSG.DELETE.CHAT_EVENTS",
            "$JS.API.CONSUMER.CREATE.CHAT_EVENTS.other", "$JS.API.CONSUMER.DELETE.CHAT_EVENTS.other",
            "$JS.API.CONSUMER.MSG.NEXT.CHAT_EVENTS.other",
            "chat.room.probe.msg", "chat.room.probe.presence", "chat.rooms.created",
            "chat.svc.message.send", "chat.svc.room.join", "chat.typing.probe",
        ],
        "subscribe": [
            *[f"{prefix}.>" for prefix in others_inboxes("broadcaster")],
            "chat.svc.>", "$KV.>", *[f"$KV.{bucket}.>" for bucket in CHAT_BUCKETS],
            "$JS.>", "chat.room.>", "chat.deliver.>", "chat.typing.>", ">",
        ],
        "queue": [("chat.svc.>", "chat-service")],
    },
    "chat-service": {
        "publish": [
            *[f"{prefix}.probe" for prefix in others_inboxes("chat-service")],
            "chat.deliver.room.probe", "chat.deliver.rooms", "chat.typing.probe",
            "chat.broadcaster.status.probe", "$KV.other_bucket.probe",
        ],
        "subscribe": [
            *[f"{prefix}.>" for prefix in others_inboxes("chat-service")],
            "chat.deliver.>", "chat.typing.>", "$KV.>", "$JS.>", "chat.room.>", ">",
        ],
        "queue": [],
    },
}

# user → what it needs (published/subscribed without a violation); the first subscription and the
# first publish carry the markers.
NEEDED: dict[str, dict[str, list]] = {
    "gateway": {
        "subscribe": ["_INBOX_gateway.>", "chat.deliver.>", "chat.deliver.rooms", "chat.typing.>"],
        "publish": ["chat.typing.probe", "chat.svc.room.list", "chat.svc.gateway.heartbeat"],
    },
    "broadcaster": {
        "subscribe": ["_INBOX_broadcaster.>", "$SRV.>", "chat.broadcaster.status.>"],
        "publish": ["chat.deliver.room.probe", "chat.deliver.rooms", "$KV.chat_leases.broadcaster",
                    "$JS.API.CONSUMER.INFO.CHAT_EVENTS.broadcaster"],
    },
    "chat-service": {
        "subscribe": ["_INBOX_chat.>", "chat.svc.>", "$SRV.>"],
        "publish": ["chat.rooms.created", "chat.room.probe.msg", "$KV.chat_rooms.probe", "$JS.FC.probe"],
    },
}


def matching(subject: str) -> str:
    """A literal subject that `subject` (maybe with wildcards) matches."""
    return ".".join({">": "probe", "*": "x"}.get(token, token) for token in subject.split("."))


def refusal(what: str, subject: str, queue: str | None = None) -> str:
    """The server's -ERR for a refused publish or subscription, as nats-py reports it (lower case)."""
    text = f'nats: permissions violation for {what} "{subject}"' + (f' using queue "{queue}"' if queue else "")
    return text.lower()


class Violations:
    """A connection's asynchronous errors, taken one by one in the order the server sent them. The server
    answers a client's operations in order, so the error of a refused operation comes after the errors
    of every earlier one: `next()` being the expected refusal proves the operations before it passed.
    (Not flush(): nats-py writes its PING ahead of buffered commands, so a PONG proves nothing.)"""

    def __init__(self):
        self.items: list[str] = []
        self.taken = 0
        self.arrived = asyncio.Event()

    async def add(self, error: Exception) -> None:
        self.items.append(str(error))
        self.arrived.set()

    async def next(self, what: str, timeout: float = 5.0) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.taken == len(self.items):
            self.arrived.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"no error from the server for {what} within {timeout} s")
            try:
                await asyncio.wait_for(self.arrived.wait(), remaining)
            except asyncio.TimeoutError:
                pass
        self.taken += 1
        return self.items[self.taken - 1]

    def rest(self) -> list[str]:
        return self.items[self.taken:]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory):
    system = DeploySystem(tmp_path_factory.mktemp("permissions"))
    server = ConfiguredNats(system, "nats-server.conf")
    system.nats = server
    try:
        server.start().wait_ready()
        yield server
    finally:
        system.stop()


async def wait_for(event: asyncio.Event, what: str, timeout: float = 5.0) -> None:
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"{what}: not within {timeout} s") from None


@pytest.mark.parametrize("user", sorted(REFUSED))
def test_each_service_user_is_refused_every_subject_it_must_not_use(node, user):
    refused, needed = REFUSED[user], NEEDED[user]
    probe = f"forbidden from {user}".encode()

    async def body():
        admin = await node.connect()
        seen_by_admin: list[bytes] = []
        admin_marker = asyncio.Event()

        async def on_admin(message):
            seen_by_admin.append(message.data)
            if message.data == b"marker":
                admin_marker.set()
        await admin.subscribe(">", cb=on_admin)
        # Its own marker back proves the subscription is in place before the user starts.
        await admin.publish("admin.ready", b"marker")
        await wait_for(admin_marker, "admin receiving its own marker")
        admin_marker.clear()

        violations = Violations()
        nc = await node.connect(user, error_cb=violations.add)

        # Subscriptions it needs come first: each refusal below is then the next error, which proves
        # these got none. The first one receives admin's marker at the end.
        user_marker = asyncio.Event()
        for n, subject in enumerate(needed["subscribe"]):
            async def on_needed(message, first=(n == 0)):
                if first and message.data == b"marker":
                    user_marker.set()
            await nc.subscribe(subject, cb=on_needed)

        # Subscriptions it must not make, each refused on its own.
        received_on_refused: list[tuple[str, bytes]] = []

        async def on_refused(message):
            received_on_refused.append((message.subject, message.data))
        for subject in refused["subscribe"]:
            await nc.subscribe(subject, cb=on_refused)
            assert await violations.next(subject) == refusal("subscription to", subject), subject
        for subject, queue in refused["queue"]:
            await nc.subscribe(subject, queue=queue, cb=on_refused)
            assert await violations.next(subject) == refusal("subscription to", subject, queue), subject

        # Publishes it needs pass; those it must not make are refused, each on its own.
        for subject in needed["publish"]:
            await nc.publish(subject, b"needed")
        for subject in refused["publish"]:
            await nc.publish(subject, probe)
            assert await violations.next(subject) == refusal("publish to", subject), subject

        # No refused publish reached anybody: admin gets the later marker, and none of the probes.
        await nc.publish(needed["publish"][0], b"marker")
        await wait_for(admin_marker, f"admin seeing {user}'s marker on {needed['publish'][0]}")
        assert probe not in seen_by_admin

        # No refused subscription receives: what admin publishes to each arrives nowhere, while the
        # marker admin publishes after them arrives on an allowed subscription.
        for subject in [*refused["subscribe"], *(s for s, _ in refused["queue"])]:
            await admin.publish(matching(subject), b"for a refused subscription")
        await admin.publish(matching(needed["subscribe"][0]), b"marker")
        await admin.flush()
        await wait_for(user_marker, f"{user} receiving admin's marker on {needed['subscribe'][0]}")
        assert received_on_refused == []

        assert violations.rest() == [] and nc.is_connected  # refusals do not close the connection
        await nc.close()
        await admin.close()

    asyncio.run(asyncio.wait_for(body(), 60))
    # The server logged every refusal against the user that tried.
    logged = [line for line in node.violations() if f'User "{user}"' in line]
    for subject in [*refused["publish"], *refused["subscribe"]]:
        assert any(f'"{subject}"' in line for line in logged), (subject, logged[-5:])


def test_admin_may_use_every_subject_the_services_may_not(node):
    """The control: the same probes as admin, with no violation, and admin's own publishes arrive."""
    subscribes = sorted({s for rules in REFUSED.values() for s in rules["subscribe"]}
                        | {s for rules in REFUSED.values() for s, _ in rules["queue"]})
    publishes = sorted({s for rules in REFUSED.values() for s in rules["publish"]})

    async def body():
        violations = Violations()
        admin = await node.connect(error_cb=violations.add)
        for subject in subscribes:
            await admin.subscribe(subject)
        await admin.subscribe("chat.svc.>", queue="chat-service")
        got: set[str] = set()
        done = asyncio.Event()

        async def on_message(message):
            got.add(message.subject)
            if got >= set(publishes):
                done.set()
        await admin.subscribe(">", cb=on_message)
        for subject in publishes:
            await admin.publish(subject, b"admin")
        # Its publishes come back after the answers to its subscriptions: no error came before them.
        await wait_for(done, "admin receiving its own publishes")
        assert violations.rest() == []
        await admin.close()

    asyncio.run(asyncio.wait_for(body(), 30))
