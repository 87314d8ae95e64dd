"""The access log (``access_log`` / ``--access-log``): off by default, one line per request on
both listeners, and never a secret (fechatter/access_log.py lists what is redacted).

A live server (hypercorn on port 0 and the realtime listener) is sent every secret a request
can carry — the access token in the query (streams) and the Authorization header, a refresh
token, invite tokens in paths, a signed file URL's signature, a cookie — while every record is
captured in both formats; none of those strings may appear, the redaction marker must.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
import trio

from fechatter import access_log
from fechatter.app import ServerInfo
from fechatter.cli import _parser
from fechatter.config import Settings
from fechatter.domain import password_resets
from tests.conftest import Api, User, api_client, make_workspace, running_server, upload_file
from tests.realtime.clients import RawWs, SseClient
from tests.test_logs import LinesWaiter, captured, json_lines, waiting_for_access_lines

REDACTED = "[redacted]"


def access_lines(text: str) -> list[dict[str, Any]]:
    return [line for line in json_lines(text) if line["logger"] == access_log.LOGGER]


EXPECTED_PATHS = (
    f"/api/password-resets/{REDACTED}",
    f"/reset-password/{REDACTED}",
    f"/api/invites/{REDACTED}",
    f"/api/invites/{REDACTED}/accept",
    f"/invite/{REDACTED}",
    f"/api/auth/refresh?refresh_token={REDACTED}",
    f"/api/users/me?access_token={REDACTED}",
    f"/api/notifications/events?access_token={REDACTED}",
    f"/api/notifications/ws?access_token={REDACTED}",
)


async def _flow(server: ServerInfo, api: Api) -> tuple[list[str], User]:
    """Requests carrying every kind of secret; the secret strings sent."""
    owner = await api.signup()
    guest = await api.signup()
    ws = await make_workspace(owner)
    r = await owner.api.post(f"/api/workspaces/{ws}/invites", json={})
    assert r.status_code == 201, r.text
    invite = r.json()["token"]
    assert (await api.get(f"/api/invites/{invite}")).status_code == 200
    assert (await api.get(f"/invite/{invite}")).status_code == 200
    assert (await guest.api.post(f"/api/invites/{invite}/accept")).status_code == 200
    # A password-reset token: the API's check and the web page (a made-up one is as secret).
    reset = password_resets.new_token()[0]
    assert (await api.get(f"/api/password-resets/{reset}")).status_code == 404
    assert (await api.get(f"/reset-password/{reset}")).status_code == 200
    # An absolute-form request target (RFC 9112 §3.2.2) carrying the invite token.
    assert (await _absolute_form(server, f"/api/invites/{invite}")).startswith(b"HTTP/1.1 ")
    # A signed file URL (its sig is a bearer credential for the file).
    url = await upload_file(owner)
    r = await owner.api.post("/api/files/sign", json={"urls": [url]})
    assert r.status_code == 200, r.text
    signed = r.json()["urls"][url]
    signature = dict(p.split("=", 1) for p in urlsplit(signed).query.split("&"))["sig"]
    assert (await api.get(signed)).status_code == 200
    # A refresh token, in a body (never logged) and misplaced in a query string.
    refresh = owner.auth["refresh_token"]
    r = await api.post(f"/api/auth/refresh?refresh_token={refresh}", json={"refresh_token": "x"})
    assert r.status_code == 401, r.text
    r = await api.post("/api/auth/refresh", json={"refresh_token": refresh})
    assert r.status_code == 200, r.text
    new_refresh = r.json()["refresh_token"]
    # An access token in a query string on the API, and a cookie.
    cookie = "fechatter-cookie-value-8d1f"
    me = await api.get(
        f"/api/users/me?access_token={guest.api.token}", headers={"Cookie": f"s={cookie}"}
    )
    assert me.status_code == 401, me.text
    # Streams: ?access_token= on both transports.
    with trio.fail_after(10):
        sse = await SseClient.connect(
            server.realtime_url, None, query={"access_token": guest.api.token or ""}
        )
        assert sse.status == 200
        assert (await sse.next_event()).event == "ready"
        await sse.aclose()
        ws_client = await RawWs.connect(server.realtime_url, guest.api.token)
        assert (await ws_client.next_message())["event"] == "ready"
        await ws_client.aclose()
    secrets = [
        invite,
        reset,
        signature,
        refresh,
        new_refresh,
        cookie,
        owner.api.token or "",
        guest.api.token or "",
    ]
    return secrets, guest


async def _absolute_form(server: ServerInfo, path: str) -> bytes:
    """``GET http://host:port<path>`` on a raw connection; the response's status line."""
    url = urlsplit(server.api_url)
    assert url.hostname is not None
    assert url.port is not None
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(url.hostname, url.port)
        async with stream:
            await stream.send_all(
                f"GET {server.api_url}{path} HTTP/1.1\r\nHost: {url.netloc}\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            reply = b""
            while chunk := await stream.receive_some(65536):
                reply += chunk
    return reply.split(b"\r\n", 1)[0]


@pytest.mark.direct_listener(
    reason="waits for one node's lines of an absolute-form target, which nginx rewrites to"
    " origin form (tests/deploy/test_nginx.py checks the log behind the proxy)"
)
async def test_access_log_redacts_every_secret(
    nursery: trio.Nursery, settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory(access_log=True, trusted_proxies=["127.0.0.1", "::1"])
    streams_logged = LinesWaiter(*EXPECTED_PATHS, "/health")
    logging.getLogger(access_log.LOGGER).addHandler(streams_logged)
    try:
        with captured("json", "text") as out:
            async with running_server(nursery, settings) as server, api_client(server) as api:
                absolute = f"{server.api_url}/api/invites/{REDACTED}"
                streams_logged.missing.add(absolute)
                secrets, guest = await _flow(server, api)
                forwarded = await api.get("/health", headers={"X-Forwarded-For": "203.0.113.7"})
                assert forwarded.status_code == 200
                with trio.fail_after(10):
                    await streams_logged.done.wait()
    finally:
        logging.getLogger(access_log.LOGGER).removeHandler(streams_logged)
    text, rendered = out["text"].getvalue(), out["json"].getvalue()
    for secret in secrets:
        assert secret
        assert secret not in text
        assert secret not in rendered
    lines = access_lines(rendered)
    paths = {line["path"] for line in lines}
    assert set(EXPECTED_PATHS) <= paths
    assert any(p.startswith("/files/") and f"sig={REDACTED}" in p for p in paths), paths
    assert absolute in paths, paths
    streams = [line for line in lines if line["listener"] == "realtime"]
    assert {(s["path"], s["status"]) for s in streams} >= {
        (f"/api/notifications/events?access_token={REDACTED}", 200),
        (f"/api/notifications/ws?access_token={REDACTED}", 101),
    }
    for line in streams:
        assert line["user_id"] == guest.id
        assert line["bytes"] > 0
        assert "connection_id" in line
    accepted = next(x for x in lines if x["path"] == f"/api/invites/{REDACTED}/accept")
    assert (accepted["method"], accepted["status"], accepted["user_id"]) == ("POST", 200, guest.id)
    assert accepted["bytes"] > 0
    assert accepted["duration_ms"] >= 0
    assert accepted["listener"] == "api"
    assert "request_id" in accepted
    health = next(x for x in lines if x["path"] == "/health" and x["client"] == "203.0.113.7")
    assert "user_id" not in health
    assert REDACTED in text  # the text rendering carries the marker too


async def test_access_log_is_off_by_default(server: ServerInfo, api: Api) -> None:
    with captured("json") as out:
        await _flow(server, api)
    assert access_lines(out["json"].getvalue()) == []


@pytest.mark.parametrize(
    ("path", "query", "shown"),
    [
        ("/api/invites/abc", "", f"/api/invites/{REDACTED}"),
        ("/api/invites/abc/accept", "", f"/api/invites/{REDACTED}/accept"),
        ("//API/Invites//abc//accept/", "", f"//API/Invites//{REDACTED}/accept"),
        ("/api/invites/a/b/c", "", f"/api/invites/{REDACTED}"),
        ("/invite/abc", "x=1", f"/invite/{REDACTED}?x=1"),
        ("/api/%69nvites/abc", "", f"/api/invites/{REDACTED}"),
        ("/api/workspaces/3/invites/7", "", "/api/workspaces/3/invites/7"),
        ("/reset-password/abc", "", f"/reset-password/{REDACTED}"),
        ("//Reset-Password//abc/", "", f"//Reset-Password//{REDACTED}"),
        ("/api/password-resets/abc", "", f"/api/password-resets/{REDACTED}"),
        ("/api/password%2Dresets/abc", "", f"/api/password-resets/{REDACTED}"),
        ("http://h:1/api/invites/abc", "", f"http://h:1/api/invites/{REDACTED}"),
        ("HTTPS://h/reset-password/abc", "a=1", f"HTTPS://h/reset-password/{REDACTED}?a=1"),
        ("http://h:1", "", "http://h:1"),
        ("h:1/api/invites/abc", "", REDACTED),
        ("*", "", REDACTED),
        ("/files/f1", "uid=2&exp=9&sig=s3cr3t", f"/files/f1?uid=2&exp=9&sig={REDACTED}"),
        (
            "/x",
            "ACCESS_TOKEN=t&a=1&access%5Ftoken=u",
            f"/x?ACCESS_TOKEN={REDACTED}&a=1&access%5Ftoken={REDACTED}",
        ),
        (
            "/x",
            "api_key=k&client_secret=c&password=p",
            f"/x?api_key={REDACTED}&client_secret={REDACTED}&password={REDACTED}",
        ),
        ("/x", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln", f"/x?{REDACTED}"),
        ("/x", "last_event_id=e-1&after=3", "/x?last_event_id=e-1&after=3"),
    ],
)
def test_redact_target(path: str, query: str, shown: str) -> None:
    assert access_log.redact_target(path, query) == shown


def test_the_serve_flag_turns_it_on() -> None:
    assert _parser().parse_args(["serve"]).access_log is None  # the setting decides
    assert _parser().parse_args(["serve", "--access-log"]).access_log is True
    assert Settings.model_fields["access_log"].default is False


@pytest.mark.parametrize("access_log_on", [False, True], ids=["debug", "debug+access-log"])
async def test_debug_logging_never_shows_a_token(
    nursery: trio.Nursery, settings_factory: Callable[..., Settings], access_log_on: bool
) -> None:
    """At ``log_level: DEBUG`` (``captured`` sets the root logger to DEBUG, as ``logs.configure``
    does for it) an access token sent in a query string or a Bearer header, to either listener,
    reaches no log record; the only per-request line is ``--access-log``'s."""
    settings = settings_factory(log_level="DEBUG", access_log=access_log_on)
    token_query = f"access_token={REDACTED}"
    wanted = (
        f"/api/users/me?{token_query}",
        "/api/users/me",
        f"/api/notifications/events?{token_query}",
        "/api/notifications/events",
        f"/api/notifications/ws?{token_query}",
    )
    with (
        trio.fail_after(20),
        waiting_for_access_lines(*wanted) as logged,
        captured("json", "text") as out,
    ):
        async with running_server(nursery, settings) as server, api_client(server) as api:
            user = await api.signup()
            token = user.api.token or ""
            assert token
            query = await api.get(f"/api/users/me?access_token={token}")
            assert query.status_code == 401, query.text
            assert (await user.api.get("/api/users/me")).status_code == 200  # the Bearer header
            for sse in (
                await SseClient.connect(server.realtime_url, None, query={"access_token": token}),
                await SseClient.connect(server.realtime_url, token),
            ):
                assert sse.status == 200
                assert (await sse.next_event()).event == "ready"
                await sse.aclose()
            ws = await RawWs.connect(server.realtime_url, token)
            assert (await ws.next_message())["event"] == "ready"
            await ws.aclose()
            if access_log_on:
                await logged.done.wait()
    for fmt, buffer in out.items():
        text = buffer.getvalue()
        assert token not in text, f"the access token is in the {fmt} log"
        # Without the flag no record names a request at all (the old DEBUG line did).
        assert ("/api/users/me" in text) is access_log_on, text
    lines = access_lines(out["json"].getvalue())
    if access_log_on:
        assert {line["path"] for line in lines} >= set(wanted)
    else:
        assert lines == []
