"""A user's arrival on a node while NATS is down (docs/cluster.md §8 "Built: event
wiring", arrival fixes): the routing task retries until NATS is back instead of leaving the
user unrouted for the life of their UserActor. Real PostgreSQL, a NATS server of this
test's own (stopped and restarted), a real SSE client."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing

from fechatter.bus.base import BusState
from tests.cluster.harness import ClusterHarness, open_cluster_harness
from tests.cluster.test_cross_node_events import (
    Http,
    create_group,
    next_chat_event,
    rt,
    send,
    users_in_workspace,
)
from tests.nats import NatsServer
from tests.realtime.clients import SseClient

CEILING = 60.0  # the arrival waits its 10 s bound while NATS is down


@pytest.fixture
async def own_nats() -> AsyncIterator[NatsServer]:
    server = NatsServer.create()
    try:
        yield server
    finally:
        server.stop_and_remove()


async def test_a_user_arriving_while_nats_is_down_is_routed_once_it_is_back(
    nursery: trio.Nursery, tmp_path: Path, pg_database: str, own_nats: NatsServer
) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    with trio.fail_after(CEILING):
        async with open_cluster_harness(nursery, tmp_path, pg_database, own_nats.url) as cluster:
            await run(cluster, own_nats, prefix)


async def run(cluster: ClusterHarness, server: NatsServer, prefix: str) -> None:
    node = await cluster.start_node(nats_prefix=prefix)
    async with httpx.AsyncClient(base_url=node.api_url, timeout=20) as client:
        http = Http()
        http.clients[node.name] = client
        (a, b, c), ws = await users_in_workspace(cluster, http, 3)
        chat = await create_group(http.on(a, node), ws, [b, c])
        events = node.info.events
        assert events is not None
        bus = events.router._bus  # the node's own bus, to wait on its state
        await events.publisher.wait_idle()  # chat.created (from the outbox) is out
        server.stop()
        await bus.wait_state(BusState.RECONNECTING)
        # The subscribe fails: the stream opens after the arrival's bound, unrouted for now.
        b_sse = await SseClient.connect(rt(node), b.api.token)
        assert (await b_sse.next_event()).event == "ready"
        assert chat not in events.router.chats_of(b.id)
        server.start()
        await bus.wait_state(BusState.CONNECTED)
        await events.wait_routed(b.id)  # the routing task's retry succeeds
        sent = await send(http.on(a, node), chat, "after NATS is back")
        got = await next_chat_event(b_sse)
        assert (got.event, got.data["id"]) == ("message.created", sent["id"])
        assert chat in events.router.chats_of(b.id)
        await b_sse.aclose()


async def test_an_arrival_cancelled_before_attach_leaves_no_routing_task(
    nursery: trio.Nursery, tmp_path: Path, pg_database: str, own_nats: NatsServer
) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    with trio.fail_after(CEILING):
        async with open_cluster_harness(nursery, tmp_path, pg_database, own_nats.url) as cluster:
            node = await cluster.start_node(nats_prefix=prefix)
            async with httpx.AsyncClient(base_url=node.api_url, timeout=20) as client:
                http = Http()
                http.clients[node.name] = client
                (_, b), _ = await users_in_workspace(cluster, http, 2)
            events = node.info.events
            assert events is not None
            bus = events.router._bus
            own_nats.stop()
            await bus.wait_state(BusState.RECONNECTING)
            hub = node.info.system.users
            # The stream's arrival step: its routing retries the subscribe while NATS is
            # down; the stream goes (cancelled) before it attaches.
            with trio.move_on_after(0.5) as arrival:
                await hub.arriving(b.id)
            assert arrival.cancelled_caught
            await trio.testing.wait_all_tasks_blocked()
            assert events.routing_tasks == 0
            own_nats.start()
            await bus.wait_state(BusState.CONNECTED)


async def test_a_chat_created_while_nats_is_down_reaches_its_member_once_it_is_back(
    nursery: trio.Nursery, tmp_path: Path, pg_database: str, own_nats: NatsServer
) -> None:
    """``chat.created`` is the chat's event 1 in the outbox, written with the chat: a chat
    created while NATS is down (201: storage has it) reaches a member who is streaming
    once NATS is back — first its ``chat.created``, then its messages, each once."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    with trio.fail_after(CEILING):
        async with open_cluster_harness(nursery, tmp_path, pg_database, own_nats.url) as cluster:
            node = await cluster.start_node(nats_prefix=prefix)
            async with httpx.AsyncClient(base_url=node.api_url, timeout=20) as client:
                http = Http()
                http.clients[node.name] = client
                (a, b, c), ws = await users_in_workspace(cluster, http, 3)
                b_sse = await SseClient.connect(rt(node), b.api.token)
                assert (await b_sse.next_event()).event == "ready"
                events = node.info.events
                assert events is not None
                bus = events.router._bus
                own_nats.stop()
                await bus.wait_state(BusState.RECONNECTING)
                chat = await create_group(http.on(a, node), ws, [b, c])
                sent = await send(http.on(a, node), chat, "written while NATS was down")
                own_nats.start()
                await bus.wait_state(BusState.CONNECTED)
                created = await next_chat_event(b_sse)
                assert (created.event, created.data["id"]) == ("chat.created", chat)
                got = await next_chat_event(b_sse)
                assert (got.event, got.data["id"]) == ("message.created", sent["id"])
                marker = await send(http.on(a, node), chat, "marker")
                got = await next_chat_event(b_sse)  # no duplicate in between
                assert (got.event, got.data["id"]) == ("message.created", marker["id"])
                await b_sse.aclose()
