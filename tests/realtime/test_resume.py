"""Resume: exactly the missed events, in order, no duplicates — or ``resync`` when unprovable."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import trio

from fechatter.app import ServerInfo, serve
from fechatter.config import Settings
from tests.conftest import Api, User, api_client, make_pair, running_server
from tests.realtime.clients import RawWs, SseClient


async def _send(user: User, chat: int, texts: list[str]) -> None:
    for text in texts:
        r = await user.api.post(f"/api/chats/{chat}/messages", json={"content": text})
        assert r.status_code == 201


async def test_sse_resume_replays_exactly_the_missed_events(server: ServerInfo, api: Api) -> None:
    a, b, chat = await make_pair(api)
    with trio.fail_after(10):
        sse = await SseClient.connect(server.realtime_url, b.api.token)
        await sse.next_of("ready")
        await _send(a, chat, ["1", "2", "3"])
        seen = [await sse.next_of("message.created") for _ in range(3)]
        last_id = seen[-1].id
        await sse.aclose()
        await _send(a, chat, ["4", "5", "6", "7", "8"])
        again = await SseClient.connect(server.realtime_url, b.api.token, last_event_id=last_id)
        ready = await again.next_event()
        assert (ready.event, ready.id) == ("ready", last_id)
        replayed = [await again.next_of("message.created") for _ in range(5)]
        assert [e.data["content"] for e in replayed] == ["4", "5", "6", "7", "8"]
        # Nothing doubled: the next live event follows directly.
        await _send(a, chat, ["9"])
        live = await again.next_of("message.created")
        assert live.data["content"] == "9"
        await again.aclose()


async def test_resume_from_ready_position_catches_events_of_an_idle_stream(
    server: ServerInfo, api: Api
) -> None:
    a, b, chat = await make_pair(api)
    with trio.fail_after(10):
        sse = await SseClient.connect(server.realtime_url, b.api.token)
        ready = await sse.next_of("ready")
        await sse.aclose()  # saw nothing but ready
        await _send(a, chat, ["while away"])
        again = await SseClient.connect(server.realtime_url, b.api.token, last_event_id=ready.id)
        await again.next_of("ready")
        got = await again.next_of("message.created", "resync")
        assert (got.event, got.data["content"]) == ("message.created", "while away")
        await again.aclose()


async def test_websocket_resume_with_query_parameter(server: ServerInfo, api: Api) -> None:
    a, b, chat = await make_pair(api)
    with trio.fail_after(10):
        ws = await RawWs.connect(server.realtime_url, b.api.token)
        assert (await ws.next_message())["event"] == "ready"
        await _send(a, chat, ["1"])
        first = await ws.next_message()
        while first["event"] != "message.created":
            first = await ws.next_message()
        await ws.aclose()
        await _send(a, chat, ["2", "3"])
        ws = await RawWs.connect(server.realtime_url, b.api.token, last_event_id=first["id"])
        ready = await ws.next_message()
        assert (ready["event"], ready["id"]) == ("ready", first["id"])
        contents: list[str] = []
        while len(contents) < 2:
            frame = await ws.next_message()
            assert frame["event"] != "resync"
            if frame["event"] == "message.created":
                contents.append(frame["data"]["content"])
        assert contents == ["2", "3"]
        await ws.aclose()


async def test_unknown_event_id_gets_resync(server: ServerInfo, api: Api) -> None:
    _, b, _ = await make_pair(api)
    with trio.fail_after(10):
        for bogus in ("deadbeef-1", "garbage", "x-99999999"):
            sse = await SseClient.connect(server.realtime_url, b.api.token, last_event_id=bogus)
            assert (await sse.next_event()).event == "ready"
            resync = await sse.next_event()
            assert (resync.event, resync.data) == ("resync", {"reason": "unknown_event_id"})
            await sse.aclose()


@pytest.fixture
async def small_ring(
    nursery: trio.Nursery, settings_factory: Callable[..., Settings]
) -> AsyncIterator[tuple[ServerInfo, Api]]:
    settings = settings_factory(ring_size=5)
    async with running_server(nursery, settings) as info, api_client(info) as api:
        yield info, api


@pytest.mark.single_process(
    reason=(
        "in a cluster a resume the ring cannot serve is replayed from the JetStream stream "
        "(exact, docs/cluster.md §5); its resync cases are tests/cluster/"
        "test_resume_across_nodes.py (evicted, over the replay cap)"
    )
)
async def test_ring_overrun_gets_resync(small_ring: tuple[ServerInfo, Api]) -> None:
    server, api = small_ring
    a, b, chat = await make_pair(api)
    with trio.fail_after(10):
        sse = await SseClient.connect(server.realtime_url, b.api.token)
        ready = await sse.next_of("ready")
        await sse.aclose()
        await _send(a, chat, [str(i) for i in range(4)])  # fits the ring of 5
        again = await SseClient.connect(server.realtime_url, b.api.token, last_event_id=ready.id)
        await again.next_of("ready")
        assert [(await again.next_event()).event for _ in range(4)] == ["message.created"] * 4
        await again.aclose()
        await _send(a, chat, [str(i) for i in range(6)])  # overruns it
        again = await SseClient.connect(server.realtime_url, b.api.token, last_event_id=ready.id)
        await again.next_of("ready")
        resync = await again.next_event()
        assert (resync.event, resync.data) == ("resync", {"reason": "history_unavailable"})
        await again.aclose()


@pytest.mark.single_process(
    reason=(
        "in a cluster event ids outlive a node (they name the JetStream stream, not the "
        "process): a restarted node resumes the same id exactly "
        "(tests/cluster/test_resume_across_nodes.py)"
    )
)
async def test_resync_after_server_restart(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            shutdown = trio.Event()
            info: ServerInfo = await nursery.start(serve, settings, shutdown)
            async with httpx.AsyncClient(base_url=info.api_url) as client:
                a, b, chat = await make_pair(Api(client))
                sse = await SseClient.connect(info.realtime_url, b.api.token)
                await sse.next_of("ready")
                await _send(a, chat, ["before"])
                last = await sse.next_of("message.created")
                await sse.aclose()
            shutdown.set()
        async with trio.open_nursery() as nursery:
            shutdown = trio.Event()
            info = await nursery.start(serve, settings, shutdown)
            sse = await SseClient.connect(info.realtime_url, b.api.token, last_event_id=last.id)
            await sse.next_of("ready")
            resync = await sse.next_event()
            assert (resync.event, resync.data) == ("resync", {"reason": "unknown_event_id"})
            await sse.aclose()
            shutdown.set()
