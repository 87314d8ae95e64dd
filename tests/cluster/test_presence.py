"""Presence, online users and typing across nodes, and the per-node share of the write limit
(docs/cluster.md §6, §8 "Built: C2 and B5"). Real PostgreSQL (embedded) and real NATS; three
nodes in this one process (``ClusterHarness``); real SSE clients."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from fechatter.ratelimit import rate_share
from tests.cluster.harness import ClusterHarness, open_cluster_harness, wait_nodes
from tests.cluster.test_cross_node_events import (
    Http,
    create_group,
    send,
    sse_ready,
    users_in_workspace,
)
from tests.cluster.test_cross_node_events import http as http  # the fixture, re-exported
from tests.conftest import Api
from tests.nats import NatsServer
from tests.realtime.clients import SseClient

START_CEILING = 30.0  # three nodes: storage, NATS, registration each
TEST_CEILING = 60.0  # the traffic of one test on 2 shared cores
DEAD_NODE_CEILING = 90.0  # + the node TTL (5 s), the grace and a reap
GRACE = 0.3  # presence_grace here: offline 0.3 s after the last stream (no flap test here)
SEND_BURST = 6  # per user, cluster-wide: 2 per node with three nodes
SEND_RATE = 0.01  # tokens/s: nothing refills within a test


@pytest.fixture
async def cluster(
    nursery: trio.Nursery, tmp_path: Path, pg_database: str, nats_server: NatsServer
) -> AsyncIterator[ClusterHarness]:
    # The NATS server is shared by the session: a prefix (and so a stream) of this test's own.
    prefix = f"t{uuid.uuid4().hex[:10]}"
    async with open_cluster_harness(nursery, tmp_path, pg_database, nats_server.url) as harness:
        with trio.fail_after(START_CEILING):
            for _ in range(3):
                await harness.start_node(
                    nats_prefix=prefix,
                    presence_grace=GRACE,
                    send_burst=SEND_BURST,
                    send_rate=SEND_RATE,
                )
        yield harness


async def online(api: Api, **query: int) -> list[int]:
    r = await api.get("/api/online-users", params=query)
    assert r.status_code == 200, r.text
    ids: list[int] = r.json()["user_ids"]
    return ids


async def next_presence(client: SseClient) -> dict[str, Any]:
    event = await client.next_of("presence")
    data: dict[str, Any] = event.data
    return data


async def test_online_users_asked_on_any_node_lists_a_user_streaming_on_another(
    cluster: ClusterHarness, http: Http
) -> None:
    n1, n2, n3 = cluster.nodes
    with trio.fail_after(TEST_CEILING):
        (a, b, c), ws = await users_in_workspace(cluster, http, 3)
        chat = await create_group(http.on(a, n1), ws, [b, c])
        assert await online(http.on(b, n2), chat_id=chat) == []
        a_sse = await sse_ready(n1, a)  # routed and recorded before ready
        assert await online(http.on(b, n2), chat_id=chat) == [a.id]
        assert await online(http.on(c, n3), workspace_id=ws) == [a.id]
        c_sse = await sse_ready(n3, c)
        assert await online(http.on(b, n2), chat_id=chat) == [a.id, c.id]  # members' order
        assert await online(http.on(a, n1), workspace_id=ws) == [a.id, c.id]
        await a_sse.aclose()
        await c_sse.aclose()


async def test_a_co_member_on_another_node_gets_online_then_offline_after_the_grace(
    cluster: ClusterHarness, http: Http
) -> None:
    n1, n2, n3 = cluster.nodes
    with trio.fail_after(TEST_CEILING):
        (a, b, c), ws = await users_in_workspace(cluster, http, 3)
        chat = await create_group(http.on(a, n1), ws, [b, c])
        b_sse = await sse_ready(n3, b)
        a_sse = await sse_ready(n1, a)
        assert await next_presence(b_sse) == {"user_id": a.id, "status": "online"}
        await a_sse.aclose()
        # Offline comes from node 1 once the grace has passed without a stream there.
        assert await next_presence(b_sse) == {"user_id": a.id, "status": "offline"}
        assert await online(http.on(b, n2), chat_id=chat) == [b.id]
        # Back on another node: online again, once (the sentinel after it proves no repeat).
        a_again = await sse_ready(n2, a)
        assert await next_presence(b_sse) == {"user_id": a.id, "status": "online"}
        await a_again.aclose()
        assert await next_presence(b_sse) == {"user_id": a.id, "status": "offline"}
        await b_sse.aclose()


async def test_a_dead_nodes_users_go_offline_for_the_others(
    cluster: ClusterHarness, http: Http
) -> None:
    n1, n2, n3 = cluster.nodes
    with trio.fail_after(DEAD_NODE_CEILING):
        (a, b, c), ws = await users_in_workspace(cluster, http, 3)
        chat = await create_group(http.on(a, n1), ws, [b, c])
        b_sse = await sse_ready(n3, b)
        a_sse = await sse_ready(n1, a)
        assert await next_presence(b_sse) == {"user_id": a.id, "status": "online"}
        # Node 1 hangs: no more beats, no release; its stream of a stays open.
        n1.cluster.halt_heartbeat()
        assert await next_presence(b_sse) == {"user_id": a.id, "status": "offline"}
        assert await online(http.on(b, n2), chat_id=chat) == [b.id]
        await a_sse.aclose()
        await b_sse.aclose()


async def test_typing_through_one_node_reaches_members_on_others_but_not_the_typist(
    cluster: ClusterHarness, http: Http
) -> None:
    n1, n2, n3 = cluster.nodes
    with trio.fail_after(TEST_CEILING):
        (a, b, c), ws = await users_in_workspace(cluster, http, 3)
        chat = await create_group(http.on(b, n2), ws, [a, c])
        await send(http.on(b, n2), chat, "hello")
        assert n2.info.system.directory.is_running(chat)  # owned by node 2
        a_sse = await sse_ready(n3, a)  # the typist streams on the same node as c
        b_sse = await sse_ready(n2, b)  # on the owner's node: typing comes back over NATS
        c_sse = await sse_ready(n3, c)
        r = await http.on(a, n1).post(f"/api/chats/{chat}/typing")
        assert r.status_code == 204, r.text
        expected = {"chat_id": chat, "user_id": a.id}
        for client in (c_sse, b_sse):
            typing = await client.next_of("typing")
            assert typing.data == expected
        # c types next (through node 3): the same owner publishes both in order on the same
        # subject, so a's first typing event being c's proves a never got their own.
        r = await http.on(c, n3).post(f"/api/chats/{chat}/typing")
        assert r.status_code == 204, r.text
        typing = await a_sse.next_of("typing")
        assert typing.data == {"chat_id": chat, "user_id": c.id}
        typing = await b_sse.next_of("typing")
        assert typing.data == {"chat_id": chat, "user_id": c.id}
        for client in (a_sse, b_sse, c_sse):
            await client.aclose()


async def test_each_node_enforces_its_share_of_the_per_user_write_limit(
    cluster: ClusterHarness, http: Http
) -> None:
    n1, n2, n3 = cluster.nodes
    with trio.fail_after(TEST_CEILING):
        everyone = {n.node_id for n in cluster.nodes}
        for node in cluster.nodes:
            await wait_nodes(node, everyone)
        _, share = rate_share(SEND_RATE, SEND_BURST, 3)
        assert share == 2
        (a, b, c), ws = await users_in_workspace(cluster, http, 3)
        chat = await create_group(http.on(a, n1), ws, [b, c])
        for node in (n1, n2):
            for k in range(share):
                await send(http.on(a, node), chat, f"{node.name}-{k}")
            r = await http.on(a, node).post(
                f"/api/chats/{chat}/messages", json={"content": "one too many"}
            )
            assert r.status_code == 429, r.text
            assert r.json()["code"] == "rate_limited"
            assert int(r.headers["Retry-After"]) >= 1
        # The share is per user: b still has node 3's whole share.
        await send(http.on(b, n3), chat, "b's first")


def test_the_share_splits_the_rate_exactly_and_rounds_the_burst_up() -> None:
    assert rate_share(20.0, 40, 3) == (20.0 / 3, 14)
    assert rate_share(1.0, 1, 4) == (0.25, 1)  # every node admits at least one
    assert rate_share(20.0, 40, 0) == (20.0, 40)  # no live list yet: the whole limit


async def test_each_node_enforces_its_share_of_the_sign_in_throttle(
    cluster: ClusterHarness, http: Http
) -> None:
    """The per-account sign-in throttle (10 failures by default) is shared like the write
    limit: 4 per node with 3 live nodes, so guesses spread over every node add up to 12 —
    not 10 per node (30), which the throttle alone would allow."""
    with trio.fail_after(TEST_CEILING):
        everyone = {n.node_id for n in cluster.nodes}
        for node in cluster.nodes:
            await wait_nodes(node, everyone)
        (a,), _ = await users_in_workspace(cluster, http, 1)
        wrong = {"email": a.email, "password": "not the password"}
        for node in cluster.nodes:
            client = http.clients[node.name]
            codes = [(await client.post("/api/auth/signin", json=wrong)).status_code]
            codes += [
                (await client.post("/api/auth/signin", json=wrong)).status_code for _ in range(4)
            ]
            assert codes == [401] * 4 + [429], node.name
