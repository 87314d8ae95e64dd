"""Browser tests: a real ``fechatter serve`` process and headless Chromium via Playwright.

The browser is Debian's ``/usr/bin/chromium`` (``.ci/run`` installs it); Playwright never
downloads one. Tests here are synchronous (Playwright's sync API): the server runs in its own
process, so nothing shares an event loop with the browser driver.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Frame, Page, Request, Response, expect, sync_playwright

from tests.serverlog import expected_patterns, problems_in_text

# Every `expect` waits up to 15 s, as the pages' own default timeout does (sign_up): Playwright's
# 5 s default is a ceiling a loaded machine exceeds (two pytest workers: the first search hit
# of tests/web/test_search.py arrived after it). A ceiling, not a sleep: each assertion returns
# as soon as it holds.
expect.set_options(timeout=15_000)

CHROMIUM = os.environ.get("FECHATTER_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    """A ``fechatter serve`` subprocess on fixed ports (so it can be restarted in place)."""

    folder: Path
    port: int
    realtime_port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = (self.folder / "server.log").open("ab")
        env = {
            **os.environ,
            "FECHATTER_ARGON2_MEMORY_COST": "1024",
            "FECHATTER_ARGON2_TIME_COST": "1",
            "FECHATTER_ARGON2_PARALLELISM": "1",
            "FECHATTER_SEND_BURST": "200",
            # Serve this checkout's package (cwd is a temp folder, so without this the
            # subprocess would import whichever checkout the venv has installed).
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(ARTIFACTS.parent), os.environ.get("PYTHONPATH")) if p
            ),
        }
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fechatter",
                "serve",
                "--port",
                str(self.port),
                "--realtime-port",
                str(self.realtime_port),
                "--database-url",
                f"sqlite:///{self.folder / 'web.db'}",
            ],
            stderr=log,
            env=env,
            cwd=self.folder,
        )
        log.close()
        deadline = time.monotonic() + 30
        pattern = re.compile(rf"realtime streams on http://127\.0\.0\.1:{self.realtime_port}")
        # The log line is the server's own "ready" signal; poll the file until it appears.
        while not pattern.search((self.folder / "server.log").read_text()):
            assert self.process.poll() is None, (self.folder / "server.log").read_text()
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)
        self.process = None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("web"), _free_port(), _free_port())
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(autouse=True)
def server_log_clean(server: ServerProcess, request: pytest.FixtureRequest) -> Iterator[None]:
    """The subprocess server's log gains no traceback or ERROR line during the test
    (tests/serverlog.py; ``expect_log_errors`` marks the ones a test provokes)."""
    path = server.folder / "server.log"
    start = path.stat().st_size
    yield
    with path.open("rb") as f:
        f.seek(start)
        text = f.read().decode(errors="replace")
    expected = expected_patterns(request.node.iter_markers("expect_log_errors"))
    unexpected = problems_in_text(text, expected)
    if unexpected:
        pytest.fail("the server log is not clean:\n" + "\n".join(unexpected), pytrace=False)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield b
        b.close()


# The people of the running test, whose journals a failure report shows (pytest_runtest_makereport).
_PEOPLE: list[Person] = []


class Journal:
    """What one page did, for a failed test's report: its API requests and their answers, the
    live events it applied, console lines and page errors, each with milliseconds since the page
    opened. Bounded: the last ``limit`` entries are kept (the failure is at the end), with a
    count of the ones dropped before them."""

    def __init__(self, page: Page, limit: int = 2000) -> None:
        self.started = time.monotonic()
        self.recent: deque[str] = deque(maxlen=limit)
        self.dropped = 0
        page.on("console", lambda m: self.add(f"console.{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.add(f"pageerror: {e}"))
        page.on("request", self._request)
        page.on("response", self._response)
        page.on("requestfailed", self._failed)
        page.on("framenavigated", self._navigated)

    def _request(self, request: Request) -> None:
        if "/api/" in request.url:
            self.add(f"-> {request.method} {_no_token(request.url)}")

    def _response(self, response: Response) -> None:
        if "/api/" in response.url:
            self.add(f"<- {response.status} {response.request.method} {_no_token(response.url)}")

    def _failed(self, request: Request) -> None:
        self.add(f"!! {request.method} {_no_token(request.url)}: {request.failure}")

    def _navigated(self, frame: Frame) -> None:
        if frame.parent_frame is None:
            self.add(f"navigated: {frame.url}")

    def add(self, line: str) -> None:
        if len(self.recent) == self.recent.maxlen:
            self.dropped += 1
        self.recent.append(f"{(time.monotonic() - self.started) * 1000:8.0f} ms  {line}")

    @property
    def lines(self) -> list[str]:
        """The entries kept, after a line counting the dropped ones (if any)."""
        head = [f"({self.dropped} earlier entries dropped)"] if self.dropped else []
        return head + list(self.recent)


def _no_token(url: str) -> str:
    """``url`` without its query's access token (the streams' URLs carry one)."""
    return re.sub(r"access_token=[^&]*", "access_token=…", url)


# Logs every live event the page applies (name, and the chat and message ids) to the console,
# which the journal records: `window.fechatter.live` is the client's Live instance (session.js).
_LOG_EVENTS = """() => {
  const live = window.fechatter.live;
  const apply = live.onEvent;
  live.onEvent = (name, data) => {
    console.debug(`event ${name} chat=${data?.chat_id ?? data?.id ?? ""} id=${data?.id ?? ""}`);
    return apply(name, data);
  };
}"""


class Person:
    """One user in their own browser context."""

    def __init__(self, page: Page, name: str, email: str, journal: Journal | None = None) -> None:
        self.page = page
        self.name = name
        self.email = email
        self.journal = journal or Journal(page)
        self.errors: list[str] = []
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("dialog", lambda d: self.errors.append(f"unexpected dialog: {d.message}"))
        _PEOPLE.append(self)


@pytest.fixture(autouse=True)
def _forget_people() -> Iterator[None]:
    _PEOPLE.clear()
    yield
    _PEOPLE.clear()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed browser test's report carries each person's journal (what their page asked,
    heard and logged), so a flake seen once in CI can be read afterwards."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when == "call" and report.failed:
        for person in _PEOPLE:
            title = f"journal of {person.name}'s page"
            report.sections.append((title, "\n".join(person.journal.lines)))


def sign_up(
    browser: Browser,
    server: ServerProcess,
    name: str,
    workspace: str | None = None,
    viewport: tuple[int, int] = (1280, 800),
) -> Person:
    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    page = context.new_page()
    page.set_default_timeout(15_000)
    journal = Journal(page)
    email = f"{name.lower().replace(' ', '.')}.{uuid.uuid4().hex[:8]}@example.com"
    page.goto(server.url + "/")
    page.click("#tab-signup")
    page.fill("#signup-form input[name=fullname]", name)
    page.fill("#signup-form input[name=email]", email)
    page.fill("#signup-form input[name=password]", "correct horse")
    if workspace:
        page.fill("#signup-form input[name=workspace]", workspace)
    page.click("#signup-form button[type=submit]")
    page.wait_for_selector("#app:not([hidden])")
    page.wait_for_function("() => document.body.dataset.live === 'online'")
    # The workspace, its members and roles are loaded (the workspace menu depends on them).
    page.wait_for_function("() => document.body.dataset.ready === '1'")
    page.evaluate(_LOG_EVENTS)
    return Person(page, name, email, journal)


def shot(page: Page, name: str) -> None:
    """Save a screenshot of ``page`` as ``test-artifacts/<name>.png``."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def add_by_email(owner: Person, other: Person) -> None:
    """``owner`` adds ``other`` to the open workspace by email (the workspace menu)."""
    page = owner.page
    page.click("#workspace-menu")
    page.click("dialog >> text=Add by email")
    page.fill("dialog input[name=email]", other.email)
    page.click("dialog button[type=submit]")
    expect(page.locator("dialog")).not_to_be_visible()


def submit_new_dm(owner: Person, other: Person) -> None:
    """``owner`` submits the New chat dialog for a direct message with ``other`` (and waits
    for nothing: the caller says what must hold next)."""
    page = owner.page
    page.click("#new-chat")
    page.select_option("dialog select[name=type]", "Single")
    page.check(f"dialog label:has-text('{other.name}') input")
    page.click("dialog button[type=submit]")


def invite_and_open_dm(owner: Person, other: Person) -> None:
    """``owner`` invites ``other`` to the workspace and opens a direct message with them."""
    add_by_email(owner, other)
    submit_new_dm(owner, other)
    # The modal dialog makes the rest of the page inert while open: Playwright's fill and
    # press on the composer would then type into nothing, silently (the CI flake of two
    # vanished sends). The client closes it before the chat opens; the test waits for both.
    expect(owner.page.locator("dialog")).not_to_be_visible()
    expect(owner.page.locator("#chat-title")).to_have_text(other.name)


def send(page: Page, text: str) -> None:
    """Type ``text`` into the composer and press Enter."""
    page.fill("#input", text)
    page.press("#input", "Enter")


def bubbles(page: Page, text: str) -> int:
    """How many message bubbles in the open chat contain ``text``."""
    return page.locator("#messages .bubble", has_text=text).count()
