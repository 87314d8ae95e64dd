"""Admission on the realtime listener (issue 9, kind 6): one party cannot take every slot.

Per-user stream cap (429 ``too_many_streams``); connections that have not authenticated live
in their own budget, under a short deadline, so a signed-in user always gets a stream.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

import httpx
import pytest
import trio
import trio.testing

from fechatter.app import ServerInfo, serve
from fechatter.config import Settings
from fechatter.errors import RateLimited, Unavailable
from fechatter.metrics import RealtimeStats
from fechatter.realtime.admission import Dropped, Gate, Phase
from fechatter.realtime.listener import _answer_cut, _Exchange
from tests.conftest import Api, api_client, running_server
from tests.realtime.clients import SseClient, exchange, problem_of


@pytest.fixture
async def capped(
    nursery: trio.Nursery, settings_factory: Callable[..., Settings]
) -> AsyncIterator[tuple[ServerInfo, Api]]:
    """Two streams per user, three pending connections, a one-second head deadline."""
    settings = settings_factory(max_streams_per_user=2, max_pending_connections=3, head_timeout=1.0)
    async with running_server(nursery, settings) as info, api_client(info) as api:
        yield info, api


def _hostport(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    return parts.hostname, parts.port


def _ws_request(token: str | None) -> bytes:
    return (
        f"GET /api/notifications/ws?access_token={token} HTTP/1.1\r\nHost: x\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


@pytest.mark.one_stream_node(
    reason="the cap is each node's count of the user's streams; behind nginx they spread over"
    " two nodes, so the user holds the cap on each (docs/api.md)"
)
async def test_per_user_stream_cap_refuses_with_429_and_frees_on_close(
    capped: tuple[ServerInfo, Api],
) -> None:
    server, api = capped
    greedy, other = await api.signup(), await api.signup()
    with trio.fail_after(10):
        held = [await SseClient.connect(server.realtime_url, greedy.api.token) for _ in range(2)]
        for sse in held:
            assert (await sse.next_event()).event == "ready"
        # Past the cap: SSE and WebSocket alike get 429 before any stream starts.
        over_sse = await SseClient.connect(server.realtime_url, greedy.api.token)
        assert over_sse.status == 429
        assert int(over_sse.headers["retry-after"]) >= 1
        body = await over_sse.read_to_eof()
        assert b'"code":"too_many_streams"' in body
        await over_sse.aclose()
        status, problem, head = problem_of(
            await exchange(server.realtime_url, _ws_request(greedy.api.token))
        )
        assert (status, problem["code"]) == (429, "too_many_streams")
        assert b"retry-after:" in head
        # Someone else is not affected.
        theirs = await SseClient.connect(server.realtime_url, other.api.token)
        assert (await theirs.next_event()).event == "ready"
        # Closing one of the user's streams frees its slot: nothing leaks.
        await held.pop().aclose()
        await trio.testing.wait_all_tasks_blocked()
        again = await SseClient.connect(server.realtime_url, greedy.api.token)
        assert (await again.next_event()).event == "ready"
        held.append(again)
        for sse in [*held, theirs]:
            await sse.aclose()
        await trio.testing.wait_all_tasks_blocked()
        fresh = [await SseClient.connect(server.realtime_url, greedy.api.token) for _ in range(2)]
        assert [s.status for s in fresh] == [200, 200]
        for sse in fresh:
            await sse.aclose()
    assert server.realtime.too_many_streams == 2


@pytest.mark.direct_listener(
    reason="silent TCP connections fill the listener's pre-auth budget; nginx does not open"
    " an upstream connection before it has a whole request head"
)
async def test_silent_connections_cannot_lock_out_a_signed_in_user(
    capped: tuple[ServerInfo, Api],
) -> None:
    server, api = capped
    user = await api.signup()
    host, port = _hostport(server.realtime_url)
    with trio.fail_after(10):
        silent = [await trio.open_tcp_stream(host, port) for _ in range(3)]
        await trio.testing.wait_all_tasks_blocked()
        assert server.realtime.pending == 3  # the pre-auth budget is full
        sse = await SseClient.connect(server.realtime_url, user.api.token)
        assert sse.status == 200
        assert (await sse.next_event()).event == "ready"
        # The oldest silent connection made room; the others end at the head deadline.
        for stream in silent:
            assert await stream.receive_some(1024) == b""
            await stream.aclose()
        assert server.realtime.pending_dropped == 1
        assert server.realtime.head_timeouts == 2
        assert server.realtime.pending == 0
        # The stream outlived them all (the deadline is for the pending phase only).
        assert server.system.users.statistics().connections == 1
        await sse.aclose()


@pytest.mark.direct_listener(
    reason="the listener's head deadline: nginx buffers a trickled head itself"
    " (client_header_timeout) and never forwards it"
)
async def test_a_trickled_head_is_cut_at_the_deadline(capped: tuple[ServerInfo, Api]) -> None:
    server, _ = capped
    host, port = _hostport(server.realtime_url)
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(host, port)
        await stream.send_all(b"GET /api/notifications/events HTTP/1.1\r\n")
        await stream.send_all(b"Host: x\r\n")
        assert await stream.receive_some(1024) == b""
        await stream.aclose()
    assert server.realtime.head_timeouts == 1


async def test_stream_cap_counts_streams_not_pending_connections(
    nursery: trio.Nursery, settings_factory: Callable[..., Settings]
) -> None:
    shutdown = trio.Event()
    server: ServerInfo = await nursery.start(
        serve, settings_factory(max_connections=1, head_timeout=1.0), shutdown
    )
    async with httpx.AsyncClient(base_url=server.api_url, timeout=10) as client:
        api = Api(client)
        a, b = await api.signup(), await api.signup()
        host, port = _hostport(server.realtime_url)
        with trio.fail_after(10):
            silent = await trio.open_tcp_stream(host, port)
            first = await SseClient.connect(server.realtime_url, a.api.token)
            assert first.status == 200  # a pending connection does not use the stream slot
            second = await SseClient.connect(server.realtime_url, b.api.token)
            assert second.status == 503
            assert b'"code":"over_capacity"' in await second.read_to_eof()
            assert server.realtime.refused == 1
            for s in (first, second):
                await s.aclose()
            await silent.aclose()
    shutdown.set()


def _gate(**kw: int) -> Gate:
    limits = {"max_pending": 2, "max_streams": 3, "per_user": 2, **kw}
    return Gate(RealtimeStats(), head_timeout=5.0, **limits)


def test_gate_drops_the_oldest_pending_connection() -> None:
    gate = _gate()
    first, second = gate.accept(0.0), gate.accept(1.0)
    assert first.scope.deadline == 5.0
    third = gate.accept(2.0)
    assert (first.phase, first.scope.cancel_called) == (Phase.DROPPED, True)
    assert (second.phase, third.phase) == (Phase.PENDING, Phase.PENDING)
    assert (gate.stats.pending, gate.stats.pending_dropped) == (2, 1)
    with pytest.raises(Dropped):
        gate.promote(first, 7)
    gate.release(first)
    assert gate.stats.pending == 2


def test_gate_rearms_the_deadline_of_pending_connections_only() -> None:
    """In a reconnect storm the server's own queue must not use up a client's deadline: the
    listener rearms it when the connection's task starts and when the head has arrived."""
    gate = _gate()
    entry = gate.accept(0.0)
    gate.rearm(entry, 4.0)
    assert entry.scope.deadline == 9.0
    gate.rearm(entry, 6.0, 30.0)  # the head arrived: the server's time to authenticate
    assert entry.scope.deadline == 36.0
    silent = gate.accept(7.0)
    gate.rearm(entry, 8.0, 30.0)  # ... and it is no longer the first to be dropped
    gate.accept(9.0)  # full (2): the oldest that never sent its head goes
    assert (silent.phase, entry.phase) == (Phase.DROPPED, Phase.PENDING)
    gate.promote(entry, 7)
    gate.rearm(entry, 20.0)  # a stream has no head deadline any more
    assert entry.scope.deadline == float("inf")


def test_gate_caps_streams_per_user_and_in_all_and_releases_them() -> None:
    gate = _gate(max_pending=10)
    entries = [gate.accept(0.0) for _ in range(5)]
    gate.promote(entries[0], 7)
    gate.promote(entries[1], 7)
    assert entries[0].scope.deadline == float("inf")
    with pytest.raises(RateLimited) as limited:
        gate.promote(entries[2], 7)
    assert (limited.value.code, limited.value.headers["Retry-After"]) == ("too_many_streams", "10")
    assert entries[2].phase is Phase.PENDING  # refused, still bounded by its deadline
    gate.promote(entries[2], 8)
    with pytest.raises(Unavailable):
        gate.promote(entries[3], 9)
    for entry in entries:
        gate.release(entry)
        gate.release(entry)  # idempotent
    assert (gate.streams, gate.streams_of(7), gate.stats.pending) == (0, 0, 0)
    assert (gate.stats.too_many_streams, gate.stats.refused) == (1, 1)


async def test_wildcard_host_without_allowed_origins_warns_at_start(
    nursery: trio.Nursery,
    settings_factory: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
) -> None:
    shutdown = trio.Event()
    with caplog.at_level(logging.WARNING, logger="fechatter.app"):
        await nursery.start(serve, settings_factory(host="0.0.0.0"), shutdown)
    warnings = [r for r in caplog.records if r.name == "fechatter.app"]
    assert len(warnings) == 1
    assert "allowed_origins" in warnings[0].getMessage()
    assert warnings[0].levelno == logging.WARNING
    shutdown.set()


HEAD = b"GET /api/notifications/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n\r\n"


@pytest.mark.parametrize(
    ("sent", "head_read", "answering", "answered"),
    [
        (HEAD, False, False, True),  # a whole request still unread in the buffer
        (HEAD[:20], False, False, False),  # half a head: no request to answer
        (b"", False, False, False),  # silent
        (b"", True, False, True),  # its task had read the whole head
        (b"", True, True, False),  # its own answer had begun: not a second one
    ],
)
async def test_a_cut_request_is_answered_503_only_when_it_came_in_whole(
    sent: bytes, head_read: bool, answering: bool, answered: bool
) -> None:
    """The gate's cut (drop or pending deadline) behind a proxy: a connection closed before
    any response is a failed attempt to nginx (docs/deploy.md "Proxy"), so a whole request
    gets 503 ``over_capacity``; anything else closes as before."""
    node, peer = socket.socketpair()
    with node, peer, trio.fail_after(5):
        node.setblocking(False)
        peer.sendall(sent)
        state = _Exchange(head_read=head_read, answering=answering)
        await _answer_cut(node, state, None)
        node.close()
        received = b"".join(iter(lambda: peer.recv(65536), b""))
    if answered:
        assert received.startswith(b"HTTP/1.1 503 "), received
        assert b"Retry-After: 1\r\n" in received
        assert b'"code":"over_capacity"' in received
    else:
        assert received == b""
