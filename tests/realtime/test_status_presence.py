"""A chosen status travels in ``presence`` events (SPEC §7; docs/api.md "User status,
profiles and mute"): set, cleared and expired, to the user's presence peers and to the
user's own streams. In the cluster modes HTTP is on node 1 and the streams on node 2, so
every event here crosses nodes."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from fechatter.app import ServerInfo
from tests.conftest import Api, User, make_chat, make_workspace, suite_backend
from tests.realtime.clients import SseClient

CEILING = 20.0


async def presence(sse: SseClient, about: User | None = None) -> dict[str, Any]:
    """The next ``presence`` event (about ``about`` only, if given: a stream that arrived
    together with its peer's may be told of the peer too, in one flush)."""
    while True:
        data: dict[str, Any] = (await sse.next_of("presence")).data
        if about is None or data["user_id"] == about.id:
            return data


async def online_pair(server: ServerInfo, api: Api) -> tuple[User, User, SseClient, SseClient]:
    """Two users sharing a Single chat, both with a stream; b has seen a come online."""
    a, b = await api.signup(), await api.signup()
    ws = await make_workspace(a, b)
    await make_chat(a, ws, "Single", b)
    sse_b = await SseClient.connect(server.realtime_url, b.api.token)
    await sse_b.next_of("ready")
    sse_a = await SseClient.connect(server.realtime_url, a.api.token)
    await sse_a.next_of("ready")
    assert await presence(sse_b) == {"user_id": a.id, "status": "online"}
    return a, b, sse_a, sse_b


async def test_status_changes_arrive_as_presence_events(server: ServerInfo, api: Api) -> None:
    with trio.fail_after(CEILING):
        a, _, sse_a, sse_b = await online_pair(server, api)
        r = await a.api.put("/api/users/me/status", json={"status": "busy", "text": "focus"})
        assert r.status_code == 200, r.text
        busy = {"user_id": a.id, "status": "busy", "text": "focus", "expires_at": None}
        assert await presence(sse_b) == busy
        assert await presence(sse_a, a) == busy  # the user's own devices follow
        await a.api.put("/api/users/me/status", json={"status": "away"})
        away = {"user_id": a.id, "status": "away", "text": None, "expires_at": None}
        assert await presence(sse_b) == away
        await a.api.put("/api/users/me/status", json={"status": None})
        assert await presence(sse_b) == {"user_id": a.id, "status": "online"}
        await sse_a.aclose()
        await sse_b.aclose()


async def test_coming_online_shows_the_chosen_status(server: ServerInfo, api: Api) -> None:
    a, b = await api.signup(), await api.signup()
    ws = await make_workspace(a, b)
    await make_chat(a, ws, "Single", b)
    with trio.fail_after(CEILING):
        r = await a.api.put("/api/users/me/status", json={"status": "busy"})
        assert r.status_code == 200, r.text
        sse_b = await SseClient.connect(server.realtime_url, b.api.token)
        await sse_b.next_of("ready")
        sse_a = await SseClient.connect(server.realtime_url, a.api.token)
        await sse_a.next_of("ready")
        busy = {"user_id": a.id, "status": "busy", "text": None, "expires_at": None}
        assert await presence(sse_b) == busy
        await sse_a.aclose()
        await sse_b.aclose()


async def test_an_expired_status_is_announced_when_it_lapses(server: ServerInfo, api: Api) -> None:
    """Real time, one second: the lapse is the timer's, wherever the streams are."""
    with trio.fail_after(CEILING):
        a, _, sse_a, sse_b = await online_pair(server, api)
        r = await a.api.put("/api/users/me/status", json={"status": "away", "expires_in": 1})
        assert r.status_code == 200, r.text
        away = await presence(sse_b)
        assert away["status"] == "away"
        assert away["expires_at"] == r.json()["expires_at"]
        assert await presence(sse_b) == {"user_id": a.id, "status": "online"}
        assert (await presence(sse_a, a))["status"] == "away"
        assert await presence(sse_a, a) == {"user_id": a.id, "status": "online"}
        r = await a.api.get(f"/api/users/{a.id}")
        assert r.json()["presence"] == {"status": "online", "text": None, "expires_at": None}
        await sse_a.aclose()
        await sse_b.aclose()


@pytest.mark.skipif(
    suite_backend() != "sqlite",
    reason="virtual time: PostgreSQL's socket waits let autojump reach every ceiling at once",
)
async def test_expiry_follows_the_clock_not_a_sleep(
    server: ServerInfo, api: Api, mock_clock: trio.testing.MockClock
) -> None:
    """Virtual time (autojump, switched on once only timers are left to wait for): a
    ten-minute status lapses, never before its ten minutes. (No upper bound here: while a
    storage thread works, autojump races virtual time on through the heartbeats; the
    real-time test above bounds the delay.)"""
    a, b = await api.signup(), await api.signup()
    ws = await make_workspace(a, b)
    await make_chat(a, ws, "Single", b)
    with trio.fail_after(CEILING):
        body = {"status": "busy", "expires_in": 600}
        r = await a.api.put("/api/users/me/status", json=body)
        assert r.status_code == 200, r.text
        start = trio.current_time()
        sse_b = await SseClient.connect(server.realtime_url, b.api.token)
        await sse_b.next_of("ready")
        sse_a = await SseClient.connect(server.realtime_url, a.api.token)
        await sse_a.next_of("ready")
    # Only timers from here on (no HTTP client waits). Until the arrival is announced the
    # clock jumps only after 1 s of real stillness: with 0, a storage thread's read (say the
    # presence flush's status read) leaves every task blocked, so autojump raced on through
    # the heartbeats past the ten minutes and the arrival was announced "online" (CI, once).
    mock_clock.autojump_threshold = 1.0
    try:
        with trio.fail_after(3000):  # below the access token's hour
            came = await presence(sse_b, a)
            mock_clock.autojump_threshold = 0
            lapsed = await presence(sse_b, a)
        elapsed = trio.current_time() - start
    finally:
        await sse_a.aclose()
        await sse_b.aclose()
        mock_clock.autojump_threshold = float("inf")
    assert came["status"] == "busy"
    assert came["expires_at"] == r.json()["expires_at"]
    assert lapsed == {"user_id": a.id, "status": "online"}
    assert elapsed >= 600


@pytest.mark.parametrize("expires_in", [None, 60])
async def test_an_offline_user_changing_status_announces_nothing(
    server: ServerInfo, api: Api, expires_in: int | None
) -> None:
    """b's next presence event after a's silent change is c's arrival (a has no stream)."""
    a, b, c = await api.signup(), await api.signup(), await api.signup()
    ws = await make_workspace(a, b, c)
    await make_chat(a, ws, "Group", b, c)
    with trio.fail_after(CEILING):
        sse_b = await SseClient.connect(server.realtime_url, b.api.token)
        await sse_b.next_of("ready")
        body: dict[str, Any] = {"status": "busy", "expires_in": expires_in}
        assert (await a.api.put("/api/users/me/status", json=body)).status_code == 200
        sse_c = await SseClient.connect(server.realtime_url, c.api.token)
        await sse_c.next_of("ready")
        assert await presence(sse_b) == {"user_id": c.id, "status": "online"}
        await sse_b.aclose()
        await sse_c.aclose()
