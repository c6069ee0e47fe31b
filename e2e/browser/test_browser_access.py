"""The web UI in token mode (AUTH_JWT_SECRET on the chat-service and the gateways): signing in with a
token, private rooms and invitations by name, roles, moderation from the member list, direct messages,
and the room events (added, removed, room_updated, room_deleted) reaching the other browser at once.

Two browsers (an owner and a guest) against the real system; every wait is a DOM condition with a deadline.
"""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from accessclient import TOKEN_ENV, sign_in, token  # e2e/python (conftest puts it on sys.path)
from chatpage import ChatPage, unique
from system import REPO_ROOT, System

WEB_ROOT = REPO_ROOT / "web"


@pytest.fixture(scope="module")
def chat_system(tmp_path_factory: pytest.TempPathFactory):
    """Overrides conftest's username-mode system: the same parts, with tokens required."""
    system = System(tmp_path_factory.mktemp("browser-access-system"))
    try:
        system.start(chat_services=1, broadcasters=1, gateways=0, chat_env=TOKEN_ENV)
        system.add_gateway({**TOKEN_ENV, "WEB_ROOT": str(WEB_ROOT)})
        yield system
    finally:
        system.stop()


def token_login(page: ChatPage, name: str) -> ChatPage:
    page.wait(lambda: page.visible("#login-token"), "login form shown")
    page.find("#login-token").send_keys(token(name), Keys.ENTER)
    page.username = name
    page.wait_connected()
    page.wait(lambda: page.text("#me-name") == name, "the name from the token shown")
    return page


def users(chat_system, *names: str):
    """The directory knows a user once they have used the system; returns their ids by name."""
    return {name: sign_in(chat_system.gateway, name).id for name in names}


def member(page: ChatPage, name: str):
    return page.driver.find_element(By.CSS_SELECTOR, f'#members li[data-username="{name}"]')


def member_role(page: ChatPage, name: str) -> str | None:
    return page.js("return document.querySelector(`#members li[data-username=\"${arguments[0]}\"]`)?.dataset.role ?? null",
                   name)


def listed(page: ChatPage, css: str, room_id: str) -> bool:
    return bool(page.driver.find_elements(By.CSS_SELECTOR, f'{css} li[data-room-id="{room_id}"]'))


def toast_codes(page: ChatPage) -> list[str]:
    return page.js("return Array.from(document.querySelectorAll('#toasts .toast'), t => t.dataset.code)")


def toast_text(page: ChatPage, code: str) -> str:
    return page.js("return document.querySelector(`#toasts .toast[data-code=\"${arguments[0]}\"] .text`)?.textContent ?? ''",
                   code)


def create_private_room(page: ChatPage, name: str) -> str:
    Select(page.find("#create-room-visibility")).select_by_value("private")
    room_id = page.create_room(name)
    page.wait(lambda: page.text("#room-role") == "owner", "my role (owner) in the header")
    page.wait(lambda: "Private" in page.text("#room-kind"), "the room marked private")
    return room_id


def invite(page: ChatPage, name: str) -> None:
    page.wait(lambda: page.visible("#invite-name"), "invite box shown")
    box = page.find("#invite-name")
    box.clear()
    box.send_keys(name)
    page.wait(lambda: page.driver.find_element(By.CSS_SELECTOR, f'#invite-results li[data-username="{name}"] button'),
              f"{name} found by the search").click()
    page.wait(lambda: member_role(page, name) == "member", f"{name} on the member list as member")


def test_a_name_without_a_token_is_sent_back_to_the_token_field(open_page):
    page = open_page("nobody")
    page.wait(lambda: page.visible("#login-name"), "login form shown")
    page.find("#login-name").send_keys(unique("ann"), Keys.ENTER)
    page.wait(lambda: page.visible("#login-token") and "token" in page.text("#login-error"),
              "the form asks for a token", timeout=30)


def test_private_room_invite_send_mute_and_remove(open_page, chat_system):
    owner_name, guest_name = unique("olga"), unique("gus")
    users(chat_system, owner_name, guest_name)
    owner = token_login(open_page("owner"), owner_name)
    guest = token_login(open_page("guest"), guest_name)
    room_name = unique("secret")
    room_id = create_private_room(owner, room_name)
    assert not listed(guest, "#all-rooms", room_id), "a private room is invisible before the invitation"

    invite(owner, guest_name)
    assert member_role(owner, owner_name) == "owner"
    # The invitation reaches the guest's room list without a reload (the `added` frame).
    guest.wait(lambda: listed(guest, "#all-rooms", room_id), "the private room in the guest's list")
    assert guest.js("return document.querySelector(`#all-rooms li[data-room-id=\"${arguments[0]}\"]`).dataset.visibility",
                    room_id) == "private"
    guest.join_room(room_name)
    guest.wait(lambda: guest.text("#room-role") == "member", "the guest's role in the header")
    guest.send("hello from the guest")
    owner.wait_message("hello from the guest", author=guest_name)
    # A member sees no moderation controls; the owner sees them next to the guest.
    assert not guest.driver.find_elements(By.CSS_SELECTOR, "#members button.mute, #members button.remove")
    assert guest.find("#rename-room").is_displayed() is False and guest.find("#delete-room").is_displayed() is False
    assert owner.find("#rename-room").is_displayed() and owner.find("#delete-room").is_displayed()

    member(owner, guest_name).find_element(By.CSS_SELECTOR, "button.mute").click()
    owner.wait(lambda: member(owner, guest_name).find_element(By.CSS_SELECTOR, ".muted-mark"), "the guest marked muted")
    guest.send("am I muted?")
    guest.wait(lambda: "muted" in toast_codes(guest), "the muted error shown")
    assert "until" in toast_text(guest, "muted"), toast_text(guest, "muted")
    guest.wait(lambda: any(m["state"] == "failed" and "muted" in (m["status"] or "") for m in guest.messages()),
               "the send marked not sent: muted")

    member(owner, guest_name).find_element(By.CSS_SELECTOR, "button.remove").click()
    owner.wait(lambda: member_role(owner, guest_name) is None, "the guest gone from the owner's member list")
    guest.wait(lambda: not listed(guest, "#joined-rooms", room_id) and not listed(guest, "#all-rooms", room_id),
               "the room gone from the guest's lists")
    guest.wait(lambda: "removed" in toast_codes(guest), "the removal explained")
    assert room_name in toast_text(guest, "removed")


def test_a_direct_message_from_the_member_list(open_page, chat_system):
    owner_name, guest_name = unique("olga"), unique("gus")
    users(chat_system, owner_name, guest_name)
    owner = token_login(open_page("owner"), owner_name)
    guest = token_login(open_page("guest"), guest_name)
    lobby = unique("lobby")
    owner.create_room(lobby)
    guest.join_room(lobby)
    guest.wait(lambda: member(guest, owner_name), "the owner in the guest's member list")
    member(guest, owner_name).find_element(By.CSS_SELECTOR, "button.dm").click()
    guest.wait(lambda: guest.text("#room-kind") == "Direct message", "the direct room opened")
    dm_id = guest.wait_in_room(guest.text("#room-title"))
    assert dm_id != owner.active_room_id()
    guest.send("psst")

    owner.wait(lambda: listed(owner, "#all-rooms", dm_id), "the direct room in the owner's list")
    owner.find(f'#all-rooms li[data-room-id="{dm_id}"] button').click()
    owner.wait(lambda: owner.active_room_id() == dm_id, "the owner in the direct room")
    owner.wait_message("psst", author=guest_name)
    owner.send("hi back")
    guest.wait_message("hi back", author=owner_name)
    # Nobody moderates a direct room.
    assert not owner.driver.find_elements(By.CSS_SELECTOR, "#members button.ban")
    assert not owner.find("#rename-room").is_displayed()
    # The token stays with the tab: a reload signs in again and keeps the room.
    guest.driver.refresh()
    guest.wait_connected()
    guest.wait(lambda: guest.text("#me-name") == guest_name and guest.active_room_id() == dm_id, "signed in again after the reload")
    assert not guest.visible("#login-form")
    guest.wait_message("hi back", author=owner_name)


def test_rename_archive_and_delete_reach_the_guest(open_page, chat_system):
    owner_name, guest_name = unique("olga"), unique("gus")
    users(chat_system, owner_name, guest_name)
    owner = token_login(open_page("owner"), owner_name)
    guest = token_login(open_page("guest"), guest_name)
    room_name = unique("plans")
    room_id = create_private_room(owner, room_name)
    invite(owner, guest_name)
    guest.join_room(room_name)
    owner.wait(lambda: guest_name in owner.js("return Array.from(document.querySelectorAll('#members li'), li => li.dataset.username)"),
               "guest listed")

    new_name = unique("renamed")
    owner.find("#rename-room").click()
    field = owner.find("#rename-input")
    field.clear()
    field.send_keys(new_name, Keys.ENTER)
    guest.wait(lambda: guest.text("#room-title") == new_name, "the new name in the guest's header")
    guest.wait(lambda: guest.text(f'#joined-rooms li[data-room-id="{room_id}"] .name') == new_name, "and in the room list")

    owner.find("#archive-room").click()
    guest.wait(lambda: "Archived" in (guest.text("#room-kind") or ""), "the room marked archived for the guest")
    guest.wait(lambda: guest.js("return document.querySelector('#composer-input').disabled"), "the guest's composer read-only")
    owner.wait(lambda: owner.text("#archive-room") == "Unarchive", "the owner can unarchive")

    owner.find("#delete-room").click()
    owner.wait(lambda: owner.text("#delete-room") == "Confirm delete", "delete asks for confirmation")
    owner.find("#delete-room").click()
    guest.wait(lambda: "room_deleted" in toast_codes(guest), "the deletion shown to the guest")
    assert new_name in toast_text(guest, "room_deleted")
    guest.wait(lambda: not listed(guest, "#joined-rooms", room_id) and not listed(guest, "#all-rooms", room_id),
               "the deleted room gone from the guest's lists")
    owner.wait(lambda: not listed(owner, "#joined-rooms", room_id), "and from the owner's")


def test_a_ban_in_a_public_room_and_the_refused_rejoin(open_page, chat_system):
    owner_name, guest_name = unique("olga"), unique("gus")
    users(chat_system, owner_name, guest_name)
    owner = token_login(open_page("owner"), owner_name)
    guest = token_login(open_page("guest"), guest_name)
    room_name = unique("square")
    room_id = owner.create_room(room_name)
    guest.join_room(room_name)
    owner.wait(lambda: member(owner, guest_name), "the guest in the owner's member list")
    # The guest (a plain member) has no moderation buttons next to the owner.
    assert not member(guest, owner_name).find_elements(By.CSS_SELECTOR, "button.ban, button.mute")
    member(owner, guest_name).find_element(By.CSS_SELECTOR, "button.ban").click()
    guest.wait(lambda: "banned" in toast_codes(guest), "the ban explained")
    assert room_name in toast_text(guest, "banned")
    guest.wait(lambda: not listed(guest, "#joined-rooms", room_id), "the room gone from the guest's rooms")
    # A public room stays listed; joining it again is refused with the reason.
    guest.find("#toasts .toast button").click()
    guest.wait(lambda: listed(guest, "#all-rooms", room_id), "the public room still listed")
    guest.find(f'#all-rooms li[data-room-id="{room_id}"] button').click()
    guest.wait(lambda: "banned" in toast_codes(guest) and "banned from this room" in toast_text(guest, "banned"),
               "the refused join says banned")
    guest.wait(lambda: not listed(guest, "#joined-rooms", room_id), "no endless re-join")
