"""The browser client: user status shown live to others (icon and word, not colour alone),
the user card, and per-chat mute (docs/web.md "Status, user card and mute")."""

from __future__ import annotations

import uuid

from playwright.sync_api import Browser, expect

from tests.web.conftest import ServerProcess, invite_and_open_dm, shot, sign_up


def test_busy_shows_live_in_another_members_list_and_the_user_card(
    browser: Browser, server: ServerProcess
) -> None:
    ada = sign_up(browser, server, "Ada Lovelace", workspace=f"Status {uuid.uuid4().hex[:6]}")
    bob = sign_up(browser, server, "Bob Babbage")
    invite_and_open_dm(ada, bob)
    bob.page.locator(".chat-item", has_text="Ada Lovelace").click()
    bob.page.click("#members-toggle")
    ada_row = bob.page.locator("#members-panel .member", has_text="Ada Lovelace")
    expect(ada_row.locator(".status")).to_have_attribute("data-status", "online")
    expect(ada_row.locator(".status")).to_contain_text("Online")  # a word, not only a colour

    ada.page.click("#my-status")
    ada.page.check("dialog input[name=status][value=busy]")
    ada.page.fill("dialog input[name=text]", "Writing the notes")
    ada.page.select_option("dialog select[name=clear]", "3600")
    ada.page.click("dialog button[type=submit]")
    expect(ada.page.locator("dialog")).not_to_be_visible()
    expect(ada.page.locator("#my-status")).to_contain_text("Busy")
    assert ada.page.evaluate("window.fechatter.isDoNotDisturb()") is True

    # Bob's page learns it from the presence event: no reload.
    expect(ada_row.locator(".status")).to_have_attribute("data-status", "busy")
    expect(ada_row.locator(".status")).to_contain_text("Busy")
    expect(bob.page.locator("#chat-subtitle")).to_contain_text("busy: Writing the notes")
    shot(bob.page, "web-status-busy")

    ada_row.locator(".name-link").click()
    card = bob.page.locator("dialog")
    expect(card).to_contain_text("Ada Lovelace")
    expect(card).to_contain_text(ada.email)
    expect(card).to_contain_text("Busy: Writing the notes")
    shot(bob.page, "web-user-card")
    card.locator("button", has_text="Close").click()

    # Back to automatic presence.
    ada.page.click("#my-status")
    ada.page.check("dialog input[name=status][value=online]")
    ada.page.click("dialog button[type=submit]")
    expect(ada_row.locator(".status")).to_have_attribute("data-status", "online")
    assert ada.page.evaluate("window.fechatter.isDoNotDisturb()") is False
    assert ada.errors == []
    assert bob.errors == []


def test_mute_toggles_and_is_kept_by_the_server(browser: Browser, server: ServerProcess) -> None:
    ada = sign_up(browser, server, "Ada Lovelace", workspace=f"Mute {uuid.uuid4().hex[:6]}")
    bob = sign_up(browser, server, "Bob Babbage")
    invite_and_open_dm(ada, bob)
    item = bob.page.locator(".chat-item", has_text="Ada Lovelace")
    item.click()
    toggle = bob.page.locator("#mute-toggle")
    expect(toggle).to_have_attribute("aria-pressed", "false")
    toggle.click()
    expect(toggle).to_have_attribute("aria-pressed", "true")
    expect(item.locator(".muted-icon")).to_be_visible()
    chat_id = bob.page.evaluate("window.fechatter.state.current")
    assert bob.page.evaluate(f"window.fechatter.isMuted({chat_id})") is True

    # The server keeps it: after a reload (no chat opened) the chat is still muted, and a new
    # message counts quietly (no bold name, a quiet badge).
    bob.page.evaluate(
        "Object.keys(localStorage).filter((k) => k.startsWith('fechatter.chat.'))"
        ".forEach((k) => localStorage.removeItem(k))"
    )
    bob.page.reload()
    bob.page.wait_for_function("() => document.body.dataset.live === 'online'")
    item = bob.page.locator(".chat-item", has_text="Ada Lovelace")
    expect(item.locator(".muted-icon")).to_be_visible()
    ada.page.fill("#input", "psst")
    ada.page.press("#input", "Enter")
    expect(item.locator(".badge.quiet")).to_have_text("1")
    expect(item).not_to_have_class("unread")
    shot(bob.page, "web-muted-chat")

    item.click()
    bob.page.locator("#mute-toggle").click()
    expect(bob.page.locator("#mute-toggle")).to_have_attribute("aria-pressed", "false")
    expect(item.locator(".muted-icon")).to_have_count(0)
    assert ada.errors == []
    assert bob.errors == []


def test_a_status_change_keeps_the_keyboard_focus(browser: Browser, server: ServerProcess) -> None:
    # Presence events (and the minute's redraw) re-render the members panel and the chat list:
    # a keyboard user's focus in either must stay on the same control, not fall to <body>.
    ada = sign_up(browser, server, "Ada Lovelace", workspace=f"Focus {uuid.uuid4().hex[:6]}")
    bob = sign_up(browser, server, "Bob Babbage")
    invite_and_open_dm(ada, bob)
    bob.page.locator(".chat-item", has_text="Ada Lovelace").click()
    bob.page.click("#members-toggle")
    ada_row = bob.page.locator("#members-panel .member", has_text="Ada Lovelace")
    expect(ada_row.locator(".status")).to_have_attribute("data-status", "online")
    ada_row.locator(".name-link").focus()
    ada.page.evaluate("window.fechatter.live.api.put('/api/users/me/status', {status: 'busy'})")
    expect(ada_row.locator(".status")).to_have_attribute("data-status", "busy")
    expect(ada_row.locator(".name-link")).to_be_focused()

    item = bob.page.locator(".chat-item", has_text="Ada Lovelace")
    item.focus()
    ada.page.evaluate("window.fechatter.live.api.put('/api/users/me/status', {status: 'away'})")
    expect(item.locator(".status")).to_have_attribute("data-status", "away")
    expect(item).to_be_focused()
    assert ada.errors == []
    assert bob.errors == []
