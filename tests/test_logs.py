"""Structured logs (fechatter/logs.py): both formats, the bound context, and no secrets.

The end-to-end test drives a real server (hypercorn on port 0, the realtime listener) with
distinctive passwords, tokens and message texts, captures every server record at DEBUG in
both formats, and looks for them in the output.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from fechatter import access_log, logs
from fechatter.actors.directory import Directory
from fechatter.actors.user import UserHub
from fechatter.app import ServerInfo
from fechatter.cli import _parser
from fechatter.config import Settings
from fechatter.errors import Unavailable
from fechatter.http.asgi import request_id_of
from fechatter.storage.sqlite import open_sqlite_storage
from tests.actors.test_directory import INJECTED_CRASH, FlakyStorage, _chat, _send
from tests.conftest import Api, User, api_client, make_chat, make_workspace, running_server
from tests.realtime.clients import RawWs
from tests.serverlog import LogWatch

# The test's own HTTP client logs its requests; it is not the server.
CLIENT_LOGGERS = ("httpx", "httpcore")


class _ServerSide(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith(CLIENT_LOGGERS)


@contextmanager
def captured(*formats: logs.LogFormat) -> Iterator[dict[logs.LogFormat, io.StringIO]]:
    """Every record at DEBUG and above, rendered in each of ``formats`` into a buffer."""
    root = logging.getLogger()
    buffers = {fmt: io.StringIO() for fmt in formats}
    handlers = []
    for fmt, buffer in buffers.items():
        handler = logging.StreamHandler(buffer)
        handler.setFormatter(logs.formatter(fmt))
        handler.addFilter(_ServerSide())
        handlers.append(handler)
        root.addHandler(handler)
    level = root.level
    root.setLevel(logging.DEBUG)
    try:
        yield buffers
    finally:
        root.setLevel(level)
        for handler in handlers:
            root.removeHandler(handler)


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


class LinesWaiter(logging.Handler):
    """Sets ``done`` once an access line was logged for each of ``wanted``: a path, or a
    ``(path, status)`` pair. A line is written when its request ends, which may be just after
    the client has its answer (a stream's, when the connection's task ends after the client
    closed). Add it to the ``fechatter.access`` logger."""

    def __init__(self, *wanted: str | tuple[str, int]) -> None:
        super().__init__()
        self.missing: set[str | tuple[str, int]] = set(wanted)
        self.done = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == access_log.LOGGER:
            path = getattr(record, "path", "")
            self.missing.discard(path)
            self.missing.discard((path, getattr(record, "status", 0)))
            if not self.missing:
                self.done.set()


@contextmanager
def waiting_for_access_lines(*wanted: str | tuple[str, int]) -> Iterator[LinesWaiter]:
    """A ``LinesWaiter`` on the access logger for the block."""
    waiter = LinesWaiter(*wanted)
    logger = logging.getLogger(access_log.LOGGER)
    logger.addHandler(waiter)
    try:
        yield waiter
    finally:
        logger.removeHandler(waiter)


def test_both_formats_render_the_bound_context() -> None:
    log = logging.getLogger("fechatter.test.logs")
    with captured("json", "text") as out, logs.bound(request_id="r-1", user_id=7):
        log.info("hello %s", "world", extra={"chat_id": 3})
    (line,) = json_lines(out["json"].getvalue())
    assert line["event"] == "hello world"
    assert line["level"] == "info"
    assert line["logger"] == "fechatter.test.logs"
    assert (line["request_id"], line["user_id"], line["chat_id"]) == ("r-1", 7, 3)
    assert line["timestamp"].endswith("Z")
    text = out["text"].getvalue()
    assert " INFO fechatter.test.logs hello world " in text
    assert "request_id=r-1" in text
    assert "user_id=7" in text
    assert logs.current() == {}  # the block restored the context


def test_deferred_values_are_read_when_logged_and_dropped_while_none() -> None:
    log = logging.getLogger("fechatter.test.logs")
    holder: dict[str, int | None] = {"user": None}
    with captured("json") as out, logs.bound(user_id=logs.Deferred(lambda: holder["user"])):
        log.info("before")
        holder["user"] = 42
        log.info("after")
    before, after = json_lines(out["json"].getvalue())
    assert "user_id" not in before
    assert after["user_id"] == 42


def test_a_traceback_is_one_json_line_and_follows_a_text_line(server_log: LogWatch) -> None:
    log = logging.getLogger("fechatter.test.logs")
    with captured("json", "text") as out:
        try:
            raise ValueError("boom")
        except ValueError:
            log.warning("handled", exc_info=True)
    (line,) = json_lines(out["json"].getvalue())
    assert "ValueError: boom" in line["exception"]
    text = out["text"].getvalue()
    assert text.splitlines()[1].startswith("Traceback")
    assert "ValueError: boom" in text
    assert len(server_log.take()) == 1  # on purpose: this test's teardown sees a clean log


JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlLXNlY3JldA"


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_the_redaction_net_catches_what_a_careless_line_would_leak(fmt: logs.LogFormat) -> None:
    log = logging.getLogger("fechatter.test.logs")
    with captured(fmt) as out:
        log.warning("header was Bearer %s", "opaque-bearer-credential")
        log.warning("url /ws?access_token=%s&x=1", "query-token-value")
        log.warning("jwt %s in text", JWT)
        log.warning("body %s", json.dumps({"password": "pw-in-json", "email": "e@x"}))
        log.warning("pydantic said [type=too_long, input_value='validation-echo', x=str]")
        log.warning(
            "fields",
            extra={"password": "pw-extra", "refresh_token": "rt-extra", "content": "msg-extra"},
        )
    text = out[fmt].getvalue()
    for secret in (
        "opaque-bearer-credential",
        "query-token-value",
        JWT,
        "pw-in-json",
        "validation-echo",
        "pw-extra",
        "rt-extra",
        "msg-extra",
    ):
        assert secret not in text, (secret, text)
    assert text.count(logs.REDACTED) >= 8
    assert "e@x" in text  # only secrets go


def test_auto_is_text_on_a_terminal_and_json_otherwise() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert logs.resolve_format("auto", io.StringIO()) == "json"
    assert logs.resolve_format("auto", Terminal()) == "text"
    assert logs.resolve_format("text", io.StringIO()) == "text"
    with pytest.raises(ValueError, match="log format"):
        logs.resolve_format("xml", io.StringIO())


def test_configure_owns_the_root_handler_and_stamps_the_node_id() -> None:
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level  # the autouse LogWatch among them
    buffer = io.StringIO()
    try:
        assert logs.configure("auto", stream=buffer, node_id="node-a") == "json"
        logging.getLogger("hypercorn.error").info("Running on %s", "http://x")
        assert root.handlers[0].stream is buffer  # type: ignore[attr-defined]
        assert len(root.handlers) == 1
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved:
            root.addHandler(handler)
        root.setLevel(level)
    (line,) = json_lines(buffer.getvalue())
    assert (line["logger"], line["node_id"]) == ("hypercorn.error", "node-a")


def test_the_cli_takes_a_log_format() -> None:
    args = _parser().parse_args(["serve", "--log-format", "json"])
    assert args.log_format == "json"
    with pytest.raises(SystemExit):
        _parser().parse_args(["serve", "--log-format", "xml"])


def test_a_client_request_id_is_kept_only_if_it_is_a_short_safe_token() -> None:
    assert request_id_of([(b"X-Request-Id", b"abc-123.Z_:9")]) == "abc-123.Z_:9"
    for bad in (b"", b"a" * 65, b"has space", b'quote"', b"new\nline", "é".encode()):
        rid = request_id_of([(b"x-request-id", bad)])
        assert rid != bad.decode(errors="replace")
        assert len(rid) == 16
    assert request_id_of([]) != request_id_of([])


# -- against a real server ---------------------------------------------------------------------
PASSWORD = "Pw-zebra-quartz-9371"
NEW_MESSAGE = "msg-text-marmalade-4410"
WS_MESSAGE = "ws-text-tangerine-5522"
BAD_PASSWORD = "Wrong-pw-obsidian-7788"


async def test_no_token_password_or_message_text_in_the_server_log(
    nursery: trio.Nursery, settings_factory: Callable[..., Settings]
) -> None:
    # The access log on: its lines are the per-request ones (the old DEBUG line is gone).
    settings = settings_factory(access_log=True, log_level="DEBUG")
    ws_line = f"/api/notifications/ws?access_token={logs.REDACTED}"
    with (
        trio.fail_after(30),
        captured("json", "text") as out,
        waiting_for_access_lines(("/api/auth/signin", 401), ws_line) as lines_logged,
    ):
        async with running_server(nursery, settings) as server, api_client(server) as api:
            client = api.client
            secrets: list[str] = [PASSWORD, NEW_MESSAGE, WS_MESSAGE, BAD_PASSWORD]
            users = []
            for n in range(2):
                email = f"secret-{n}@example.com"
                body = {"fullname": f"S{n}", "email": email, "password": PASSWORD}
                r = await client.post("/api/auth/signup", json=body)
                assert r.status_code == 201, r.text
                data = r.json()
                users.append(User(Api(client, data["token"]), data["user"]["id"], email, data))
                secrets += [data["token"], data["refresh_token"]]
            a, b = users
            r = await client.post("/api/auth/signin", json={"email": a.email, "password": PASSWORD})
            assert r.status_code == 200
            secrets += [r.json()["token"], r.json()["refresh_token"]]
            r = await client.post(
                "/api/auth/signin", json={"email": a.email, "password": BAD_PASSWORD}
            )
            assert r.status_code == 401
            r = await client.post(
                "/api/auth/refresh", json={"refresh_token": a.auth["refresh_token"]}
            )
            assert r.status_code == 200
            secrets += [r.json()["token"], r.json()["refresh_token"]]
            # A rejected body echoes nothing either (pydantic's input_value).
            r = await client.post(
                "/api/auth/signup",
                json={"fullname": "x", "email": "not-an-email", "password": BAD_PASSWORD * 40},
            )
            assert r.status_code == 422
            ws_id = await make_workspace(a, b)
            chat = await make_chat(a, ws_id, "Single", b)
            send_path = f"/api/chats/{chat}/messages"
            lines_logged.missing.add(send_path)
            r = await a.api.post(
                f"/api/chats/{chat}/messages",
                json={"content": NEW_MESSAGE},
                headers={"X-Request-Id": "client-chosen-1"},
            )
            assert r.status_code == 201
            assert r.headers["X-Request-Id"] == "client-chosen-1"
            ws = await RawWs.connect(server.realtime_url, b.api.token)
            assert (await ws.next_message())["event"] == "ready"
            await ws.send_text(json.dumps({"op": "send", "chat_id": chat, "content": WS_MESSAGE}))
            while (await ws.next_message())["event"] != "ack":
                pass
            await ws.aclose()
            await lines_logged.done.wait()
    for fmt, buffer in out.items():
        text = buffer.getvalue()
        for secret in secrets:
            assert secret not in text, f"{secret!r} in the {fmt} log"
    # The access lines carry the request's id (the client's, here) and its caller.
    lines = [x for x in json_lines(out["json"].getvalue()) if x["logger"] == access_log.LOGGER]
    (send,) = [x for x in lines if x["path"] == send_path]
    assert send["request_id"] == "client-chosen-1"
    assert send["user_id"] == a.id
    (bad_signin,) = [x for x in lines if (x["path"], x["status"]) == ("/api/auth/signin", 401)]
    assert "user_id" not in bad_signin
    assert len(bad_signin["request_id"]) == 16
    assert "request_id=client-chosen-1" in out["text"].getvalue()


async def test_every_response_has_a_request_id(api: Api) -> None:
    with trio.fail_after(10):
        ok = await api.get("/health")
        missing = await api.get("/no/such/route")
        unsafe = await api.get("/health", headers={"X-Request-Id": "no spaces allowed"})
    ids = {r.headers["X-Request-Id"] for r in (ok, missing, unsafe)}
    assert len(ids) == 3
    assert "no spaces allowed" not in ids


@INJECTED_CRASH
async def test_a_chat_actor_logs_with_its_chat_id_not_its_first_callers_context(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    async with open_sqlite_storage(str(tmp_path / "logs.db")) as storage:
        chat_id, (a, _, _) = await _chat(storage)
        directory = Directory(FlakyStorage(storage, {1}, after_commit=False), UserHub(), nursery)
        with trio.fail_after(10), captured("json") as out:
            with logs.bound(request_id="woke-it"), pytest.raises(Unavailable):
                await directory.call(chat_id, _send(a, "first"))
            await directory.call(chat_id, _send(a, "second"))
    (crash,) = [x for x in json_lines(out["json"].getvalue()) if "crashed" in x["event"]]
    assert crash["chat_id"] == chat_id
    assert "request_id" not in crash


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


async def test_metrics_count_websocket_sends_and_show_the_realtime_listener(
    server: ServerInfo, api: Api
) -> None:
    a, b = await api.signup(), await api.signup()
    ws_id = await make_workspace(a, b)
    chat = await make_chat(a, ws_id, "Single", b)
    with trio.fail_after(15):
        before = (await api.get("/metrics")).text
        r = await a.api.post(f"/api/chats/{chat}/messages", json={"content": "http"})
        assert r.status_code == 201
        ws = await RawWs.connect(server.realtime_url, b.api.token)
        assert (await ws.next_message())["event"] == "ready"
        op = {"op": "send", "chat_id": chat, "content": "ws", "client_id": "m-1"}
        for _ in range(2):  # the repeat is idempotent: one message, counted once
            await ws.send_text(json.dumps(op))
            while (await ws.next_message())["event"] != "ack":
                pass
        async with httpx.AsyncClient(base_url=server.realtime_url) as raw:
            assert (await raw.get("/nowhere")).status_code == 404
        after = (await api.get("/metrics")).text
        await ws.aclose()
    sent = "fechatter_messages_sent_total"
    assert _metric(after, sent) - _metric(before, sent) == 2
    assert _metric(after, "fechatter_realtime_streams") == 1
    assert _metric(after, "fechatter_realtime_connections") >= 1
    assert _metric(after, "fechatter_realtime_accepted_total") >= 2
    deliveries = "fechatter_realtime_deliveries_total"
    assert _metric(after, deliveries) - _metric(before, deliveries) >= 1  # the WS message
    for name in (
        "fechatter_realtime_pending_connections",
        "fechatter_realtime_refused_total",
        "fechatter_realtime_too_many_streams_total",
        "fechatter_realtime_pending_dropped_total",
        "fechatter_realtime_head_timeouts_total",
        "fechatter_realtime_slow_consumers_total",
        "fechatter_realtime_bad_requests_total",
        "fechatter_realtime_events_published_total",
    ):
        assert _metric(after, name) >= 0
    assert "# TYPE fechatter_realtime_refused_total counter" in after
    assert "# TYPE fechatter_realtime_connections gauge" in after
