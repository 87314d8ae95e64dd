"""A node's graceful leave, in one process (docs/cluster.md §10 "Built: graceful leave";
SPEC §10): its streams close with the reconnect hint (WebSocket 1012 "service restart"; SSE
a ``retry:`` field, then the end), its row ends at once so another node takes its chats
without waiting for the lease to expire, and a command forwarded to it while it leaves is
held, then refused retryably and served by the new owner. Real PostgreSQL and NATS; two
nodes as ``serve()`` calls (``ClusterHarness``). The same with real processes and SIGTERM
mid-traffic: ``test_leave_procs.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import trio

from fechatter.cluster.router import ChatRouter
from fechatter.realtime.sse import RETRY_MIN_MS, RETRY_SPREAD_MS
from tests.cluster.harness import ClusterHarness, RunningNode, open_cluster_harness
from tests.conftest import Api, User, make_workspace
from tests.nats import NatsServer
from tests.realtime.clients import RawWs, SseClient

START_CEILING = 30.0
TEST_CEILING = 60.0


@pytest.fixture
async def cluster(
    nursery: trio.Nursery, tmp_path: Path, pg_database: str, nats_server: NatsServer
) -> AsyncIterator[ClusterHarness]:
    async with open_cluster_harness(nursery, tmp_path, pg_database, nats_server.url) as harness:
        with trio.fail_after(START_CEILING):
            for _ in range(2):
                await harness.start_node()
        yield harness


def _admin(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


async def lease(url: str, chat: int) -> tuple[str, int]:
    rows = await trio.to_thread.run_sync(
        _admin, url, "SELECT node_id, epoch FROM chat_leases WHERE chat_id = %s", chat
    )
    assert len(rows) == 1, rows
    return str(rows[0][0]), int(rows[0][1])


def router(node: RunningNode) -> ChatRouter:
    assert node.info.router is not None
    return node.info.router


async def events_to_eof(sse: SseClient) -> list[str]:
    """The names of the events left on ``sse`` until it ends."""
    names = []
    while True:
        try:
            names.append((await sse.next_event()).event)
        except EOFError:
            return names


async def setup(
    stack: AsyncExitStack, cluster: ClusterHarness
) -> tuple[dict[str, httpx.AsyncClient], User, User, int]:
    """Two users (of three), a group chat of them owned by node 1 (its first send took the
    lease)."""
    http = {
        n.name: await stack.enter_async_context(httpx.AsyncClient(base_url=n.api_url, timeout=20))
        for n in cluster.nodes
    }
    n1 = cluster.nodes[0]
    anon = Api(http[n1.name])
    a, b, c = await anon.signup(), await anon.signup(), await anon.signup()
    ws = await make_workspace(a, b, c)
    body = {"workspace_id": ws, "type": "Group", "members": [b.id, c.id]}
    r = await a.api.post("/api/chats", json=body)
    assert r.status_code == 201, r.text
    chat = int(r.json()["id"])
    r = await Api(http[n1.name], a.api.token).post(
        f"/api/chats/{chat}/messages", json={"content": "first", "client_id": "first"}
    )
    assert r.status_code == 201, r.text
    assert (await lease(cluster.database_url, chat))[0] == n1.node_id
    return http, a, b, chat


async def test_a_leaving_node_closes_its_streams_with_the_hint_and_its_chats_move_at_once(
    cluster: ClusterHarness,
) -> None:
    n1, n2 = cluster.nodes
    with trio.fail_after(TEST_CEILING):
        async with AsyncExitStack() as stack:
            http, a, b, chat = await setup(stack, cluster)
            rt1 = n1.info.realtime_url
            sse = await SseClient.connect(rt1, b.api.token)
            ws = await RawWs.connect(rt1, b.api.token)
            stack.push_async_callback(sse.aclose)
            stack.push_async_callback(ws.aclose)
            assert (await sse.next_event()).event == "ready"
            assert (await ws.next_message())["event"] == "ready"
            r = await Api(http[n1.name], a.api.token).post(
                f"/api/chats/{chat}/messages", json={"content": "before", "client_id": "before"}
            )
            assert r.status_code == 201, r.text
            before = r.json()
            seen_sse = await sse.next_of("message.created")
            seen_ws = await ws.next_message()
            while seen_ws["event"] != "message.created":
                seen_ws = await ws.next_message()
            assert seen_sse.data["id"] == seen_ws["data"]["id"] == before["id"]
            assert seen_sse.id is not None

            await n1.stop()
            stopped = trio.current_time()
            # SSE: a retry field, then the end of the stream; WebSocket: close 1012.
            await events_to_eof(sse)
            assert sse.buffer == b""  # the retry block was the last bytes
            assert sse.retry is not None
            assert RETRY_MIN_MS <= sse.retry < RETRY_MIN_MS + RETRY_SPREAD_MS
            assert await ws.until_closed() == []
            assert ws.closed is not None
            assert (ws.closed.code, ws.closed.reason) == (1012, "service restart")

            # Its row ended when it left (not left to expire): the lease is takeable now.
            (row,) = await trio.to_thread.run_sync(
                _admin,
                cluster.database_url,
                "SELECT expires_at <= now(), draining FROM cluster_nodes WHERE node_id = %s",
                n1.node_id,
            )
            assert row == (True, True)
            r = await Api(http[n2.name], a.api.token).post(
                f"/api/chats/{chat}/messages", json={"content": "after", "client_id": "after"}
            )
            taken = trio.current_time()
            assert r.status_code == 201, r.text
            after = r.json()
            assert after["seq"] == before["seq"] + 1
            assert await lease(cluster.database_url, chat) == (n2.node_id, 2)

            # Both streams resume on the other node from their last id: exactly "after".
            rt2 = n2.info.realtime_url
            sse2 = await SseClient.connect(rt2, b.api.token, last_event_id=seen_sse.id)
            stack.push_async_callback(sse2.aclose)
            ws2 = await RawWs.connect(rt2, b.api.token, last_event_id=seen_ws["id"])
            stack.push_async_callback(ws2.aclose)
            assert (await sse2.next_event()).event == "ready"
            assert (await ws2.next_message())["event"] == "ready"
            event = await sse2.next_event()
            assert (event.event, event.data["id"]) == ("message.created", after["id"])
            frame = await ws2.next_message()
            assert (frame["event"], frame["data"]["id"]) == ("message.created", after["id"])
    print(f"\ngraceful leave in one process: a send through the other node {taken - stopped:.3f} s")


async def test_a_command_forwarded_to_a_leaving_node_is_held_then_served_by_the_new_owner(
    cluster: ClusterHarness,
) -> None:
    n1, n2 = cluster.nodes
    with trio.fail_after(TEST_CEILING):
        async with AsyncExitStack() as stack:
            http, a, _, chat = await setup(stack, cluster)
            # n2 forwards to the owner (n1), which has begun to leave: its inbox holds the
            # command until its row is ended, then answers chat_moved; n2 takes the chat.
            await router(n1).begin_leave()
            answers: list[httpx.Response] = []

            async def send() -> None:
                answers.append(
                    await Api(http[n2.name], a.api.token).post(
                        f"/api/chats/{chat}/messages", json={"content": "held", "client_id": "h"}
                    )
                )

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                await router(n1).wait_held(1)
                assert not answers
                await n1.stop()
            (r,) = answers
            assert r.status_code == 201, r.text
            assert r.json()["seq"] == 2
            assert await lease(cluster.database_url, chat) == (n2.node_id, 2)
            r = await Api(http[n2.name], a.api.token).get(f"/api/chats/{chat}/messages")
            assert [m["client_id"] for m in reversed(r.json()["items"])] == ["first", "h"]
