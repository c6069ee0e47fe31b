"""The browser UI (web/, served by the gateway at `/`) in real headless Chromium against the real system.

The kill-and-restart test is last: it takes gateway 0 down and brings it back (same port).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import requests
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from chatpage import WsUser, unique

XSS_MESSAGE = "<img src=x onerror=alert(1)>"
XSS_ROOM = "<img src=x onerror=alert(2)> room"
XSS_NAME = "<img src=x onerror=alert(3)>"


def members(page) -> list[str]:
    return page.js("return Array.from(document.querySelectorAll('#members li'), li => li.dataset.username)")


def composer_top(page) -> float:
    return page.js("return document.querySelector('#composer').getBoundingClientRect().top")


def assert_no_alert(page) -> None:
    try:
        alert = page.driver.switch_to.alert
    except NoAlertPresentException:
        return
    raise AssertionError(f"{page.label}: an alert is open: {alert.text!r}")


def test_two_browsers_chat_both_ways(open_page):
    # The README screenshot: UI_SCREENSHOT=docs/screenshot.png .venv/bin/python -m pytest e2e/browser -k both_ways
    screenshot = os.environ.get("UI_SCREENSHOT")
    ann = open_page("ann").login("ann" if screenshot else unique("ann"))
    bob = open_page("bob").login("bob" if screenshot else unique("bob"))
    room = unique("general") if not screenshot else "general"
    ann.create_room(room)
    bob.join_room(room)  # appears in bob's list through room_created, live

    # The members list follows joins.
    ann.wait(lambda: bob.username in members(ann), "bob in ann's member list")
    top = composer_top(ann)

    ann.send("hello bob")
    mine = ann.wait_message("hello bob", own=True, author=ann.username)
    ann.wait(lambda: ann.wait_message("hello bob")["status"] == "sent", "ann's message marked sent (ack)")
    theirs = bob.wait_message("hello bob", own=False, author=ann.username)
    assert mine["seq"] == theirs["seq"] == 1

    # Typing notice, then the answer; the composer does not move when either arrives.
    bob.type("hi")
    ann.wait(lambda: ann.text("#typing") == f"{bob.username} is typing…", "typing indicator for bob")
    assert composer_top(ann) == top
    bob.find("#composer-input").send_keys(" ann", Keys.ENTER)
    ann.wait_message("hi ann", own=False, author=bob.username, seq=2)
    bob.wait_message("hi ann", own=True, seq=2)
    ann.wait(lambda: ann.text("#typing") == "", "typing indicator cleared by bob's message")
    assert composer_top(ann) == top

    for page in (ann, bob):
        stored = page.assert_no_duplicates()
        assert [m["body"] for m in stored] == ["hello bob", "hi ann"]
        assert not [m for m in page.messages() if m["seq"] is None], "a message is still pending"

    if screenshot:
        bob.send("Plain HTML, CSS and JavaScript, served by the gateway at /")
        ann.wait_message("Plain HTML, CSS and JavaScript, served by the gateway at /")
        ann.send("and <b>markup</b> stays text")
        bob.wait_message("and <b>markup</b> stays text")
        ann.find("#refresh-rooms").click()
        bob.type("…")
        ann.wait(lambda: "typing" in ann.text("#typing"), "typing shown for the screenshot")
        ann.driver.save_screenshot(str(Path(screenshot).resolve()))


def test_markup_in_messages_names_and_room_names_is_text(open_page, chat_system):
    ann = open_page("ann").login(unique("ann"))
    eve = open_page("eve").login(XSS_NAME)
    ann.create_room(XSS_ROOM)
    eve.join_room(XSS_ROOM)
    ann.wait(lambda: XSS_NAME in members(ann), "eve (by her markup name) in ann's member list")

    eve.send(XSS_MESSAGE)
    shown = ann.wait_message(XSS_MESSAGE, author=XSS_NAME, own=False)
    eve.wait_message(XSS_MESSAGE, own=True)
    # A round trip after it, so an onerror handler (had one been created) would have run by now.
    ann.send("after the markup")
    eve.wait_message("after the markup")

    for page in (ann, eve):
        assert_no_alert(page)
        assert page.text("#room-title") == XSS_ROOM
        assert page.js("return document.querySelectorAll('img, script:not([src]), [onerror]').length") == 0
        body = page.driver.find_element(By.XPATH, f"//li[@data-seq='{shown['seq']}']//p[@class='body']")
        assert body.is_displayed() and body.text == XSS_MESSAGE
    # The room name is text in the room lists too.
    names = ann.js("return Array.from(document.querySelectorAll('.room-item .name'), n => n.textContent)")
    assert XSS_ROOM in names


def test_reload_restores_the_room_with_its_history(open_page, chat_system):
    ann = open_page("ann").login(unique("ann"))
    room = unique("reload")
    room_id = ann.create_room(room)
    other = WsUser(chat_system.gateways[1], unique("zoe"))
    try:
        other.join(room_id)
        for text in ("one", "two"):
            ann.send(text)
            ann.wait_message(text, own=True)
        other.say(room_id, "three")
        ann.wait_message("three", own=False, author=other.username)
    finally:
        other.close()

    ann.driver.refresh()
    ann.wait_connected()
    assert not ann.visible("#login-form"), "the name was not kept across the reload"
    ann.wait(lambda: ann.text("#room-title") == room, "room restored after reload")
    ann.wait(lambda: [m["body"] for m in ann.stored()] == ["one", "two", "three"], "history restored")
    stored = ann.assert_no_duplicates()
    assert [m["seq"] for m in stored] == [1, 2, 3]
    assert [m["own"] for m in stored] == [True, True, False]
    assert ann.active_room_id() == room_id

    # And it still works: a new message after the reload.
    ann.send("four")
    assert ann.wait_message("four", own=True)["seq"] == 4


def test_scrolling_up_loads_older_pages(open_page, chat_system):
    total = 130
    filler = WsUser(chat_system.gateways[1], unique("filler"))
    room = unique("long")
    try:
        response = requests.post(chat_system.gateways[1].base_url + "/api/v1/rooms", json={"name": room}, timeout=10)
        assert response.status_code == 201, response.text
        room_id = response.json()["id"]
        filler.join(room_id)
        for n in range(1, total + 1):
            filler.say(room_id, f"line {n}")
    finally:
        filler.close()

    ann = open_page("ann", height=700).login(unique("ann"))
    ann.join_room(room)
    first = ann.stored()
    assert first[-1]["seq"] == total and len(first) <= 100 and first[0]["seq"] > 1, [m["seq"] for m in first]
    anchor = first[0]["seq"]

    # Scroll to the top: the previous page is added above, and what was at the top stays in view.
    ann.js("document.querySelector('#scroller').scrollTop = 0")
    ann.wait(lambda: ann.stored()[0]["seq"] < anchor, "an older page loaded")
    in_view = ann.js("""
        const s = document.querySelector('#scroller').getBoundingClientRect();
        const m = document.querySelector(`li[data-seq="${arguments[0]}"]`).getBoundingClientRect();
        return m.bottom > s.top && m.top < s.bottom;""", anchor)
    assert in_view, "the message that was at the top jumped out of view when older ones were added"

    def at_beginning():
        ann.js("document.querySelector('#scroller').scrollTop = 0")
        return ann.text("#history-state") == "Beginning of the room" and ann.stored()[0]["seq"] == 1
    ann.wait(at_beginning, "all pages loaded by scrolling up", timeout=30)
    stored = ann.assert_no_duplicates()
    assert [m["seq"] for m in stored] == list(range(1, total + 1))
    assert [m["body"] for m in stored] == [f"line {n}" for n in range(1, total + 1)]


def test_errors_are_shown(open_page, chat_system):
    ann = open_page("ann").login(unique("ann"))
    ann.create_room(unique("errors"))

    # Too long (over the chat-service's 4096 bytes): failed, with the reason, and no retry (Edit instead).
    ann.send_via_script("x" * 5000)
    failed = ann.wait(lambda: ann.driver.find_element(By.CSS_SELECTOR, "li.msg.failed"), "too-long message marked failed")
    assert "too long" in failed.find_element(By.CSS_SELECTOR, ".status").text.lower()
    assert failed.find_elements(By.CSS_SELECTOR, "button.edit") and not failed.find_elements(By.CSS_SELECTOR, "button.retry")
    ann.wait(lambda: ann.js("return [...document.querySelectorAll('.toast')].some(t => t.dataset.code === 'content_too_long')"),
             "content_too_long toast")
    failed.find_element(By.CSS_SELECTOR, "button.discard").click()
    ann.wait(lambda: not ann.driver.find_elements(By.CSS_SELECTOR, "li.msg.failed"), "discarded")

    # Rate limit (10/s, burst 20 on gateway 0): 30 sends at once; the refused ones show retry_after.
    ann.js("""
        const box = document.querySelector('#composer-input');
        for (let i = 1; i <= 30; i++) { box.value = 'burst ' + i; document.querySelector('#composer').requestSubmit(); }
    """)
    ann.wait(lambda: ann.js("return document.querySelectorAll('li.msg.failed').length") > 0, "rate-limited sends marked failed")
    status = ann.driver.find_element(By.CSS_SELECTOR, "li.msg.failed .status").text
    assert "Rate limited" in status and "Retry in" in status, status
    ann.wait(lambda: ann.js("return [...document.querySelectorAll('.toast')].some(t => t.dataset.code === 'rate_limited')"),
             "rate_limited toast")

    # Retry them (same client_msg_id) until every one is stored: each burst message exactly once.
    def retry_all():
        for button in ann.driver.find_elements(By.CSS_SELECTOR, "li.msg.failed button.retry"):
            button.click()
        bodies = [m["body"] for m in ann.stored()]
        return sorted(bodies) == sorted(f"burst {i}" for i in range(1, 31)) and not ann.driver.find_elements(By.CSS_SELECTOR, "li.msg.pending, li.msg.failed")
    ann.wait(retry_all, "all burst messages stored after retries", timeout=30)
    ann.assert_no_duplicates()

    # A room that does not exist (a stale link): a clear error, and the room is not kept.
    missing = str(uuid.uuid4())
    ann.driver.execute_script("location.hash = arguments[0]", f"#room={missing}")
    ann.wait(lambda: ann.js("return [...document.querySelectorAll('.toast')].some(t => t.dataset.code === 'room_not_found')"),
             "room_not_found toast")
    ann.wait(lambda: not ann.driver.find_elements(By.CSS_SELECTOR, f"#joined-rooms li[data-room-id='{missing}']"),
             "missing room dropped from the joined list")


def test_rooms_unread_members_and_typing(open_page, chat_system):
    ann = open_page("ann").login(unique("ann"))
    room_a, room_b = unique("alpha"), unique("beta")
    id_a = ann.create_room(room_a)
    id_b = ann.create_room(room_b)
    assert ann.active_room_id() == id_b

    zoe = WsUser(chat_system.gateways[1], unique("zoe"))
    try:
        zoe.join(id_a)
        for n in (1, 2, 3):
            zoe.say(id_a, f"in alpha {n}")
        unread = f"#joined-rooms li[data-room-id='{id_a}']"
        ann.wait(lambda: ann.find(unread).get_attribute("data-unread") == "3", "3 unread in alpha")
        assert ann.find(f"{unread} .unread-count").text == "3"
        assert ann.driver.title == "(3) nats-chat"
        assert ann.find(f"#joined-rooms li[data-room-id='{id_b}']").get_attribute("data-unread") == "0"

        # Keyboard: Alt+Up switches to the previous room; its unread count is cleared.
        ann.find("#composer-input").send_keys(Keys.ALT, Keys.ARROW_UP)
        ann.wait(lambda: ann.active_room_id() == id_a, "alpha active after Alt+Up")
        ann.wait(lambda: [m["body"] for m in ann.stored()] == ["in alpha 1", "in alpha 2", "in alpha 3"], "alpha's messages")
        assert ann.find(unread).get_attribute("data-unread") == "0"
        assert ann.driver.title == "nats-chat"
        ann.wait(lambda: sorted(members(ann)) == sorted([ann.username, zoe.username]), "members of alpha")

        zoe.typing(id_a)
        ann.wait(lambda: ann.text("#typing") == f"{zoe.username} is typing…", "zoe typing")
    finally:
        zoe.close()
    ann.wait(lambda: members(ann) == [ann.username], "zoe gone from the members after her socket closed")

    # Leave: the room goes from "Your rooms" and the other one is shown.
    ann.find("#leave-room").click()
    ann.wait(lambda: not ann.driver.find_elements(By.CSS_SELECTOR, f"#joined-rooms li[data-room-id='{id_a}']"), "alpha left")
    ann.wait(lambda: ann.active_room_id() == id_b and ann.text("#room-title") == room_b, "beta shown after leaving alpha")


def test_phone_width_with_the_keyboard_alone(open_page):
    page = open_page("phone", width=390, height=780)
    name, room = unique("pat"), unique("pocket")
    page.wait(lambda: page.visible("#login-name"), "login form")
    active = page.driver.switch_to.active_element
    assert active.get_attribute("id") == "login-name", "the name field has the focus"
    active.send_keys(name, Keys.ENTER)
    page.username = name
    page.wait_connected()
    # No room yet: the focus is in the new-room field, inside the rooms drawer.
    page.wait(lambda: page.driver.switch_to.active_element.get_attribute("id") == "create-room-name", "focus in new room")
    page.driver.switch_to.active_element.send_keys(room, Keys.ENTER)
    page.wait_in_room(room)
    page.wait(lambda: page.driver.switch_to.active_element.get_attribute("id") == "composer-input", "focus in composer")
    page.driver.switch_to.active_element.send_keys("from my phone", Keys.ENTER)
    page.wait_message("from my phone", own=True)

    assert page.visible("#toggle-rooms") and not page.visible("#sidebar .room-list"), "rooms are behind a button"
    overflow = page.js("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px at phone width"
    composer = page.js("return document.querySelector('#composer').getBoundingClientRect().toJSON()")
    assert composer["bottom"] <= 780 and composer["right"] <= 390, composer

    # The drawer opens from the keyboard and Escape closes it again.
    page.find("#toggle-rooms").send_keys(Keys.ENTER)
    page.wait(lambda: page.visible("#joined-rooms"), "rooms drawer open")
    page.driver.switch_to.active_element.send_keys(Keys.ESCAPE)
    page.wait(lambda: page.find("#toggle-rooms").get_attribute("aria-expanded") == "false", "drawer closed by Escape")


def test_unsent_message_survives_a_reload_and_is_stored_once(open_page, chat_system):
    """The chat-service hangs (SIGSTOP): a send stays pending; the page is reloaded; the message comes
    back from the tab's storage and goes out again with the same client_msg_id once the re-join is
    answered. When the service runs again there is exactly one copy."""
    ann = open_page("ann").login(unique("ann"))
    room = unique("paused")
    ann.create_room(room)
    ann.send("before the pause")
    ann.wait_message("before the pause", seq=1)

    service = chat_system.chat_service
    service.pause()
    try:
        ann.send("sent into the void")
        ann.wait(lambda: any(m["body"] == "sent into the void" and m["state"] == "pending" for m in ann.messages()),
                 "pending while the service hangs")
        ann.driver.refresh()
        ann.wait(lambda: any(m["body"] == "sent into the void" and m["seq"] is None for m in ann.messages()),
                 "the unsent message restored after the reload")
    finally:
        service.resume()
    ann.wait_message("sent into the void", own=True, timeout=30)
    ann.wait(lambda: not [m for m in ann.messages() if m["seq"] is None], "nothing left pending", 30)
    stored = ann.assert_no_duplicates()
    assert [(m["seq"], m["body"]) for m in stored] == [(1, "before the pause"), (2, "sent into the void")]


def test_gateway_restart_reconnects_and_resumes_without_duplicates(open_page, chat_system):
    gateway = chat_system.gateway
    ann = open_page("ann").login(unique("ann"))
    bob = open_page("bob").login(unique("bob"))
    room = unique("resume")
    room_id = ann.create_room(room)
    bob.join_room(room)
    ann.send("before 1")
    bob.wait_message("before 1")
    bob.send("before 2")
    ann.wait_message("before 2")

    gateway.kill()  # SIGKILL: no close frame, no goodbye
    for page in (ann, bob):
        page.wait(lambda p=page: p.conn_state() in ("waiting", "connecting"), "disconnected state shown")
        assert "reconnect" in page.text("#conn-text").lower() or "connecting" in page.text("#conn-text").lower()

    # While gateway 0 is down: ann writes (kept, not lost), and zoe talks through gateway 1.
    ann.send("written while offline")
    queued = ann.wait(lambda: next((m for m in ann.messages() if m["body"] == "written while offline"), None), "queued")
    assert queued["seq"] is None and queued["state"] in ("queued", "pending")
    zoe = WsUser(chat_system.gateways[1], unique("zoe"))
    try:
        zoe.join(room_id)
        for n in (1, 2, 3):
            zoe.say(room_id, f"missed {n}")
    finally:
        zoe.close()

    gateway.restart()
    for page in (ann, bob):
        page.wait_connected(timeout=30)
    expected = ["before 1", "before 2", "missed 1", "missed 2", "missed 3", "written while offline"]
    for page in (ann, bob):
        page.wait(lambda p=page: sorted(m["body"] for m in p.stored()) == sorted(expected), "every message exactly once", 30)
        stored = page.assert_no_duplicates()
        assert [m["seq"] for m in stored] == list(range(1, 7)), [m["seq"] for m in stored]
        assert [m["body"] for m in stored][:5] == expected[:5]
        assert not [m for m in page.messages() if m["seq"] is None], "something is still pending"
    assert ann.wait_message("written while offline")["own"]

    # And live traffic flows again both ways.
    bob.send("after restart")
    ann.wait_message("after restart", seq=7)
    assert len(ann.assert_no_duplicates()) == 7
