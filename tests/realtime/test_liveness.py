"""Slow consumers are cut off without slowing anyone; heartbeats; dead peers; token expiry."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

import pytest
import trio
import trio.testing

from fechatter.app import ServerInfo
from fechatter.config import Settings
from tests.conftest import (
    Api,
    User,
    access_token,
    api_client,
    make_chat,
    make_workspace,
    running_server,
)
from tests.realtime.clients import RawWs, SseClient


@pytest.fixture
async def tight(
    nursery: trio.Nursery, settings_factory: Callable[..., Settings]
) -> AsyncIterator[tuple[ServerInfo, Api]]:
    """Small outboxes and socket buffers, so a client that stops reading overflows quickly."""
    settings = settings_factory(
        stream_sndbuf=4096,
        stream_max_events=8,
        stream_max_bytes=8192,
        send_burst=1000,
        send_rate=1000.0,
        stream_write_timeout=20.0,
    )
    async with running_server(nursery, settings) as info, api_client(info) as api:
        yield info, api


async def _flood(sender: User, chat: int, count: int) -> None:
    for i in range(count):
        r = await sender.api.post(
            f"/api/chats/{chat}/messages", json={"content": f"{i:04d} " + "x" * 400}
        )
        assert r.status_code == 201


@pytest.mark.single_process(
    reason=(
        "reads slow_consumers of the streaming node through /api/sse/health on the API node; "
        "the counter is per node"
    )
)
@pytest.mark.direct_listener(
    reason="a slow reader's small receive buffer back-pressures the listener's socket; behind"
    " the proxy nginx's buffers read for it, so the server never sees it slow"
)
async def test_slow_sse_consumer_is_cut_off_and_others_get_everything(
    tight: tuple[ServerInfo, Api],
) -> None:
    server, api = tight
    sender, fast, slow = await api.signup(), await api.signup(), await api.signup()
    ws = await make_workspace(sender, fast, slow)
    chat = await make_chat(sender, ws, "Group", fast, slow)
    with trio.fail_after(30):
        slow_client = await SseClient.connect(server.realtime_url, slow.api.token, rcvbuf=2048)
        fast_client = await SseClient.connect(server.realtime_url, fast.api.token)
        await fast_client.next_of("ready")
        received: list[int] = []

        async def read_fast() -> None:
            while len(received) < 200:
                received.append((await fast_client.next_of("message.created")).data["seq"])

        async with trio.open_nursery() as n:
            n.start_soon(read_fast)
            await _flood(sender, chat, 200)
        assert received == list(range(1, 201))
        # The slow stream was closed: reading it now ends in EOF well before event 200.
        data = await slow_client.read_to_eof()
        assert data.count(b"event: message.created") < 200
        health = (await api.get("/api/sse/health")).json()
        assert health["slow_consumers"] == 1
        await slow_client.aclose()
        await fast_client.aclose()


@pytest.mark.direct_listener(
    reason="a slow reader's small receive buffer back-pressures the listener's socket; behind"
    " the proxy nginx's buffers read for it, so the server never sees it slow"
)
async def test_slow_websocket_consumer_gets_4008_and_resumes(
    tight: tuple[ServerInfo, Api],
) -> None:
    server, api = tight
    sender, slow = await api.signup(), await api.signup()
    ws_id = await make_workspace(sender, slow)
    chat = await make_chat(sender, ws_id, "Single", slow)
    with trio.fail_after(60):
        ws = await RawWs.connect(server.realtime_url, slow.api.token, rcvbuf=2048)
        await _flood(sender, chat, 120)  # nobody reads meanwhile
        frames = await ws.until_closed()
        assert ws.closed is not None
        assert (ws.closed.code, ws.closed.reason) == (4008, "slow consumer")
        await ws.aclose()
        assert frames[0]["event"] == "ready"
        seen = [f["data"]["seq"] for f in frames[1:]]
        assert seen == list(range(1, len(seen) + 1))
        assert len(seen) < 120
        # Resume from the last frame seen: the rest arrives, nothing twice.
        resumed = await RawWs.connect(
            server.realtime_url, slow.api.token, last_event_id=frames[-1]["id"]
        )
        while len(seen) < 120:
            frame = await resumed.next_message()
            assert frame["event"] != "resync"
            if frame["event"] == "message.created":
                seen.append(frame["data"]["seq"])
        assert seen == list(range(1, 121))
        await resumed.aclose()


async def test_sse_heartbeat(
    server: ServerInfo, api: Api, mock_clock: trio.testing.MockClock
) -> None:
    user = await api.signup()
    sse = await SseClient.connect(server.realtime_url, user.api.token)
    try:
        await sse.next_of("ready")
        mock_clock.autojump_threshold = 0  # only timers from here on
        start = trio.current_time()
        with trio.fail_after(40):
            while sse.buffer.count(b": ping\n\n") < 2:
                assert await sse._fill()
        assert 30 <= trio.current_time() - start < 40
    finally:
        mock_clock.autojump_threshold = float("inf")
        await sse.aclose()


async def test_silent_websocket_peer_is_dropped_within_a_minute(
    server: ServerInfo, api: Api, mock_clock: trio.testing.MockClock
) -> None:
    user = await api.signup()
    ws = await RawWs.connect(server.realtime_url, user.api.token, answer_pings=False)
    assert (await ws.next_message())["event"] == "ready"
    mock_clock.autojump_threshold = 0
    start = trio.current_time()
    with trio.fail_after(120):
        await ws.until_closed()
    assert ws.closed is None  # dropped, no close handshake with a dead peer
    assert 40 <= trio.current_time() - start <= 60
    mock_clock.autojump_threshold = float("inf")
    stats = server.system.users.statistics()
    assert stats.connections == 0
    await ws.aclose()


async def test_answering_pings_keeps_websocket_alive(
    server: ServerInfo, api: Api, mock_clock: trio.testing.MockClock
) -> None:
    user = await api.signup()
    ws = await RawWs.connect(server.realtime_url, user.api.token, answer_pings=True)
    assert (await ws.next_message())["event"] == "ready"
    mock_clock.autojump_threshold = 0
    with trio.move_on_after(120):
        await ws.next_message()  # only pings arrive, answered inside next_message
    mock_clock.autojump_threshold = float("inf")
    assert server.system.users.statistics().connections == 1
    await ws.aclose()


async def test_token_expiry_closes_streams(
    server: ServerInfo, api: Api, mock_clock: trio.testing.MockClock
) -> None:
    user = await api.signup()
    token = access_token(user.id, ttl=20, issued_at=time.time())
    sse = await SseClient.connect(server.realtime_url, token)
    await sse.next_of("ready")
    ws = await RawWs.connect(server.realtime_url, token)
    await ws.next_message()
    mock_clock.autojump_threshold = 0
    start = trio.current_time()
    with trio.fail_after(60):
        await sse.read_to_eof()
        await ws.until_closed()
    assert ws.closed is not None
    assert ws.closed.code == 4001
    assert 19 <= trio.current_time() - start <= 21
    mock_clock.autojump_threshold = float("inf")
    await sse.aclose()
    await ws.aclose()
