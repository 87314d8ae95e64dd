"""The search box (issue 16): Ctrl/Cmd+K or ``/``, results grouped by chat with the matches
marked as text (never HTML from the server), person and chat filters, and a click that opens
the chat at the message, outside the loaded history page, highlighted."""

from __future__ import annotations

import uuid

from playwright.sync_api import Browser, expect

from tests.web.conftest import ServerProcess, invite_and_open_dm, send, shot, sign_up


def test_search_finds_marks_filters_and_jumps_to_the_message(
    browser: Browser, server: ServerProcess
) -> None:
    ada = sign_up(browser, server, "Ada Lovelace", workspace=f"Search {uuid.uuid4().hex[:6]}")
    bob = sign_up(browser, server, "Bob Babbage")
    invite_and_open_dm(ada, bob)
    send(ada.page, "<b>我们的实时聊天应用</b> 😀 ready")
    # More than one history page after the hit, so the jump must load around it.
    for i in range(55):
        send(ada.page, f"filler {i}")
    expect(ada.page.locator("#messages .msg[data-id]", has_text="filler 54")).to_be_visible()

    page = bob.page
    page.locator(".chat-item", has_text="Ada Lovelace").click()
    expect(page.locator("#messages .msg[data-id]", has_text="filler 54")).to_be_visible()
    page.keyboard.press("Control+k")
    expect(page.locator("#search-q")).to_be_focused()
    page.fill("#search-q", "聊天")
    hit = page.locator("#search-results .search-hit-item")
    expect(hit).to_have_count(1)
    expect(page.locator("#search-results .search-group h4")).to_have_text("Ada Lovelace")
    expect(hit.locator("mark")).to_have_text("聊天")
    # The server's text is shown as text: the tags are characters, not elements.
    expect(hit.locator(".search-text")).to_have_text("<b>我们的实时聊天应用</b> 😀 ready")
    assert hit.locator(".search-text b").count() == 0
    # Filters: from Bob → nothing; from Ada → the hit again.
    page.select_option("#search-from", label="Bob Babbage")
    expect(page.locator("#search-status")).to_have_text("No messages found")
    page.select_option("#search-from", label="Ada Lovelace")
    expect(hit).to_have_count(1)
    page.fill("#search-q", '"ready 😀" 应用')
    expect(hit.locator("mark")).to_have_count(2)
    shot(page, "search-results")

    hit_id = hit.get_attribute("data-id")
    hit.click()
    expect(page.locator("dialog")).not_to_be_visible()
    target = page.locator("#messages .msg.jump-target")
    expect(target).to_have_attribute("data-id", str(hit_id))
    expect(target).to_be_in_viewport()
    # Newer messages are loaded up to the newest: no gap after the jump.
    expect(page.locator("#messages .msg[data-id]", has_text="filler 54")).to_have_count(1)
    shot(page, "search-jump")

    # `/` opens it too, when not typing.
    page.locator("#messages").focus()
    page.keyboard.press("/")
    expect(page.locator("#search-q")).to_be_focused()
    page.keyboard.press("Escape")
    expect(page.locator("dialog")).not_to_be_visible()
    assert ada.errors == []
    assert bob.errors == []
