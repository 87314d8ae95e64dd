"""The browser client beyond plain sends (issue 11): an incremental log, formatting, edit,
delete, reactions, threads and mentions — two people live, each in their own browser."""

from __future__ import annotations

import re
import uuid
from typing import Any

from playwright.sync_api import Browser, Page, expect

from tests.web.conftest import Person, ServerProcess, invite_and_open_dm, send, shot, sign_up

# Records every mutation inside the aria-live log, and marks the message nodes present now.
OBSERVE_LOG = """() => {
  const log = document.querySelector('#messages');
  for (const node of log.querySelectorAll('.msg')) node._marked = true;
  window._mutations = [];
  window._observer = new MutationObserver((records) => {
    for (const r of records) {
      window._mutations.push({
        type: r.type,
        on_log: r.target === log,
        added: [...r.addedNodes].map((n) => (n.dataset ? n.dataset.id ?? n.className : '#text')),
        removed: r.removedNodes.length,
      });
    }
  });
  window._observer.observe(
    log, {subtree: true, childList: true, attributes: true, characterData: true});
}"""


def pair(browser: Browser, server: ServerProcess, label: str) -> tuple[Person, Person]:
    """Ada and Bob in a fresh workspace with a direct message open on both sides."""
    ada = sign_up(browser, server, "Ada Lovelace", workspace=f"{label} {uuid.uuid4().hex[:6]}")
    bob = sign_up(browser, server, "Bob Babbage")
    invite_and_open_dm(ada, bob)
    bob.page.locator(".chat-item", has_text="Ada Lovelace").click()
    expect(bob.page.locator("#chat-title")).to_have_text("Ada Lovelace")
    return ada, bob


def msg(page: Page, text: str) -> Any:
    """The message node in the open chat's log whose bubble contains ``text``."""
    return page.locator("#messages .msg[data-id]", has_text=text)


def test_a_new_message_only_adds_one_node_to_the_log(
    browser: Browser, server: ServerProcess
) -> None:
    ada, bob = pair(browser, server, "Incremental")
    for i in range(3):
        send(ada.page, f"earlier {i}")
    expect(msg(bob.page, "earlier 2")).to_be_visible()
    bob.page.evaluate(OBSERVE_LOG)

    send(ada.page, "a fresh one")
    expect(msg(bob.page, "a fresh one")).to_be_visible()
    new_id = msg(bob.page, "a fresh one").get_attribute("data-id")
    mutations = bob.page.evaluate("window._mutations")
    assert mutations == [{"type": "childList", "on_log": True, "added": [new_id], "removed": 0}]
    marked = bob.page.evaluate(
        "[...document.querySelectorAll('#messages .msg')].filter((n) => n._marked).length"
    )
    assert marked == 3  # the earlier nodes are the very same elements
    assert ada.errors == []
    assert bob.errors == []


def test_formatting_renders_safe_elements_only(browser: Browser, server: ServerProcess) -> None:
    ada, bob = pair(browser, server, "Format")
    send(
        bob.page,
        "*bold* _it_ ~gone~ `*not bold*` snake_case_name see https://example.com/a?b=1. "
        "not javascript:alert(1) nor JavaScript://x\n> quoted *line*\n"
        "```\n<b>*x*</b> _y_ https://example.com/in-code\n```\nafter",
    )
    message = msg(ada.page, "after")
    expect(message).to_be_visible()
    bubble = message.locator(".bubble")
    expect(bubble.locator("strong")).to_have_count(2)  # *bold* and the one inside the quote
    expect(bubble.locator("> strong")).to_have_text("bold")
    expect(bubble.locator("em")).to_have_text("it")
    expect(bubble.locator("s")).to_have_text("gone")
    expect(bubble.locator("> code")).to_have_text("*not bold*")
    expect(bubble.locator("blockquote")).to_have_text("quoted line")
    expect(bubble.locator("blockquote strong")).to_have_text("line")
    expect(bubble.locator("pre code")).to_have_text("<b>*x*</b> _y_ https://example.com/in-code")
    assert bubble.locator("code *").count() == 0  # markup inside code stays literal
    assert bubble.locator("b").count() == 0
    expect(bubble).to_contain_text("snake_case_name")  # markers count only at word edges
    link = bubble.locator("a")
    expect(link).to_have_count(1)  # javascript: is never a link
    expect(link).to_have_attribute("href", "https://example.com/a?b=1")
    expect(link).to_have_text("https://example.com/a?b=1")  # the full stop is not part of it
    expect(link).to_have_attribute("rel", "noopener noreferrer")
    expect(link).to_have_attribute("target", "_blank")
    shot(ada.page, "web-formatting")
    # In an own (blue) bubble the code block's text has no inline-code box of its own.
    own_code = msg(bob.page, "after").locator("pre code")
    expect(own_code).to_have_css("background-color", "rgba(0, 0, 0, 0)")
    expect(own_code).to_have_css("padding", "0px")
    expect(msg(bob.page, "after").locator("> .body > .bubble > code")).not_to_have_css(
        "background-color", "rgba(0, 0, 0, 0)"
    )  # inline code keeps its box
    # <@N> is a mention only in the canonical form the server parses: <@0N> stays text.
    ada_id = ada.page.evaluate("window.fechatter.state.me.id")
    send(bob.page, f"ping <@{ada_id}> not <@0{ada_id}> end")
    pinged = msg(ada.page, "end").locator(".bubble")
    expect(pinged.locator(".mention")).to_have_count(1)
    expect(pinged.locator(".mention")).to_have_attribute("data-user-id", str(ada_id))
    expect(pinged).to_have_text(f"ping @Ada Lovelace not <@0{ada_id}> end")
    with ada.page.context.expect_page() as opened:  # clickable: opens in a new tab
        ada.page.context.route("https://example.com/**", lambda route: route.fulfill(body="ok"))
        link.click()
    assert opened.value.url == "https://example.com/a?b=1"
    opened.value.close()
    assert ada.errors == []
    assert bob.errors == []


def hover_action(page: Page, text: str, action: str) -> None:
    """Hover the message containing ``text`` and click its action button named ``action``."""
    node = msg(page, text)
    node.hover()
    node.get_by_role("button", name=action, exact=True).click()


def test_thread_reply_shows_live_in_the_panel_and_as_a_count(
    browser: Browser, server: ServerProcess
) -> None:
    ada, bob = pair(browser, server, "Threads")
    send(ada.page, "root of a thread")
    expect(msg(bob.page, "root of a thread")).to_be_visible()

    hover_action(bob.page, "root of a thread", "Reply in thread")
    panel = bob.page.locator("#thread-panel")
    expect(panel).to_be_visible()
    expect(panel.locator(".msg", has_text="root of a thread")).to_be_visible()
    bob.page.fill("#thread-input", "first reply")
    bob.page.press("#thread-input", "Enter")
    expect(panel.locator(".msg", has_text="first reply")).to_be_visible()

    root = msg(ada.page, "root of a thread")
    expect(root.locator(".thread-link")).to_have_text("1 reply")
    expect(msg(ada.page, "first reply")).to_have_count(0)  # replies stay out of the timeline
    root.locator(".thread-link").click()
    ada_panel = ada.page.locator("#thread-panel")
    expect(ada_panel.locator(".msg", has_text="first reply")).to_be_visible()

    bob.page.fill("#thread-input", "second reply, live")
    bob.page.press("#thread-input", "Enter")
    expect(ada_panel.locator(".msg", has_text="second reply, live")).to_be_visible()
    expect(root.locator(".thread-link")).to_have_text("2 replies")
    expect(msg(bob.page, "root of a thread").locator(".thread-link")).to_have_text("2 replies")
    shot(ada.page, "web-thread")
    assert ada.errors == []
    assert bob.errors == []


def test_mention_suggested_highlighted_and_counted(browser: Browser, server: ServerProcess) -> None:
    ada, bob = pair(browser, server, "Mentions")
    ada_id = ada.page.evaluate("window.fechatter.state.me.id")
    ws_id = ada.page.evaluate("window.fechatter.state.wsId")
    token = ada.page.evaluate("JSON.parse(localStorage.getItem('fechatter.session')).token")
    response = ada.page.request.post(
        f"{server.url}/api/chats",
        headers={"Authorization": f"Bearer {token}"},
        data={"workspace_id": ws_id, "type": "PublicChannel", "name": "elsewhere", "members": []},
    )
    assert response.status == 201
    ada.page.locator(".chat-item", has_text="elsewhere").click()  # Ada looks away
    expect(ada.page.locator("#chat-title")).to_have_text("# elsewhere")

    bob.page.fill("#input", "")
    bob.page.locator("#input").press_sequentially("hey @Ad")
    option = bob.page.get_by_role("option", name="Ada Lovelace")
    expect(option).to_be_visible()
    bob.page.press("#input", "Enter")  # picks the suggestion, does not send
    expect(bob.page.locator("#input")).to_have_value(f"hey <@{ada_id}> ")
    bob.page.locator("#input").press_sequentially("look at this")
    bob.page.press("#input", "Enter")
    expect(msg(bob.page, "look at this").locator(".mention")).to_have_text("@Ada Lovelace")
    expect(msg(bob.page, "look at this").locator(".mention.me")).to_have_count(0)

    dm = ada.page.locator(".chat-item", has_text="Bob Babbage")
    expect(dm.locator(".mention-badge")).to_have_text("@1")
    shot(ada.page, "web-mention-badge")
    dm.click()
    mention = msg(ada.page, "look at this").locator(".mention.me")
    expect(mention).to_have_text("@Ada Lovelace")
    expect(msg(ada.page, "look at this")).to_have_class(re.compile(r"\bmentions-me\b"))
    expect(dm.locator(".mention-badge")).to_have_count(0)  # reading it cleared the count
    shot(ada.page, "web-mention")
    assert ada.errors == []
    assert bob.errors == []


def test_reaction_counts_live_and_toggles(browser: Browser, server: ServerProcess) -> None:
    ada, bob = pair(browser, server, "Reactions")
    send(ada.page, "react to me")
    expect(msg(bob.page, "react to me")).to_be_visible()

    hover_action(bob.page, "react to me", "Add reaction")
    bob.page.get_by_role("button", name=":tada:").click()
    ada_tada = msg(ada.page, "react to me").locator(".reaction[data-emoji='🎉']")
    expect(ada_tada).to_have_text("🎉1")  # Ada sees Bob's reaction live
    expect(ada_tada).not_to_have_class(re.compile(r"\bown\b"))
    bob_tada = msg(bob.page, "react to me").locator(".reaction[data-emoji='🎉']")
    expect(bob_tada).to_have_class(re.compile(r"\bown\b"))  # Bob's own is highlighted
    expect(bob_tada).to_have_attribute("aria-pressed", "true")

    ada_tada.click()  # Ada adds hers by clicking the same reaction
    expect(bob_tada).to_have_text("🎉2")
    expect(ada_tada).to_have_class(re.compile(r"\bown\b"))

    # The picker takes shortcodes: ":+1" then Enter is 👍.
    hover_action(ada.page, "react to me", "Add reaction")
    ada.page.get_by_role("textbox", name="Search emoji by shortcode").fill(":+1")
    ada.page.get_by_role("textbox", name="Search emoji by shortcode").press("Enter")
    expect(msg(bob.page, "react to me").locator(".reaction[data-emoji='👍']")).to_have_text("👍1")
    msg(bob.page, "react to me").hover()
    shot(bob.page, "web-reactions")

    bob_tada.click()  # toggles Bob's off
    expect(ada_tada).to_have_text("🎉1")
    expect(bob_tada).not_to_have_class(re.compile(r"\bown\b"))
    ada_tada.click()
    expect(msg(bob.page, "react to me").locator(".reaction[data-emoji='🎉']")).to_have_count(0)
    assert ada.errors == []
    assert bob.errors == []


def test_edit_with_arrow_up_and_delete_with_confirmation(
    browser: Browser, server: ServerProcess
) -> None:
    ada, bob = pair(browser, server, "Edits")
    send(ada.page, "first draft")
    expect(msg(bob.page, "first draft")).to_be_visible()
    message_id = msg(bob.page, "first draft").get_attribute("data-id")
    node = bob.page.locator(f"#messages .msg[data-id='{message_id}']")
    msg(bob.page, "first draft").hover()
    expect(node.get_by_role("button", name="Edit message")).to_have_count(0)  # not Bob's
    expect(node.get_by_role("button", name="Delete message")).to_have_count(0)

    ada.page.press("#input", "ArrowUp")  # empty composer: edits Ada's last message
    expect(ada.page.locator("#input")).to_have_value("first draft")
    expect(ada.page.locator("#edit-banner")).to_be_visible()
    ada.page.press("#input", "Escape")
    expect(ada.page.locator("#input")).to_have_value("")
    expect(ada.page.locator("#edit-banner")).to_be_hidden()

    ada.page.press("#input", "ArrowUp")
    ada.page.fill("#input", "second *draft*")
    ada.page.press("#input", "Enter")
    expect(node.locator(".bubble")).to_have_text("second draft")  # live, same node
    expect(node.locator(".bubble strong")).to_have_text("draft")
    expect(node.locator(".edited")).to_have_text("(edited)")
    expect(msg(ada.page, "second draft").locator(".edited")).to_be_visible()
    shot(bob.page, "web-edited")

    hover_action(ada.page, "second draft", "Delete message")
    dialog = ada.page.locator("dialog")
    expect(dialog).to_contain_text("Delete message?")
    dialog.get_by_role("button", name="Delete").click()
    expect(node.locator(".bubble")).to_have_text("This message was deleted")
    expect(node).to_have_class(re.compile(r"\bdeleted\b"))
    expect(bob.page.locator("#messages", has_text="second draft")).to_have_count(0)
    expect(ada.page.locator("#messages .msg.deleted .bubble")).to_have_text(
        "This message was deleted"
    )
    shot(bob.page, "web-deleted")
    assert ada.errors == []
    assert bob.errors == []


def test_edited_shows_on_a_grouped_message(browser: Browser, server: ServerProcess) -> None:
    ada, bob = pair(browser, server, "Grouped edit")
    send(ada.page, "one of two")
    send(ada.page, "two of two")
    for page in (ada.page, bob.page):
        expect(msg(page, "two of two")).to_have_class(re.compile(r"\bcont\b"))  # grouped
    ada.page.press("#input", "ArrowUp")  # the second, last message
    expect(ada.page.locator("#input")).to_have_value("two of two")
    ada.page.fill("#input", "two of two, fixed")
    ada.page.press("#input", "Enter")
    for page in (ada.page, bob.page):
        grouped = msg(page, "two of two, fixed")
        expect(grouped).to_have_class(re.compile(r"\bcont\b"))
        expect(grouped.locator(".edited")).to_have_text("(edited)")
        expect(grouped.locator(".edited")).to_be_visible()
        expect(msg(page, "one of two").locator(".edited")).to_have_count(0)
    shot(bob.page, "web-edited-grouped")
    assert ada.errors == []
    assert bob.errors == []


def test_a_thread_whose_root_is_deleted_is_closed_to_replies(
    browser: Browser, server: ServerProcess
) -> None:
    ada, bob = pair(browser, server, "Closed thread")
    send(ada.page, "root to delete")
    expect(msg(bob.page, "root to delete")).to_be_visible()
    hover_action(bob.page, "root to delete", "Reply in thread")
    panel = bob.page.locator("#thread-panel")
    bob.page.fill("#thread-input", "a reply that stays")
    bob.page.press("#thread-input", "Enter")
    expect(panel.locator(".msg", has_text="a reply that stays")).to_be_visible()
    expect(bob.page.locator("#thread-input")).to_be_enabled()
    expect(bob.page.locator("#thread-closed")).to_be_hidden()

    hover_action(ada.page, "root to delete", "Delete message")
    ada.page.locator("dialog").get_by_role("button", name="Delete").click()

    # Bob's open panel turns live: the root is a tombstone and the composer is closed.
    expect(panel.locator(".msg.deleted .bubble")).to_have_text("This message was deleted")
    expect(bob.page.locator("#thread-closed")).to_be_visible()
    expect(bob.page.locator("#thread-closed")).to_have_text(
        "This message was deleted. The thread is closed to new replies."
    )
    expect(bob.page.locator("#thread-input")).to_be_disabled()
    expect(panel.get_by_role("button", name="Reply", exact=True)).to_be_disabled()
    expect(panel.locator(".msg", has_text="a reply that stays")).to_be_visible()
    expect(bob.page.locator("#thread-error")).to_have_text("")
    shot(bob.page, "web-thread-closed")

    # Ada opens the thread from the tombstone's "1 reply": closed from the start.
    msg(ada.page, "This message was deleted").locator(".thread-link").click()
    ada_panel = ada.page.locator("#thread-panel")
    expect(ada_panel.locator(".msg", has_text="a reply that stays")).to_be_visible()
    expect(ada.page.locator("#thread-closed")).to_be_visible()
    expect(ada.page.locator("#thread-input")).to_be_disabled()
    assert ada.errors == []
    assert bob.errors == []


def test_reaction_picker_shortcodes_never_fail_silently(
    browser: Browser, server: ServerProcess
) -> None:
    ada, bob = pair(browser, server, "Shortcodes")
    send(ada.page, "custom react")
    expect(msg(bob.page, "custom react")).to_be_visible()
    search = bob.page.get_by_role("textbox", name="Search emoji by shortcode")
    problem = bob.page.locator("dialog .emoji-error")

    hover_action(bob.page, "custom react", "Add reaction")
    search.fill("party parrot!")  # not a shortcode: said inline, nothing sent
    search.press("Enter")
    expect(problem).to_contain_text("is not an emoji or a :shortcode:")
    expect(bob.page.locator("dialog")).to_be_visible()
    search.fill("👍👍")  # passed to the server, whose 422 shows inline
    expect(problem).to_have_text("")  # typing clears the old message
    search.press("Enter")
    expect(problem).to_have_text("emoji: must be one emoji or a :shortcode:")
    expect(bob.page.locator("dialog")).to_be_visible()
    shot(bob.page, "web-picker-problem")

    search.fill(":PartyParrot:")  # lower-cased, as the server wants
    search.press("Enter")
    expect(bob.page.locator("dialog")).to_be_hidden()
    custom = ".reaction[data-emoji=':partyparrot:']"
    expect(msg(ada.page, "custom react").locator(custom)).to_have_text(":partyparrot:1")
    expect(msg(bob.page, "custom react").locator(custom)).to_have_class(re.compile(r"\bown\b"))
    assert ada.errors == []
    assert bob.errors == []


def test_emoji_grid_is_one_tab_stop_moved_with_arrow_keys(
    browser: Browser, server: ServerProcess
) -> None:
    ada, bob = pair(browser, server, "Picker keys")
    send(ada.page, "keyboard react")
    expect(msg(bob.page, "keyboard react")).to_be_visible()
    hover_action(bob.page, "keyboard react", "Add reaction")
    page = bob.page
    grid = page.locator("dialog .emoji-grid")
    expect(page.get_by_role("textbox", name="Search emoji by shortcode")).to_be_focused()
    expect(grid.locator("[tabindex='0']")).to_have_count(1)  # one tab stop for the grid
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name=":+1:")).to_be_focused()
    page.keyboard.press("ArrowRight")
    expect(page.get_by_role("button", name=":-1:")).to_be_focused()
    page.keyboard.press("ArrowDown")  # 8 columns: from the 2nd to the 10th
    expect(page.get_by_role("button", name=":white_check_mark:")).to_be_focused()
    page.keyboard.press("ArrowLeft")
    expect(page.get_by_role("button", name=":fire:")).to_be_focused()
    expect(grid.locator("[tabindex='0']")).to_have_count(1)
    expect(grid.locator("[tabindex='0']")).to_have_text("🔥")
    page.keyboard.press("Shift+Tab")  # one stop back to the search box, not emoji by emoji
    expect(page.get_by_role("textbox", name="Search emoji by shortcode")).to_be_focused()
    page.keyboard.press("Tab")  # and back to where the roving focus was
    expect(page.get_by_role("button", name=":fire:")).to_be_focused()
    page.keyboard.press("Enter")
    fire = msg(ada.page, "keyboard react").locator(".reaction[data-emoji='🔥']")
    expect(fire).to_have_text("🔥1")
    assert ada.errors == []
    assert bob.errors == []


def test_saving_an_empty_edit_offers_to_delete(browser: Browser, server: ServerProcess) -> None:
    ada, bob = pair(browser, server, "Empty edit")
    send(ada.page, "soon emptied")
    expect(msg(bob.page, "soon emptied")).to_be_visible()
    page = ada.page
    dialog = page.locator("dialog")
    page.press("#input", "ArrowUp")
    expect(page.locator("#input")).to_have_value("soon emptied")
    page.fill("#input", "")
    page.press("#input", "Enter")
    expect(dialog).to_contain_text("Delete message?")
    page.keyboard.press("Escape")  # Esc cancels: nothing deleted, still editing
    expect(dialog).to_be_hidden()
    expect(page.locator("#edit-banner")).to_be_visible()
    expect(msg(bob.page, "soon emptied").locator(".bubble")).to_have_text("soon emptied")

    page.click("#send")  # the Save button, still empty: asked again
    expect(dialog).to_contain_text("Delete message?")
    dialog.get_by_role("button", name="Delete").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#edit-banner")).to_be_hidden()  # the edit ended with the message
    expect(page.locator("#input")).to_have_value("")
    expect(page.locator("#messages .msg.deleted .bubble")).to_have_text("This message was deleted")
    expect(bob.page.locator("#messages .msg.deleted .bubble")).to_have_text(
        "This message was deleted"
    )
    assert ada.errors == []
    assert bob.errors == []


def test_a_mention_in_a_thread_reply_marks_the_root(
    browser: Browser, server: ServerProcess
) -> None:
    ada, bob = pair(browser, server, "Thread mention")
    ada_id = ada.page.evaluate("window.fechatter.state.me.id")
    send(ada.page, "root with a mention inside")
    expect(msg(bob.page, "root with a mention inside")).to_be_visible()
    hover_action(bob.page, "root with a mention inside", "Reply in thread")
    bob.page.fill("#thread-input", f"<@{ada_id}> have a look")
    bob.page.press("#thread-input", "Enter")
    expect(bob.page.locator("#thread-panel .msg", has_text="have a look")).to_be_visible()

    link = msg(ada.page, "root with a mention inside").locator(".thread-link")
    expect(link).to_have_text("@ 1 reply")
    expect(link).to_have_class(re.compile(r"\bmentions-me\b"))
    expect(link).to_have_attribute("aria-label", "1 reply, one mentions you, open thread")
    bob_link = msg(bob.page, "root with a mention inside").locator(".thread-link")
    expect(bob_link).to_have_text("1 reply")  # the sender is not mentioned
    shot(ada.page, "web-thread-mention")

    link.click()  # opening the thread clears the mark
    expect(ada.page.locator("#thread-panel .msg .mention.me")).to_have_text("@Ada Lovelace")
    expect(link).to_have_text("1 reply")
    expect(link).not_to_have_class(re.compile(r"\bmentions-me\b"))
    bob.page.fill("#thread-input", "no mention this time")
    bob.page.press("#thread-input", "Enter")
    expect(link).to_have_text("2 replies")
    assert ada.errors == []
    assert bob.errors == []
