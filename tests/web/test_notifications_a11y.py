"""The browser client keeping people informed, and accessible (issue 14, part C): the unread
total in the tab title, desktop notifications, the "New messages" divider, announcements of
messages in other chats, the members panel on a phone, settings (theme, profile, password),
and axe-core on every screen in both themes."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.web.axe import assert_accessible
from tests.web.conftest import Person, ServerProcess, invite_and_open_dm, send, shot, sign_up

# Headless Chromium reports every page visible: this init script makes `document.hidden` and
# `visibilityState` follow `window.__setHidden(bool)` (which fires `visibilitychange` like a
# real tab switch), and records every Notification the page creates in `window.__notifications`
# before handing it to the real constructor.
WATCH_PAGE = """(() => {
  let hidden = false;
  Object.defineProperty(Document.prototype, "hidden", { configurable: true, get: () => hidden });
  Object.defineProperty(Document.prototype, "visibilityState", {
    configurable: true, get: () => (hidden ? "hidden" : "visible"),
  });
  window.__setHidden = (value) => {
    hidden = value;
    document.dispatchEvent(new Event("visibilitychange"));
  };
  const Real = window.Notification;
  window.__notifications = [];
  class Watched extends Real {
    constructor(title, options = {}) {
      const record = { title, body: options.body, tag: options.tag };
      window.__notifications.push(record);
      super(title, options);
      record.notification = this;
    }
  }
  Object.defineProperty(Watched, "permission", { get: () => Real.permission });
  Watched.requestPermission = (...args) => Real.requestPermission(...args);
  window.Notification = Watched;
})();"""

NOTIFICATIONS = "window.__notifications.map(({title, body, tag}) => ({title, body, tag}))"


def watched(person: Person, server: ServerProcess) -> None:
    """Grant ``person`` notifications and reload their page under the WATCH_PAGE script."""
    context = person.page.context
    context.grant_permissions(["notifications"], origin=server.url)
    context.add_init_script(WATCH_PAGE)
    person.page.reload()
    person.page.wait_for_selector("#app:not([hidden])")
    person.page.wait_for_function("() => document.body.dataset.live === 'online'")


def new_channel(owner: Person, name: str, *members: Person) -> None:
    """``owner`` creates a private channel ``name`` with ``members`` and opens it."""
    page = owner.page
    if page.locator("#back").is_visible():  # a phone in a chat: back to the list first
        page.click("#back")
    page.click("#new-chat")
    page.select_option("dialog select[name=type]", "PrivateChannel")
    page.fill("dialog input[name=name]", name)
    for m in members:
        page.check(f"dialog label:has-text('{m.name}') input")
    page.click("dialog button[type=submit]")
    expect(page.locator("#chat-title")).to_have_text(name)
    expect(page.locator("dialog")).to_be_hidden()  # closes once the chat is open


def item(page: Page, name: str) -> Any:
    """The sidebar entry of the chat called exactly ``name`` (previews may mention names)."""
    return page.locator(f".chat-item:has(.name:text-is('{name}'))")


def test_tab_title_counts_unread_and_clears_when_read(
    browser: Browser, server: ServerProcess
) -> None:
    ada = sign_up(browser, server, "Ada Lovelace", workspace=f"Title {uuid.uuid4().hex[:6]}")
    bob = sign_up(browser, server, "Bob Babbage")
    invite_and_open_dm(ada, bob)
    expect(item(bob.page, "Ada Lovelace")).to_be_visible()
    expect(bob.page).to_have_title("Fechatter")
    send(ada.page, "one")
    expect(bob.page).to_have_title("(1) Fechatter")
    send(ada.page, "two")
    send(ada.page, "three")
    expect(bob.page).to_have_title("(3) Fechatter")
    expect(ada.page).to_have_title("Fechatter")  # your own messages are never unread
    item(bob.page, "Ada Lovelace").click()
    expect(bob.page).to_have_title("Fechatter")
    # A reload counts from the server's read markers: still nothing unread.
    bob.page.reload()
    expect(bob.page.locator("#messages .bubble", has_text="three")).to_be_visible()
    expect(bob.page).to_have_title("Fechatter")
    assert ada.errors == []
    assert bob.errors == []


def test_desktop_notifications_for_mentions_and_direct_messages_while_hidden(
    browser: Browser, server: ServerProcess
) -> None:
    ada = sign_up(browser, server, "Ada Lovelace", workspace=f"Notify {uuid.uuid4().hex[:6]}")
    bob = sign_up(browser, server, "Bob Babbage")
    invite_and_open_dm(ada, bob)
    new_channel(ada, "engines", bob)
    watched(bob, server)
    page = bob.page
    expect(item(page, "engines")).to_be_visible()
    assert page.evaluate("Notification.permission") == "granted"
    bob_id = page.evaluate("window.fechatter.state.me.id")

    # Visible tab: nothing is raised, even for a mention.
    send(ada.page, f"visible <@{bob_id}>")
    expect(item(page, "engines").locator(".mention-badge")).to_have_text("@1")

    page.evaluate("window.__setHidden(true)")
    send(ada.page, "no mention here")  # a channel message without a mention: not raised
    send(ada.page, f"hello <@{bob_id}>, the engine runs")
    page.wait_for_function("() => window.__notifications.length >= 1")
    assert page.evaluate(NOTIFICATIONS) == [
        {
            "title": "Ada Lovelace in engines",
            "body": "hello @Bob Babbage, the engine runs",
            "tag": page.evaluate(
                "`fechatter-chat-${[...window.fechatter.state.chats.values()]"
                ".find((c) => c.name === 'engines').id}`"
            ),
        }
    ]

    # A direct message is raised too, and Bob's own messages never are.
    item(ada.page, "Bob Babbage").click()
    send(ada.page, "a direct word")
    page.wait_for_function("() => window.__notifications.length >= 2")
    assert page.evaluate(NOTIFICATIONS)[1]["title"] == "Ada Lovelace"
    assert page.evaluate(NOTIFICATIONS)[1]["body"] == "a direct word"

    # A muted chat raises nothing: Bob mutes it on the server (SPEC §7); his client learns it
    # from the `chat.muted` event on his own stream.
    page.evaluate(
        "(async () => { const s = window.fechatter.state;"
        " const id = [...s.chats.values()].find((c) => c.name === 'engines').id;"
        " await window.fechatter.live.api.put("
        "`/api/chats/${id}/notifications`, {muted: true}); })()"
    )
    page.wait_for_function(
        "() => [...window.fechatter.state.chats.values()].find((c) => c.name === 'engines').muted"
    )
    item(ada.page, "engines").click()
    send(ada.page, f"muted <@{bob_id}>")
    expect(item(page, "engines").locator(".mention-badge")).to_have_text("@3")  # it arrived
    assert len(page.evaluate(NOTIFICATIONS)) == 2
    item(ada.page, "Bob Babbage").click()
    send(ada.page, "direct again")
    page.wait_for_function("() => window.__notifications.length >= 3")
    assert [n["body"] for n in page.evaluate(NOTIFICATIONS)] == [
        "hello @Bob Babbage, the engine runs",
        "a direct word",
        "direct again",
    ]
    # Do not disturb: with his own status busy, not even a direct message raises one.
    page.evaluate("window.fechatter.live.api.put('/api/users/me/status', {status: 'busy'})")
    page.wait_for_function("() => window.fechatter.isDoNotDisturb()")
    send(ada.page, "while busy")
    page.wait_for_function(  # it arrived
        "() => [...window.fechatter.state.chats.values()]"
        ".some((c) => c.last_message?.content === 'while busy')"
    )
    assert len(page.evaluate(NOTIFICATIONS)) == 3

    # Clicking the notification brings the chat up.
    page.evaluate("window.__notifications[0].notification.dispatchEvent(new Event('click'))")
    expect(page.locator("#chat-title")).to_have_text("engines")
    page.evaluate("window.__setHidden(false)")
    expect(page.locator("#messages .bubble", has_text="the engine runs")).to_be_visible()
    assert ada.errors == []
    assert bob.errors == []


def test_permission_is_asked_only_from_settings(browser: Browser, server: ServerProcess) -> None:
    ada = sign_up(browser, server, "Ada Lovelace", workspace=f"Ask {uuid.uuid4().hex[:6]}")
    page = ada.page
    # Never on load: the permission is still undecided after signing up and reloading.
    page.reload()
    page.wait_for_selector("#app:not([hidden])")
    assert page.evaluate("Notification.permission") == "default"
    page.click("#settings")
    expect(page.locator("#notify-status")).to_contain_text("Off")
    page.context.grant_permissions(["notifications"], origin=server.url)
    page.click("#notify-enable")  # the request resolves with the granted permission
    expect(page.locator("#notify-status")).to_contain_text("On: direct messages and mentions")
    expect(page.locator("#notify-enable")).to_be_hidden()
    assert ada.errors == []


def test_new_messages_divider_at_the_first_unread_message(
    browser: Browser, server: ServerProcess
) -> None:
    ada = sign_up(browser, server, "Ada Lovelace", workspace=f"Divider {uuid.uuid4().hex[:6]}")
    bob = sign_up(browser, server, "Bob Babbage")
    invite_and_open_dm(ada, bob)
    # Bob's client learns of the workspace and the chat by itself first (a message sent while
    # it is still loading the new workspace is only counted after a reload).
    expect(item(bob.page, "Ada Lovelace")).to_be_visible()
    send(ada.page, "already read")
    expect(item(bob.page, "Ada Lovelace").locator(".badge")).to_have_text("1")
    with bob.page.expect_request(lambda r: r.url.endswith("/read")) as read:
        item(bob.page, "Ada Lovelace").click()
    assert read.value.response() is not None
    # Opened with one unread message: the divider stands before it.
    expect(bob.page.locator("#messages .divider + .msg .bubble")).to_have_text("already read")

    bob.page.goto("about:blank")  # Bob is away; Ada writes on
    for i in range(3):
        send(ada.page, f"new {i}")
    expect(
        ada.page.locator("#messages .msg:not(.pending) .bubble", has_text="new 2")
    ).to_be_visible()
    with bob.page.expect_response(lambda r: r.url.endswith("/read")):
        bob.page.goto(server.url + "/")  # the last chat opens again (wide screen) and is read
    divider = bob.page.locator("#messages .divider")
    expect(divider).to_have_text("New messages")
    expect(bob.page.locator("#messages .divider + .msg .bubble")).to_have_text("new 0")
    after = bob.page.eval_on_selector_all(
        "#messages .divider ~ .msg .bubble", "els => els.map((e) => e.textContent)"
    )
    assert after == ["new 0", "new 1", "new 2"]
    # The first unread message shows its sender again (not grouped under "already read").
    expect(bob.page.locator("#messages .divider + .msg")).not_to_have_class("msg cont")
    shot(bob.page, "web-new-divider")

    # While Bob's tab is hidden in the open chat, the divider moves to where he left off.
    bob.page.context.add_init_script(WATCH_PAGE)
    bob.page.reload()
    bob.page.wait_for_function("() => document.body.dataset.live === 'online'")
    expect(bob.page.locator("#messages .bubble", has_text="new 2")).to_be_visible()
    expect(bob.page.locator("#messages .divider")).to_have_count(0)  # all read by now
    bob.page.evaluate("window.__setHidden(true)")
    send(ada.page, "while hidden")
    expect(item(bob.page, "Ada Lovelace").locator(".badge")).to_have_text("1")
    expect(bob.page.locator("#messages .divider + .msg .bubble")).to_have_text("while hidden")
    bob.page.evaluate("window.__setHidden(false)")
    expect(item(bob.page, "Ada Lovelace").locator(".badge")).to_have_count(0)
    assert ada.errors == []
    assert bob.errors == []


def test_a_message_in_another_chat_is_announced(browser: Browser, server: ServerProcess) -> None:
    ada = sign_up(browser, server, "Ada Lovelace", workspace=f"Announce {uuid.uuid4().hex[:6]}")
    bob = sign_up(browser, server, "Bob Babbage")
    invite_and_open_dm(ada, bob)
    new_channel(ada, "gears", bob)
    item(bob.page, "gears").click()
    expect(bob.page.locator("#chat-title")).to_have_text("gears")
    announcer = bob.page.locator("#announcer")
    expect(announcer).to_have_attribute("aria-live", "polite")
    send(ada.page, "in gears")  # the open chat: the log itself is the live region
    expect(bob.page.locator("#messages .bubble", has_text="in gears")).to_be_visible()
    expect(announcer).to_have_text("")
    item(ada.page, "Bob Babbage").click()
    send(ada.page, "psst")
    expect(announcer).to_have_text("New message from Ada Lovelace in Ada Lovelace")
    # More within the quiet gap are summed up once it ends, not read out one by one.
    send(ada.page, "psst again")
    send(ada.page, "and again")
    expect(item(bob.page, "Ada Lovelace").locator(".badge")).to_have_text("3")
    expect(announcer).to_have_text("New message from Ada Lovelace in Ada Lovelace")
    expect(announcer).to_have_text("2 new messages in 1 chat", timeout=20_000)
    assert bob.errors == []


def test_members_panel_on_a_phone_closes_by_escape_tap_and_back(
    browser: Browser, server: ServerProcess
) -> None:
    ada = sign_up(
        browser,
        server,
        "Ada Lovelace",
        workspace=f"Phone {uuid.uuid4().hex[:6]}",
        viewport=(390, 844),
    )
    bob = sign_up(browser, server, "Bob Babbage")
    invite_and_open_dm(ada, bob)
    new_channel(ada, "pocket", bob)
    page = ada.page
    toggle = page.locator("#members-toggle")
    panel = page.locator("#members-panel")

    def open_panel() -> None:
        toggle.click()
        expect(panel).to_be_visible()
        expect(toggle).to_have_attribute("aria-expanded", "true")
        # Its own toggle and the Back button stay uncovered: the topmost element at their
        # centres is the button itself.
        for sel in ("#members-toggle", "#back"):
            assert page.evaluate(
                """(sel) => {
                  const b = document.querySelector(sel).getBoundingClientRect();
                  const hit = document.elementFromPoint(b.x + b.width / 2, b.y + b.height / 2);
                  return document.querySelector(sel).contains(hit);
                }""",
                sel,
            ), f"{sel} is covered by the open members panel"

    open_panel()
    expect(page.locator("#members-close")).to_be_focused()
    remove = panel.get_by_role("button", name="Remove Bob Babbage from the chat")
    expect(remove).to_be_visible()
    shot(page, "web-phone-members")
    assert_accessible(page, "members panel at phone width")
    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()
    expect(toggle).to_be_focused()
    expect(toggle).to_have_attribute("aria-expanded", "false")

    open_panel()
    page.mouse.click(20, 400)  # a tap on the conversation beside the panel
    expect(panel).to_be_hidden()

    open_panel()
    page.go_back()  # the browser's (or the phone's) Back
    expect(panel).to_be_hidden()
    expect(page.locator("#chat-title")).to_have_text("pocket")  # still in the chat

    open_panel()
    page.click("#back")  # the header's ← closes the overlay first
    expect(panel).to_be_hidden()
    expect(page.locator("#chat-title")).to_have_text("pocket")

    open_panel()
    toggle.click()  # and its own toggle, which it no longer covers
    expect(panel).to_be_hidden()
    send(page, "the composer works with the panel closed")
    expect(page.locator("#messages .msg.mine:not(.pending) .bubble")).to_have_text(
        "the composer works with the panel closed"
    )
    assert_accessible(page, "chat at phone width")
    page.click("#back")
    expect(page.locator("#sidebar")).to_be_visible()
    assert_accessible(page, "chat list at phone width")
    assert ada.errors == []


def test_settings_profile_and_password_with_inline_errors(
    browser: Browser, server: ServerProcess
) -> None:
    ada = sign_up(browser, server, "Ada Lovelace", workspace=f"Profile {uuid.uuid4().hex[:6]}")
    page = ada.page
    page.click("#settings")
    dialog = page.locator("dialog")
    expect(dialog).to_have_accessible_name("Settings")

    # The transport radios sit on their labels' line, left of the text.
    for value in ("sse", "ws"):
        radio = dialog.locator(f"input[value={value}]").bounding_box()
        label = dialog.locator(f"label:has(input[value={value}])").bounding_box()
        assert radio is not None
        assert label is not None
        centre = radio["y"] + radio["height"] / 2
        assert abs(centre - (label["y"] + label["height"] / 2)) <= 3, (radio, label)
        assert radio["x"] <= label["x"] + 4

    page.fill("#profile-fullname", "   ")
    page.click("#profile-form button[type=submit]")
    expect(page.locator("#profile-fullname-error")).to_contain_text("Name")
    expect(page.locator("#profile-fullname")).to_have_attribute("aria-invalid", "true")
    page.fill("#profile-fullname", "Augusta Ada King")
    page.click("#profile-form button[type=submit]")
    expect(dialog.locator("#profile-form .saved")).to_have_text("Name saved.")
    expect(page.locator("#profile-fullname-error")).to_have_text("")
    expect(page.locator("#me-name")).to_have_text("Augusta Ada King")

    page.fill("#password-current", "not my password")
    page.fill("#password-new", "a better horse")
    page.click("#password-form button[type=submit]")
    expect(page.locator("#password-current-error")).to_have_text("Current password is incorrect")
    expect(page.locator("#password-current")).to_be_focused()
    page.fill("#password-current", "correct horse")
    page.fill("#password-new", "a better horse")
    page.click("#password-form button[type=submit]")
    expect(dialog.locator("#password-form .saved")).to_contain_text("Password changed")
    expect(page.locator("#banner")).to_be_hidden(timeout=20_000)  # live again, fresh token
    expect(page.locator("#password-current-error")).to_have_text("")
    assert_accessible(page, "settings dialog")
    shot(page, "web-settings")
    page.click("dialog >> text=Close")

    # The session goes on with a fresh token, and the new password signs in.
    page.click("#new-chat")
    page.select_option("dialog select[name=type]", "PublicChannel")
    page.fill("dialog input[name=name]", "after-password")
    page.click("dialog button[type=submit]")
    expect(page.locator("#chat-title")).to_have_text("# after-password")
    expect(page.locator("dialog")).to_be_hidden()  # closes once the chat is open
    send(page, "still here")
    expect(page.locator("#messages .msg.mine:not(.pending) .bubble")).to_have_text("still here")
    page.click("#sign-out")
    page.click("#tab-signin")
    page.fill("#signin-form input[name=email]", ada.email)
    page.fill("#signin-form input[name=password]", "a better horse")
    page.click("#signin-form button[type=submit]")
    expect(page.locator("#me-name")).to_have_text("Augusta Ada King")
    # Focus moves into the app after signing in (the composer of the reopened chat).
    expect(page.locator("#input")).to_be_focused()
    assert ada.errors == []


def border_contrast(page: Page, selector: str) -> float:
    """The contrast ratio of ``selector``'s border against its parent's background."""
    ratio: float = page.evaluate(
        """(sel) => {
          const rgb = (s) => s.match(/[\\d.]+/g).slice(0, 3).map(Number);
          const lum = ([r, g, b]) => [r, g, b].map((c) => {
            c /= 255;
            return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
          }).reduce((acc, c, i) => acc + c * [0.2126, 0.7152, 0.0722][i], 0);
          const node = document.querySelector(sel);
          let back = node.parentElement;
          while (back && getComputedStyle(back).backgroundColor === "rgba(0, 0, 0, 0)") {
            back = back.parentElement;
          }
          const a = lum(rgb(getComputedStyle(node).borderTopColor));
          const b = lum(rgb(getComputedStyle(back ?? document.body).backgroundColor));
          return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
        }""",
        selector,
    )
    return ratio


def test_axe_on_every_screen_in_both_themes(browser: Browser, server: ServerProcess) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto(server.url + "/")
    expect(page.locator("#auth")).to_be_visible()
    assert page.locator("main:visible").count() == 1
    assert page.locator("h1:visible").count() == 1
    assert border_contrast(page, "#signin-form input[name=email]") >= 3
    assert_accessible(page, "sign-in")
    # The check can fail: a faint line of text on the card is a serious violation.
    page.evaluate(
        """() => {
          const p = document.createElement("p");
          p.id = "faint";
          p.textContent = "faint text";
          p.style.color = "#c8c8c8";
          document.querySelector(".auth-card").append(p);
        }"""
    )
    with pytest.raises(AssertionError, match="color-contrast"):
        assert_accessible(page, "sign-in with a faint line")
    page.evaluate("() => document.getElementById('faint').remove()")
    page.click("#tab-signup")
    assert_accessible(page, "sign-up")
    context.close()

    ada = sign_up(browser, server, "Ada Lovelace", workspace=f"Axe {uuid.uuid4().hex[:6]}")
    bob = sign_up(browser, server, "Bob Babbage")
    invite_and_open_dm(ada, bob)
    page = ada.page
    # Focus left the sign-up form for the app's heading (no chat was open yet).
    expect(bob.page.locator("#chat-title")).to_be_focused()
    new_channel(ada, "lab", bob)
    bob_id = page.evaluate(
        "[...window.fechatter.state.users.values()].find((u) => u.fullname === 'Bob Babbage').id"
    )
    item(bob.page, "lab").click()
    send(bob.page, f"*hi* <@{page.evaluate('window.fechatter.state.me.id')}> `code`")
    send(page, f"hello <@{bob_id}> https://example.com")
    expect(page.locator("#messages .msg:not(.mine) .bubble")).to_be_visible()
    expect(page.locator("#messages .msg.mine:not(.pending)")).to_have_count(1)

    for theme in ("light", "dark"):
        page.emulate_media(color_scheme=theme)  # "System" (the default) follows it
        expect(page.locator("html")).not_to_have_attribute("data-theme", theme)
        bg = page.evaluate(
            "() => getComputedStyle(document.querySelector('#conversation')).backgroundColor"
        )
        assert (bg == "rgb(255, 255, 255)") == (theme == "light"), bg
        assert border_contrast(page, "#input") >= 3
        # The skip link comes first in the tab order and moves focus to the composer.
        page.locator("#chat-title").focus()
        page.keyboard.press("Shift+Tab")
        page.locator("#skip-link").focus()
        expect(page.locator("#skip-link")).to_be_visible()
        page.keyboard.press("Enter")
        expect(page.locator("#input")).to_be_focused()
        assert_accessible(page, f"chat ({theme})")
        shot(page, f"web-chat-{theme}")

        page.click("#members-toggle")
        expect(page.locator("#members-panel")).to_be_visible()
        assert_accessible(page, f"members panel ({theme})")
        page.click("#members-close")

        page.locator("#messages .msg.mine").hover()
        page.locator("#messages .msg.mine button", has_text="Thread").click()
        expect(page.locator("#thread-panel")).to_be_visible()
        assert_accessible(page, f"thread panel ({theme})")
        page.click("#thread-close")

        dialogs: list[tuple[str, str, str | re.Pattern[str]]] = [
            ("new chat", "#new-chat", "New chat"),
            ("channels", "#browse-channels", "Public channels"),
            ("workspace menu", "#workspace-menu", re.compile(r"^Axe [0-9a-f]{6}$")),
            ("settings", "#settings", "Settings"),
            ("search", "#search-open", "Search"),
            ("status picker", "#my-status", "Set your status"),
        ]
        for name, opener, title in dialogs:
            page.click(opener)
            dialog = page.locator("dialog")
            expect(dialog).to_be_visible()
            expect(dialog).to_have_accessible_name(title)
            assert_accessible(page, f"{name} dialog ({theme})")
            page.keyboard.press("Escape")
            expect(dialog).to_be_hidden()
        page.click("#workspace-menu")
        page.click("dialog >> text=Invite people")
        expect(page.locator("dialog")).to_have_accessible_name("Invite people")
        assert_accessible(page, f"invite dialog ({theme})")
        page.keyboard.press("Escape")
        page.locator("#messages .msg.mine").hover()
        page.locator("#messages .msg.mine button", has_text="React").click()
        expect(page.locator("dialog")).to_have_accessible_name("Add a reaction")
        assert_accessible(page, f"emoji picker ({theme})")
        page.keyboard.press("Escape")
        page.locator("#messages .msg.mine").hover()
        page.locator("#messages .msg.mine button", has_text="Delete").click()
        expect(page.locator("dialog")).to_have_accessible_name("Delete message?")
        assert_accessible(page, f"delete confirmation ({theme})")
        page.keyboard.press("Escape")
        expect(page.locator("dialog")).to_be_hidden()

    # The stored choice beats the system's: Dark on a light system, Light on a dark one.
    page.emulate_media(color_scheme="light")
    page.click("#settings")
    page.check("dialog input[name=theme][value=dark]")
    page.click("#prefs-form button[type=submit]")
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    page.reload()
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    page.wait_for_selector("#app:not([hidden])")
    assert_accessible(page, "chat (dark chosen on a light system)")
    page.click("#settings")
    page.check("dialog input[name=theme][value=system]")
    page.click("#prefs-form button[type=submit]")
    expect(page.locator("html")).not_to_have_attribute("data-theme", "dark")
    assert page.evaluate("localStorage.getItem('fechatter.theme')") is None
    assert ada.errors == []
    assert bob.errors == []
