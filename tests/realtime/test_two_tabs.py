"""The issue's acceptance scenario: one user, two tabs (SSE and WebSocket), several chats,
a forced reconnect of both while messages keep coming — every message exactly once, in order."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
import trio

from fechatter.app import ServerInfo
from fechatter.config import Settings
from tests.conftest import Api, User, make_chat, make_workspace, running_server
from tests.realtime.clients import RawWs, SseClient


@pytest.fixture
async def server(
    nursery: trio.Nursery, settings_factory: Callable[..., Settings]
) -> AsyncIterator[ServerInfo]:
    """The suite's server with a write limit above this test's sends: three users send as
    fast as they can, and on a cluster a node admits a user only its share of the limit
    (docs/api.md "Rate limits in a cluster"): 36 sends of one user to node 1 are over it."""
    async with running_server(nursery, settings_factory(send_burst=500, send_rate=500.0)) as info:
        yield info


async def test_two_tabs_across_a_forced_reconnect(server: ServerInfo, api: Api) -> None:
    me, alice, bob = await api.signup(), await api.signup(), await api.signup()
    ws = await make_workspace(me, alice, bob)
    chats = [
        await make_chat(me, ws, "Single", alice),
        await make_chat(me, ws, "Group", alice, bob),
        await make_chat(me, ws, "PublicChannel", alice, bob),
    ]
    per_chat = 12

    async def chatter(user: User) -> None:
        for i in range(per_chat):
            for chat in chats:
                if chat == chats[0] and user is bob:
                    continue
                r = await user.api.post(f"/api/chats/{chat}/messages", json={"content": str(i)})
                assert r.status_code == 201

    # Messages per chat, my own included (my streams get them too).
    expected = {chats[0]: 2 * per_chat, chats[1]: 3 * per_chat, chats[2]: 3 * per_chat}
    seen_sse: dict[int, list[int]] = {c: [] for c in chats}
    seen_ws: dict[int, list[int]] = {c: [] for c in chats}

    # Both tabs are live (their ``ready`` read) before anyone sends: "all tasks blocked" is
    # not enough, since on a cluster the streaming node waits on NATS (another process)
    # while it positions the user's chats, so sends could come before the ready.
    sse_ready, ws_ready = trio.Event(), trio.Event()

    async def sse_tab(reconnect_after: int) -> None:
        client = await SseClient.connect(server.realtime_url, me.api.token)
        last = (await client.next_of("ready")).id
        sse_ready.set()
        count = 0
        while sum(map(len, seen_sse.values())) < sum(expected.values()):
            if count == reconnect_after:  # the forced reconnect
                await client.aclose()
                client = await SseClient.connect(
                    server.realtime_url, me.api.token, last_event_id=last
                )
                assert (await client.next_event()).event == "ready"
            event = await client.next_of("message.created", "resync")
            assert event.event != "resync"
            last = event.id
            seen_sse[event.data["chat_id"]].append(event.data["seq"])
            count += 1
        await client.aclose()

    async def ws_tab(reconnect_after: int) -> None:
        client = await RawWs.connect(server.realtime_url, me.api.token)
        last = (await client.next_message())["id"]
        ws_ready.set()
        count = 0
        while sum(map(len, seen_ws.values())) < sum(expected.values()):
            if count == reconnect_after:
                await client.aclose()
                client = await RawWs.connect(server.realtime_url, me.api.token, last_event_id=last)
                assert (await client.next_message())["event"] == "ready"
            frame = await client.next_message()
            assert frame["event"] != "resync"
            if frame["event"] != "message.created":
                continue
            last = frame["id"]
            seen_ws[frame["data"]["chat_id"]].append(frame["data"]["seq"])
            count += 1
        await client.aclose()

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sse_tab, 17)
            nursery.start_soon(ws_tab, 29)
            await sse_ready.wait()
            await ws_ready.wait()
            async with trio.open_nursery() as senders:
                senders.start_soon(chatter, alice)
                senders.start_soon(chatter, bob)
                senders.start_soon(chatter, me)
    for chat in chats:
        assert seen_sse[chat] == list(range(1, expected[chat] + 1))
        assert seen_ws[chat] == list(range(1, expected[chat] + 1))
