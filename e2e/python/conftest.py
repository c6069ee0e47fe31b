"""Fixtures for black-box tests of the built binaries against a real nats-server.

The process launcher lives in ``system.py`` (one launcher for every suite); these fixtures wrap it:

- ``nats_server``: a private ``nats-server -js`` on a free loopback port with a temporary store.
- ``chat_service``: the built ``chat-service`` binary (``CHAT_SERVICE_BIN``, default
  ``.build/debug/chat-service``) connected to that server, ready once it answers ``$SRV.PING.chat``.
- ``nats_run``: runs an ``async def f(nc)`` with a fresh nats-py connection to that server.
- ``make_system``: builds a function-scoped ``System`` (nats-server + N chat-service + M broadcaster +
  K gateway); everything is stopped after the test. For destructive tests (kill, restart, SIGTERM).

When a test fails, the last lines of every running system's process logs are printed with it.

Everything here uses nats-py and websockets only, as independent clients; the tests do not import
project code. ``nats_server``/``chat_service`` are session-scoped: starting them once keeps the suite
fast. Tests that compare counters read them before and after their own requests, so they do not
depend on test order.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

import nats
import pytest

from system import ChatService, Gateway, NatsServer, System, cleanup_binaries


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(autouse=True)
def _log_tails_on_failure(request):
    """Prints the log tails of every live system when the test failed (shown with the failure)."""
    yield
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        for system in list(System.active):
            print(f"\n===== logs of system {system.tag} ({system.dir}) =====\n{system.log_tails()}")


@pytest.fixture(scope="session", autouse=True)
def _binary_copies():
    yield
    cleanup_binaries()


@pytest.fixture(scope="session")
def base_system(tmp_path_factory: pytest.TempPathFactory):
    system = System(tmp_path_factory.mktemp("base-system"))
    try:
        system.start_nats()
        yield system
    finally:
        system.stop()


@pytest.fixture(scope="session")
def nats_server(base_system: System) -> NatsServer:
    return base_system.nats


@pytest.fixture(scope="session")
def chat_service(base_system: System) -> ChatService:
    if not base_system.chat_services:
        base_system.add_chat_service()
    return base_system.chat_service


@pytest.fixture
def make_system(tmp_path_factory: pytest.TempPathFactory):
    """``make_system(chat_services=1, broadcasters=1, gateways=1, chat_env=…, broadcaster_env=…,
    gateway_env=…, nats_store=…)`` starts a system that is stopped when the test ends (``nats_store``: an
    existing JetStream store directory for its nats-server)."""
    systems: list[System] = []

    def make(**kwargs: Any) -> System:
        system = System(tmp_path_factory.mktemp("system"))
        systems.append(system)
        return system.start(**kwargs)

    yield make
    for system in systems:
        system.stop()


async def _connect(url: str):
    return await nats.connect(url, connect_timeout=2, allow_reconnect=False, max_reconnect_attempts=0)


NatsRun = Callable[[Callable[[Any], Awaitable[Any]]], Any]


@pytest.fixture
def nats_run(chat_service: ChatService) -> NatsRun:
    """``nats_run(f)`` runs ``await f(nc)`` with a fresh nats-py connection and returns its result."""

    def run(body: Callable[[Any], Awaitable[Any]]) -> Any:
        async def main() -> Any:
            nc = await _connect(chat_service.nats_url)
            try:
                return await asyncio.wait_for(body(nc), timeout=30)
            finally:
                await nc.close()

        result = asyncio.run(main())
        chat_service.assert_running()
        return result

    return run


@pytest.fixture(scope="module")
def gateway_with(system: System):
    """``gateway_with(ENV=value, …)``: an extra gateway of the test module's ``system`` with these
    settings, started once per setting set (``name`` tells apart gateways with equal settings)."""
    cache: dict[tuple, Gateway] = {}

    def get(name: str = "", **env: str) -> Gateway:
        key = (name, *sorted(env.items()))
        if key not in cache:
            cache[key] = system.add_gateway(env)
        return cache[key]

    return get
