"""Helpers for the browser UI tests: a page object over one headless Chromium (Selenium) and a small
synchronous WebSocket client that plays a second user through another gateway.

Every wait polls a condition with a deadline (WebDriverWait); nothing sleeps to synchronise.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import string
import time
from pathlib import Path
from typing import Any, Callable

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait
from websockets.sync.client import connect as ws_connect

DEFAULT_TIMEOUT = 15.0

# Reads the active room's messages in one call: [{seq, author, body, own, state, client_msg_id}], in
# page order (stored messages first, then the ones still being sent).
_MESSAGES_JS = """
const out = [];
const room = document.querySelector('.room-log:not([hidden])');
if (!room) return out;
for (const li of room.querySelectorAll('li.msg')) {
  out.push({
    seq: li.dataset.seq ? Number(li.dataset.seq) : null,
    author: li.querySelector('.author')?.textContent ?? null,
    body: li.querySelector('.body')?.textContent ?? null,
    own: li.classList.contains('own'),
    state: li.dataset.state || (li.dataset.seq ? 'stored' : null),
    status: li.querySelector('.status')?.textContent ?? null,
    client_msg_id: li.dataset.clientMsgId || null,
  });
}
return out;
"""


def unique(prefix: str) -> str:
    return f"{prefix}-{''.join(random.choices(string.ascii_lowercase + string.digits, k=6))}"


def chromium_binary() -> str:
    for candidate in (os.environ.get("CHROMIUM_BIN"), shutil.which("chromium"), "/usr/lib/chromium/chromium",
                      shutil.which("chromium-browser"), shutil.which("google-chrome")):
        if candidate and Path(candidate).exists():
            return candidate
    raise AssertionError("chromium not found: run scripts/bootstrap (installs Debian chromium) or set CHROMIUM_BIN")


def chromedriver_binary() -> str:
    for candidate in (os.environ.get("CHROMEDRIVER_BIN"), shutil.which("chromedriver"), "/usr/lib/chromium/chromedriver"):
        if candidate and Path(candidate).exists():
            return candidate
    raise AssertionError("chromedriver not found: run scripts/bootstrap (installs Debian chromium-driver) "
                         "or set CHROMEDRIVER_BIN")


def start_chrome(width: int, height: int, log_path: Path) -> webdriver.Chrome:
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download anything
    options = Options()
    options.binary_location = chromium_binary()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--window-size={width},{height}", "--no-first-run", "--no-default-browser-check",
                     "--disable-extensions", "--disable-background-networking", "--disable-sync",
                     "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                     "--disable-backgrounding-occluded-windows", "--lang=en-US"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # Any alert() makes the next WebDriver command fail (UnexpectedAlertPresentException).
    options.set_capability("unhandledPromptBehavior", "dismiss and notify")
    service = Service(executable_path=chromedriver_binary(), log_output=str(log_path))
    driver = webdriver.Chrome(service=service, options=options)
    if width < 500:
        # Headless windows are at least 500 px wide: emulate a phone's viewport instead.
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": True})
    return driver


class ChatPage:
    """One browser tab on the chat UI."""

    def __init__(self, driver: webdriver.Chrome, label: str):
        self.driver = driver
        self.label = label
        self.username: str | None = None
        self.console: list[dict[str, Any]] = []

    # --- waiting ---------------------------------------------------------------------------------------------
    def wait(self, condition: Callable[[], Any], what: str, timeout: float = DEFAULT_TIMEOUT) -> Any:
        def check(_driver):
            try:
                return condition()
            except (WebDriverException, LookupError, TypeError, ValueError):
                return False
        return WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(check, f"{self.label}: {what}")

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def find(self, css: str):
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def text(self, css: str) -> str:
        return self.js("return document.querySelector(arguments[0])?.textContent ?? null", css)

    def visible(self, css: str) -> bool:
        elements = self.driver.find_elements(By.CSS_SELECTOR, css)
        return bool(elements) and elements[0].is_displayed()

    # --- navigation ------------------------------------------------------------------------------------------
    def open(self, base_url: str, path: str = "/") -> "ChatPage":
        self.driver.get(base_url + path)
        self.wait(lambda: self.js("return document.readyState") == "complete", "page loaded")
        return self

    def login(self, username: str) -> "ChatPage":
        self.wait(lambda: self.visible("#login-name"), "login form shown")
        field = self.find("#login-name")
        field.clear()
        field.send_keys(username, Keys.ENTER)
        self.username = username
        self.wait_connected()
        return self

    def conn_state(self) -> str:
        return self.find("#conn").get_attribute("data-state")

    def wait_connected(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.wait(lambda: self.conn_state() == "open", "connected", timeout)

    def create_room(self, name: str) -> str:
        field = self.find("#create-room-name")
        field.clear()
        field.send_keys(name, Keys.ENTER)
        return self.wait_in_room(name)

    def join_room(self, name: str) -> str:
        """Clicks the room in the list of all rooms, as a user would: the list is refreshed (the Refresh
        button) when the room is not there yet."""
        def button():
            for item in self.driver.find_elements(By.CSS_SELECTOR, "#all-rooms li"):
                if item.find_element(By.CSS_SELECTOR, ".name").text == name:
                    return item.find_element(By.CSS_SELECTOR, "button")
            return None
        if button() is None:
            self.find("#refresh-rooms").click()
        self.wait(button, f"room {name!r} listed").click()
        return self.wait_in_room(name)

    def wait_in_room(self, name: str) -> str:
        """Waits until `name` is the active room and joined; returns its id."""
        self.wait(lambda: self.text("#room-title") == name, f"room {name!r} shown")
        self.wait(lambda: self.js("return !document.querySelector('#composer-input').disabled"), "composer enabled")
        self.wait(lambda: self.text("#history-state") not in ("", "Loading messages…"), f"history of {name!r} loaded")
        return self.active_room_id()

    def active_room_id(self) -> str:
        return self.js("return document.querySelector('#joined-rooms li.active')?.dataset.roomId ?? null")

    # --- messages ---------------------------------------------------------------------------------------------
    def type(self, text: str) -> None:
        box = self.find("#composer-input")
        box.send_keys(text)

    def send(self, text: str) -> None:
        box = self.find("#composer-input")
        box.send_keys(text, Keys.ENTER)

    def send_via_script(self, text: str) -> None:
        """Puts `text` into the composer and submits the form (for texts too long to type)."""
        self.js("""
            const box = document.querySelector('#composer-input');
            box.value = arguments[0];
            box.dispatchEvent(new Event('input', {bubbles: true}));
            document.querySelector('#composer').requestSubmit();
        """, text)

    def messages(self) -> list[dict[str, Any]]:
        return self.js(_MESSAGES_JS)

    def stored(self) -> list[dict[str, Any]]:
        return [m for m in self.messages() if m["seq"] is not None]

    def wait_message(self, body: str, timeout: float = DEFAULT_TIMEOUT, **fields: Any) -> dict[str, Any]:
        """Waits for a stored message with this body (and these fields); returns it."""
        def found():
            for message in self.stored():
                if message["body"] == body and all(message.get(k) == v for k, v in fields.items()):
                    return message
            return None
        return self.wait(found, f"message {body!r} {fields or ''} shown", timeout)

    def assert_no_duplicates(self) -> list[dict[str, Any]]:
        stored = self.stored()
        seqs = [m["seq"] for m in stored]
        assert seqs == sorted(seqs), f"{self.label}: messages out of order: {seqs}"
        assert len(seqs) == len(set(seqs)), f"{self.label}: a seq is shown twice: {seqs}"
        return stored

    # --- artifacts -----------------------------------------------------------------------------------------------
    def collect_console(self) -> list[dict[str, Any]]:
        try:
            self.console.extend(self.driver.get_log("browser"))
        except WebDriverException:
            pass
        return self.console

    def save_artifacts(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        try:
            self.driver.save_screenshot(str(directory / f"{self.label}.png"))
        except WebDriverException as error:
            (directory / f"{self.label}.screenshot-error.txt").write_text(str(error))
        try:
            (directory / f"{self.label}.html").write_text(self.driver.page_source)
        except WebDriverException:
            pass
        lines = [f"{entry.get('timestamp')} {entry.get('level')} {entry.get('message')}" for entry in self.collect_console()]
        (directory / f"{self.label}.console.log").write_text("\n".join(lines) + "\n")


class WsUser:
    """A plain WebSocket user (no browser), e.g. on a second gateway; synchronous."""

    def __init__(self, gateway, username: str):
        self.username = username
        # Entered as a context manager (websockets ≥ 17.1 warns otherwise); close() ends it.
        self.ws = ws_connect(gateway.ws_url(username), open_timeout=10).__enter__()
        self.frames: list[dict[str, Any]] = []
        self.counter = 0
        hello = self.next_frame(lambda f: f["type"] == "connected")
        self.user_id = hello["user_id"]

    def next_frame(self, match: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.username}: no matching frame within {timeout} s; last: {self.frames[-5:]}")
            frame = json.loads(self.ws.recv(timeout=left))
            self.frames.append(frame)
            if frame.get("type") == "error" and not match(frame):
                raise AssertionError(f"{self.username}: error frame {frame}")
            if match(frame):
                return frame

    def join(self, room_id: str) -> dict[str, Any]:
        self.ws.send(json.dumps({"type": "join", "room_id": room_id}))
        return self.next_frame(lambda f: f["type"] == "joined" and f["room_id"] == room_id)

    def say(self, room_id: str, content: str) -> dict[str, Any]:
        """Sends and waits for the ack; returns it (with the stored seq)."""
        self.counter += 1
        client_id = f"py-{self.counter}-{random.randrange(1 << 30)}"
        self.ws.send(json.dumps({"type": "message", "room_id": room_id, "content": content, "client_msg_id": client_id}))
        return self.next_frame(lambda f: f.get("client_msg_id") == client_id and f["type"] == "ack")

    def typing(self, room_id: str) -> None:
        self.ws.send(json.dumps({"type": "typing", "room_id": room_id}))

    def close(self) -> None:
        self.ws.close()
