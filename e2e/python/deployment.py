"""Launcher additions for the deployment tests, built on ``system.py`` (helper-2's launcher):

- ``ConfiguredNats``: nats-server running one of ``deploy/``'s config files (per-service users and
  permissions, TLS, cluster). A small wrapper config in the system's temp dir ``include``s the deploy
  file unchanged and overrides only what a loopback test must: client/monitoring ports and the store
  directory (cluster ports and routes come as command-line flags). The passwords are random per session,
  made by ``deploy/make-env.sh`` (so every deployment test also proves its passwords work).
- ``Nginx``: nginx with the config ``scripts/nginx-config`` makes from ``deploy/nginx.conf``.
- ``DeploySystem``: a ``System`` that also stops (and shows the logs of) those extra processes.
- helpers: service credentials, ``/connz`` of a node, clients opened from chosen loopback source
  addresses (nginx's ``ip_hash`` maps the first three octets of the client address to a gateway).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import nats

from chatclient import Client
from system import (REPO_ROOT, NatsServer, Process, System, SystemError_, free_port, http_get,
                    nats_server_binary)

DEPLOY = REPO_ROOT / "deploy"
PASSWORD_VARIABLES = {
    "admin": "NATS_ADMIN_PASSWORD",
    "chat-service": "NATS_CHAT_SERVICE_PASSWORD",
    "broadcaster": "NATS_BROADCASTER_PASSWORD",
    "gateway": "NATS_GATEWAY_PASSWORD",
}
ROUTE_PASSWORD_VARIABLE = "NATS_ROUTE_PASSWORD"


def generated_passwords() -> dict[str, str]:
    """The .env that deploy/make-env.sh writes, read back: variable → password (the users' and the
    cluster routes')."""
    with tempfile.TemporaryDirectory() as directory:
        env_file = Path(directory) / ".env"
        made = subprocess.run([str(DEPLOY / "make-env.sh"), str(env_file)], capture_output=True, text=True, timeout=30)
        if made.returncode != 0:
            raise SystemError_(f"deploy/make-env.sh failed: {made.stderr}")
        lines = env_file.read_text().splitlines()
    values = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    expected = {*PASSWORD_VARIABLES.values(), ROUTE_PASSWORD_VARIABLE}
    if set(values) != expected:
        raise SystemError_(f"deploy/make-env.sh wrote {sorted(values)}, not {sorted(expected)}")
    return values


_GENERATED = generated_passwords()
PASSWORDS = {variable: _GENERATED[variable] for variable in PASSWORD_VARIABLES.values()}  # the users'
ROUTE_PASSWORD = _GENERATED[ROUTE_PASSWORD_VARIABLE]  # nats-cluster.conf's route user `route`
# The prefix under which each service makes its reply inboxes (NATS_INBOX_PREFIX's defaults); auth.conf
# lets each user subscribe to its own only. admin keeps nats-py's `_INBOX`.
INBOX_PREFIXES = {"chat-service": "_INBOX_chat", "broadcaster": "_INBOX_broadcaster", "gateway": "_INBOX_gateway"}


def password(user: str) -> str:
    return PASSWORDS[PASSWORD_VARIABLES[user]]


def credentials(user: str, url: str, **extra: str) -> dict[str, str]:
    """Environment of a service connecting as `user` (the deploy/auth.conf user of that service)."""
    return {"NATS_URL": url, "NATS_USER": user, "NATS_PASSWORD": password(user), **extra}


def nginx_binary() -> str:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        raise SystemError_("nginx not found; run scripts/bootstrap --nginx")
    return binary


class ConfiguredNats(Process):
    """nats-server with `deploy/<config>`; `url` carries the admin credentials (for probes and checks),
    `plain_url` none (for services, which get their own user in the environment)."""

    kind = "nats-server"

    def __init__(self, system: "DeploySystem", config: str = "nats-server.conf", name: str = "nats-server",
                 env: dict[str, str] | None = None, extra_args: list[str] | None = None,
                 tls_ca: Path | None = None):
        self.port = free_port()
        self.monitor_port = free_port()
        self.store = system.dir / f"{name}-store"
        self.tls_ca = tls_ca
        wrapper = system.dir / f"{name}.conf"
        include = os.path.relpath(DEPLOY / config, system.dir)  # nats-server includes are relative
        wrapper.write_text(
            f'include "{include}"\n'
            f"listen: 127.0.0.1:{self.port}\n"
            f"http: 127.0.0.1:{self.monitor_port}\n"
            f'jetstream {{ store_dir: "{self.store}" }}\n'
        )
        scheme = "tls" if tls_ca else "nats"
        self.plain_url = f"{scheme}://127.0.0.1:{self.port}"
        self.url = f"{scheme}://admin:{password('admin')}@127.0.0.1:{self.port}"
        full_env = dict(os.environ)
        full_env.update(PASSWORDS)
        full_env[ROUTE_PASSWORD_VARIABLE] = ROUTE_PASSWORD
        full_env.update(env or {})
        super().__init__(system, name, [nats_server_binary(), "-c", str(wrapper), *(extra_args or [])], full_env)

    def ssl_context(self) -> ssl.SSLContext | None:
        return ssl.create_default_context(cafile=str(self.tls_ca)) if self.tls_ca else None

    async def connect(self, user: str = "admin", **kwargs: Any):
        """A nats-py connection as `user` (no reconnects unless asked), with that user's inbox prefix."""
        options: dict[str, Any] = dict(connect_timeout=2, allow_reconnect=False, max_reconnect_attempts=0)
        if user in INBOX_PREFIXES:
            options["inbox_prefix"] = INBOX_PREFIXES[user]
        options.update(kwargs)
        if self.tls_ca:
            options["tls"] = self.ssl_context()
        return await nats.connect(self.plain_url, user=user, password=password(user), **options)

    # Ready when JetStream answers, through this server's own `connect` (users, TLS).
    probe = NatsServer.probe

    def wait_ready(self, deadline: float = 30.0) -> "Process":
        return super().wait_ready(deadline)

    def connz(self) -> list[dict[str, Any]]:
        """The node's client connections (with `authorized_user`), from the monitoring port."""
        status, body = http_get(f"http://127.0.0.1:{self.monitor_port}/connz?auth=true&limit=1000")
        assert status == 200, (status, body[:200])
        return json.loads(body).get("connections") or []

    def users_connected(self) -> list[str]:
        return sorted(c.get("authorized_user", "") for c in self.connz())

    def violations(self) -> list[str]:
        """The server's log lines about refused publishes/subscriptions."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if "Violation" in line]


class Nginx(Process):
    """nginx in front of `upstreams` (host:port), listening on a free loopback port."""

    kind = "nginx"

    def __init__(self, system: "DeploySystem", upstreams: list[str], name: str = "nginx"):
        self.port = free_port()
        self.dir = system.dir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "nginx.conf"
        generated = subprocess.run([str(REPO_ROOT / "scripts/nginx-config"), f"127.0.0.1:{self.port}", str(self.dir),
                                    *upstreams], capture_output=True, text=True, check=False)
        if generated.returncode != 0:
            raise SystemError_(f"scripts/nginx-config failed: {generated.stderr}")
        conf.write_text(generated.stdout)
        argv = [nginx_binary(), "-p", str(self.dir), "-c", str(conf), "-e", "stderr",
                "-g", f"daemon off; pid {self.dir}/nginx.pid; error_log stderr notice;"]
        checked = subprocess.run([argv[0], "-t", "-q", *argv[1:]], capture_output=True, text=True, check=False)
        if checked.returncode != 0:
            raise SystemError_(f"nginx -t refused {conf}: {checked.stderr}")
        super().__init__(system, name, argv, dict(os.environ))

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, username: str) -> str:
        return f"ws://127.0.0.1:{self.port}/ws?username={username}"

    def probe(self) -> bool:
        try:
            return (http_get(self.base_url + "/nginx-health", timeout=1)[0] == 200
                    and http_get(self.base_url + "/health", timeout=2)[0] == 200)
        except OSError:
            return False


class DeploySystem(System):
    """A System with extra NATS nodes (stopped last) and front processes such as nginx (stopped first)."""

    def __init__(self, base_dir: Path):
        super().__init__(base_dir)
        self.nodes: list[ConfiguredNats] = []
        self.front: list[Process] = []

    @property
    def processes(self) -> list[Process]:
        inner = super().processes
        extra_nodes = [n for n in self.nodes if n is not self.nats]
        return [*extra_nodes, *inner, *self.front]

    def add_nginx(self) -> Nginx:
        nginx = Nginx(self, [f"127.0.0.1:{g.port}" for g in self.gateways])
        self.front.append(nginx)
        nginx.start().wait_ready(20)
        return nginx


# --- clients behind nginx ---------------------------------------------------------------------------------

def source_address(k: int) -> str:
    """A loopback address whose first three octets differ for every k (ip_hash hashes those)."""
    return f"127.0.{k}.1"


async def open_from(nginx: Nginx, username: str, source: str) -> Client:
    return await Client.open(nginx.ws_url(username), username, local_addr=(source, 0))


async def clients_on_distinct_gateways(nginx: Nginx, count: int, prefix: str = "u") -> list[tuple[Client, str]]:
    """`count` clients, each through nginx on a different gateway: tries source addresses until the
    sticky hash has put one on each of `count` gateways. Returns (client, source address) pairs."""
    found: dict[str, tuple[Client, str]] = {}
    for k in range(1, 60):
        source = source_address(k)
        client = await open_from(nginx, f"{prefix}{len(found)}", source)
        gateway = client.connected.get("gateway_id")
        if gateway in found:
            await client.close()
            continue
        found[gateway] = (client, source)
        if len(found) == count:
            return list(found.values())
    raise AssertionError(f"nginx put 59 source addresses on only {len(found)} gateways: {sorted(found)}")


async def wait_until(predicate, timeout: float, what: str, interval: float = 0.1) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(interval)


# --- fixture ------------------------------------------------------------------------------------------------

import pytest  # noqa: E402  (fixtures for the test modules that import this one)


@pytest.fixture
def deploy_system(tmp_path_factory: pytest.TempPathFactory):
    """``deploy_system()`` → a new, not yet started DeploySystem, stopped when the test ends."""
    systems: list[DeploySystem] = []

    def make() -> DeploySystem:
        system = DeploySystem(tmp_path_factory.mktemp("deploy"))
        systems.append(system)
        return system

    yield make
    for system in systems:
        system.stop()
