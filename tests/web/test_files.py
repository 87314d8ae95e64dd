"""The browser client's files (issue 15): paste an image and it shows inline as a thumbnail
for both people; drop a file on the timeline and it shows as a card with a download link;
cancel an upload; set an avatar. Images load through signed URLs, never a token in a URL."""

from __future__ import annotations

import base64
import io
import uuid

from PIL import Image
from playwright.sync_api import Browser, FilePayload, Page, expect

from tests.web.conftest import Person, ServerProcess, invite_and_open_dm, shot, sign_up

# Builds a File from base64 in the page and hands it to the client as a user would: a paste
# into the composer, or a drop on the timeline (both carry a DataTransfer).
PASTE = """([b64, name, type]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const data = new DataTransfer();
  data.items.add(new File([bytes], name, {type}));
  document.querySelector('#input').dispatchEvent(
    new ClipboardEvent('paste', {clipboardData: data, bubbles: true, cancelable: true}));
}"""
DROP = """([b64, name, type]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const data = new DataTransfer();
  data.items.add(new File([bytes], name, {type}));
  const log = document.querySelector('#messages');
  for (const kind of ['dragover', 'drop']) {
    log.dispatchEvent(new DragEvent(kind, {dataTransfer: data, bubbles: true, cancelable: true}));
  }
}"""


def png_b64(width: int, height: int) -> str:
    out = io.BytesIO()
    Image.new("RGB", (width, height), "orange").save(out, "PNG")
    return base64.b64encode(out.getvalue()).decode()


def pair(browser: Browser, server: ServerProcess) -> tuple[Person, Person]:
    ada = sign_up(browser, server, "Ada Lovelace", workspace=f"Files {uuid.uuid4().hex[:6]}")
    bob = sign_up(browser, server, "Bob Babbage")
    invite_and_open_dm(ada, bob)
    bob.page.locator(".chat-item", has_text="Ada Lovelace").click()
    expect(bob.page.locator("#chat-title")).to_have_text("Ada Lovelace")
    return ada, bob


def image_loaded(page: Page, selector: str) -> None:
    page.wait_for_function(
        "(sel) => { const i = document.querySelector(sel); return i && i.complete &&"
        " i.naturalWidth > 0; }",
        arg=selector,
    )


def test_a_pasted_image_is_shown_inline_for_everyone(
    browser: Browser, server: ServerProcess
) -> None:
    ada, bob = pair(browser, server)
    ada.page.evaluate(PASTE, [png_b64(800, 400), "screenshot.png", "image/png"])
    expect(ada.page.locator("#uploads .upload.done")).to_have_count(1)
    ada.page.fill("#input", "look at this")
    ada.page.press("#input", "Enter")
    for person in (ada, bob):
        thumb = "#messages .msg[data-id] .attachment.image img.thumb"
        expect(person.page.locator(thumb)).to_have_count(1)
        image_loaded(person.page, thumb)
        img = person.page.locator(thumb)
        assert img.evaluate("(i) => [i.naturalWidth, i.naturalHeight]") == [400, 200]
        src = img.get_attribute("src") or ""
        token = person.page.evaluate(
            "() => JSON.parse(localStorage.getItem('fechatter.session')).token"
        )
        assert "sig=" in src
        assert token not in src
        link = person.page.locator("#messages .attachment.image a")
        assert "/thumbnail" not in (link.get_attribute("href") or "")  # opens full size
        assert person.errors == []
    expect(ada.page.locator("#uploads .upload")).to_have_count(0)
    shot(bob.page, "web-files-image")


def test_a_dropped_file_shows_as_a_card_with_a_download_link(
    browser: Browser, server: ServerProcess
) -> None:
    ada, bob = pair(browser, server)
    text = base64.b64encode(b"quarterly numbers\n" * 100).decode()
    ada.page.evaluate(DROP, [text, "report.txt", "text/plain"])
    expect(ada.page.locator("#uploads .upload.done")).to_have_count(1)
    ada.page.press("#input", "Enter")  # files alone: no text needed
    for person in (ada, bob):
        card = person.page.locator("#messages .msg[data-id] .attachment.card")
        expect(card).to_have_count(1)
        expect(card.locator(".file-name")).to_have_text("report.txt")
        expect(card.locator(".file-size")).to_have_text("1.8 KB")
        href = card.locator("a.download").get_attribute("href") or ""
        assert "sig=" in href
        body = person.page.evaluate("(h) => fetch(h).then((r) => r.text())", href)
        assert body == "quarterly numbers\n" * 100
        assert person.errors == []
    shot(bob.page, "web-files-card")


def test_an_upload_can_be_cancelled_and_a_refusal_is_shown(
    browser: Browser, server: ServerProcess
) -> None:
    ada, _bob = pair(browser, server)
    page = ada.page
    page.evaluate(DROP, [base64.b64encode(b"").decode(), "empty.txt", "text/plain"])
    expect(page.locator("#uploads .upload.failed")).to_contain_text("must not be empty")
    page.locator("#uploads .upload.failed button").click()
    expect(page.locator("#uploads .upload")).to_have_count(0)
    # Cancel: hold the upload's request so it is still running when Cancel is pressed.
    page.route("**/api/files", lambda route: None)
    page.evaluate(PASTE, [png_b64(10, 10), "slow.png", "image/png"])
    expect(page.locator("#uploads .upload progress")).to_have_count(1)
    page.locator("#uploads .upload button").click()
    expect(page.locator("#uploads .upload")).to_have_count(0)
    page.unroute("**/api/files")
    assert ada.errors == []


def test_an_avatar_is_shown_beside_messages(browser: Browser, server: ServerProcess) -> None:
    ada, bob = pair(browser, server)
    page = ada.page
    page.click("#settings")
    page.set_input_files(
        "dialog input[name=avatar]",
        files=[
            FilePayload(
                name="me.png", mimeType="image/png", buffer=base64.b64decode(png_b64(64, 64))
            )
        ],
    )
    page.click("dialog button[type=submit]")
    expect(page.locator("dialog")).not_to_be_visible()
    page.fill("#input", "hello with a face")
    page.press("#input", "Enter")
    expect(page.locator("#messages .msg[data-id] .meta img.avatar")).to_have_count(1)
    image_loaded(page, "#messages .msg[data-id] .meta img.avatar")
    # Bob sees it once his client knows Ada's new avatar (a reload refetches the members).
    bob.page.reload()
    bob.page.locator(".chat-item", has_text="Ada Lovelace").click()
    expect(bob.page.locator("#messages .msg[data-id] .meta img.avatar")).to_have_count(1)
    image_loaded(bob.page, "#messages .msg[data-id] .meta img.avatar")
    assert ada.errors == []
    assert bob.errors == []
