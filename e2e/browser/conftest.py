"""Fixtures for the browser UI tests: the real system (nats-server, chat-service, broadcaster and two
gateways serving web/ with WEB_ROOT, all built binaries on free loopback ports, launched by
e2e/python/system.py) and headless Chromium pages driven by Selenium.

- gateway 0 (``chat_system.gateway``) is the one the browsers use, with the default rate limit;
- gateway 1 (``chat_system.gateways[1]``) has no practical rate limit; plain WebSocket users on it
  fill rooms quickly and keep talking while gateway 0 is down.

On failure every page of the test leaves a screenshot, its HTML and its browser console log in
``artifacts/<test name>/`` (plus the chromedriver log), and the tails of the process logs are printed.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

from system import REPO_ROOT, System, cleanup_binaries  # noqa: E402  (e2e/python/system.py)

from chatpage import ChatPage, start_chrome  # noqa: E402

ARTIFACTS = REPO_ROOT / "artifacts"
WEB_ROOT = REPO_ROOT / "web"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def _failed(node) -> bool:
    return any(getattr(getattr(node, f"report_{when}", None), "failed", False) for when in ("setup", "call"))


@pytest.fixture(scope="session", autouse=True)
def _binary_copies():
    yield
    cleanup_binaries()


@pytest.fixture(scope="module")
def chat_system(tmp_path_factory: pytest.TempPathFactory):
    assert (WEB_ROOT / "index.html").is_file(), f"{WEB_ROOT}/index.html is missing"
    system = System(tmp_path_factory.mktemp("browser-system"))
    try:
        system.start(chat_services=1, broadcasters=1, gateways=0)
        web = {"WEB_ROOT": str(WEB_ROOT)}
        system.add_gateway({**web}, wait=False)
        system.add_gateway({**web, "RATE_LIMIT_PER_SEC": "100000", "RATE_LIMIT_BURST": "100000"}, wait=False)
        for gateway in system.gateways:
            gateway.wait_ready()
        yield system
    finally:
        system.stop()


@pytest.fixture
def open_page(request, chat_system, tmp_path):
    """open_page(label, width=1100, height=760) → a ChatPage on gateway 0's `/` (not logged in yet)."""
    pages: list[ChatPage] = []
    directory = ARTIFACTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    shutil.rmtree(directory, ignore_errors=True)  # what an earlier failed run left

    def make(label: str, width: int = 1100, height: int = 760, path: str = "/") -> ChatPage:
        driver = start_chrome(width, height, tmp_path / f"chromedriver-{label}.log")
        page = ChatPage(driver, label)
        pages.append(page)
        return page.open(chat_system.gateway.base_url, path)

    yield make

    failed = _failed(request.node)
    for page in pages:
        if failed:
            page.save_artifacts(directory)
            log = tmp_path / f"chromedriver-{page.label}.log"
            if log.exists():
                (directory / log.name).write_bytes(log.read_bytes())
        else:
            page.collect_console()
        try:
            page.driver.quit()
        except Exception as error:  # keep closing the others
            print(f"could not quit {page.label}: {error}")
    if failed:
        print(f"\nbrowser artifacts: {directory}")
        print(f"\n===== process logs ({chat_system.dir}) =====\n{chat_system.log_tails()}")
    # Errors in the page's own scripts fail the test even when the assertions passed.
    if not failed:
        severe = [entry for page in pages for entry in page.console
                  if entry.get("level") == "SEVERE" and "/ws" not in entry.get("message", "")
                  and "api/v1/rooms" not in entry.get("message", "")]
        assert not severe, f"browser console errors: {severe}"
