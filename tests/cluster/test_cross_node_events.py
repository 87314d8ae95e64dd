"""Events cross nodes (docs/cluster.md §4, §8 "Built: event wiring"): a chat's owner writes
its events to the outbox, its node's publisher stores them in JetStream, and every node with
a stream of a member delivers them. Real PostgreSQL (embedded) and real NATS; three nodes in
this one process (``ClusterHarness``); real SSE and WebSocket clients."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import trio

from tests.cluster.harness import ClusterHarness, RunningNode, open_cluster_harness
from tests.conftest import Api, User, make_workspace
from tests.nats import NatsServer
from tests.realtime.clients import RawWs, Received, SseClient

START_CEILING = 30.0  # three nodes: storage, NATS, registration each
TEST_CEILING = 60.0  # the traffic of one test on 2 shared cores
CHAT_EVENTS = (
    "message.created",
    "message.updated",
    "message.deleted",
    "reaction.added",
    "reaction.removed",
    "chat.created",
    "chat.updated",
    "chat.deleted",
    "chat.member_added",
    "chat.member_removed",
    "chat.member_updated",
    "read",
)


@pytest.fixture
async def cluster(
    nursery: trio.Nursery, tmp_path: Path, pg_database: str, nats_server: NatsServer
) -> AsyncIterator[ClusterHarness]:
    # The NATS server is shared by the session and chat ids restart with each database: a
    # prefix (and so a stream) of this test's own.
    prefix = f"t{uuid.uuid4().hex[:10]}"
    async with open_cluster_harness(nursery, tmp_path, pg_database, nats_server.url) as harness:
        with trio.fail_after(START_CEILING):
            for _ in range(3):
                await harness.start_node(nats_prefix=prefix)
        yield harness


class Http:
    """One HTTP client per node; ``on(user, node)`` acts as ``user`` through ``node``."""

    def __init__(self) -> None:
        self.clients: dict[str, httpx.AsyncClient] = {}

    def on(self, user: User, node: RunningNode) -> Api:
        return Api(self.clients[node.name], user.api.token)


@pytest.fixture
async def http(cluster: ClusterHarness) -> AsyncIterator[Http]:
    async with AsyncExitStack() as stack:
        h = Http()
        for node in cluster.nodes:
            h.clients[node.name] = await stack.enter_async_context(
                httpx.AsyncClient(base_url=node.api_url, timeout=20)
            )
        yield h


def rt(node: RunningNode) -> str:
    return node.info.realtime_url


async def users_in_workspace(cluster: ClusterHarness, http: Http, n: int) -> tuple[list[User], int]:
    anon = Api(http.clients[cluster.nodes[0].name])
    users = [await anon.signup() for _ in range(n)]
    return users, await make_workspace(users[0], *users[1:])


async def create_group(api: Api, ws: int, members: list[User]) -> int:
    r = await api.post(
        "/api/chats",
        json={"workspace_id": ws, "type": "Group", "members": [u.id for u in members]},
    )
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


async def send(api: Api, chat_id: int, content: str) -> dict[str, Any]:
    r = await api.post(f"/api/chats/{chat_id}/messages", json={"content": content})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def sse_ready(node: RunningNode, user: User) -> SseClient:
    """An SSE stream of ``user`` on ``node``, past its ``ready`` (routing is live then)."""
    client = await SseClient.connect(rt(node), user.api.token)
    assert (await client.next_event()).event == "ready"
    return client


async def next_chat_event(client: SseClient) -> Received:
    return await client.next_of(*CHAT_EVENTS)


async def ws_next_chat_event(ws: RawWs) -> dict[str, Any]:
    while True:
        frame = await ws.next_message()
        if isinstance(frame, dict) and frame.get("event") in CHAT_EVENTS:
            return frame


async def test_every_message_crosses_once_in_seq_order_to_streams_on_other_nodes(
    cluster: ClusterHarness, http: Http
) -> None:
    n1, n2, n3 = cluster.nodes
    with trio.fail_after(TEST_CEILING):
        (a, b, c), ws = await users_in_workspace(cluster, http, 3)
        # b's stream opens before the chat exists: chat.created is announced to b's node.
        b_sse = await sse_ready(n2, b)
        chat = await create_group(http.on(a, n1), ws, [b, c])
        created = await next_chat_event(b_sse)
        assert (created.event, created.data["id"]) == ("chat.created", chat)
        # c's stream opens after: its node routes the chat from c's chats in storage.
        c_ws = await RawWs.connect(rt(n3), c.api.token)
        assert (await c_ws.next_message())["event"] == "ready"
        sent = [await send(http.on(a, n1), chat, f"m{k}") for k in range(12)]
        assert [m["seq"] for m in sent] == list(range(1, 13))
        assert n1.info.system.directory.is_running(chat)  # owned by node 1
        got_b = [await next_chat_event(b_sse) for _ in sent]
        got_c = [await ws_next_chat_event(c_ws) for _ in sent]
        assert [(e.event, e.data["seq"]) for e in got_b] == [
            ("message.created", k) for k in range(1, 13)
        ]
        assert [(e["event"], e["data"]["seq"]) for e in got_c] == [
            ("message.created", k) for k in range(1, 13)
        ]
        # Edits, reactions and deletes cross too, in order, each once (sent via node 3,
        # forwarded to the owner).
        first = sent[0]["id"]
        via = http.on(a, n3)
        r = await via.patch(f"/api/chats/{chat}/messages/{first}", json={"content": "edited"})
        assert r.status_code == 200, r.text
        react = f"/api/chats/{chat}/messages/{first}/reactions/{quote('👍', safe='')}"
        assert (await via.put(react)).status_code in (200, 201, 204)
        assert (await via.delete(f"/api/chats/{chat}/messages/{sent[1]['id']}")).status_code in (
            200,
            204,
        )
        marker = await send(via, chat, "marker")
        expected = [
            ("message.updated", first),
            ("reaction.added", first),
            ("message.deleted", sent[1]["id"]),
            ("message.created", marker["id"]),
        ]
        tail_b = [await next_chat_event(b_sse) for _ in expected]
        tail_c = [await ws_next_chat_event(c_ws) for _ in expected]
        assert [(e.event, e.data.get("message_id", e.data.get("id"))) for e in tail_b] == expected
        assert [
            (e["event"], e["data"].get("message_id", e["data"].get("id"))) for e in tail_c
        ] == expected
        assert tail_b[0].data["content"] == "edited"
        # Exactly once: a sentinel is the very next chat event (a trailing duplicate of any
        # event above would come first and fail here).
        sentinel = await send(http.on(a, n1), chat, "sentinel")
        next_b = await next_chat_event(b_sse)
        next_c = await ws_next_chat_event(c_ws)
        assert (next_b.event, next_b.data["id"]) == ("message.created", sentinel["id"])
        assert (next_c["event"], next_c["data"]["id"]) == ("message.created", sentinel["id"])
        await b_sse.aclose()
        await c_ws.aclose()


async def test_removed_member_stops_receiving_and_added_member_starts(
    cluster: ClusterHarness, http: Http
) -> None:
    n1, n2, n3 = cluster.nodes
    with trio.fail_after(TEST_CEILING):
        (a, b, e, d), ws = await users_in_workspace(cluster, http, 4)
        chat = await create_group(http.on(a, n1), ws, [b, e])
        other = await create_group(http.on(a, n1), ws, [b, e])  # b's marker chat
        await send(http.on(a, n1), chat, "before")  # node 1 owns the chat
        b_sse = await sse_ready(n2, b)
        d_sse = await sse_ready(n3, d)
        assert n3.info.events is not None
        assert chat not in n3.info.events.router.subscriptions  # no member of it on node 3
        r = await http.on(a, n1).delete(f"/api/chats/{chat}/members/{b.id}")
        assert r.status_code == 204, r.text
        removed = await next_chat_event(b_sse)
        assert (removed.event, removed.data["user_id"]) == ("chat.member_removed", b.id)
        # d, with no stream of a member on node 3, is added: node 3 learns it from the notice.
        r = await http.on(a, n1).post(f"/api/chats/{chat}/members", json={"user_ids": [d.id]})
        assert r.status_code in (200, 201), r.text
        added = await next_chat_event(d_sse)
        assert (added.event, added.data["user_ids"]) == ("chat.member_added", [d.id])
        after = await send(http.on(a, n1), chat, "after")
        got = await next_chat_event(d_sse)
        assert (got.event, got.data["id"]) == ("message.created", after["id"])
        # b gets nothing more of the chat: the next event b sees is the marker chat's.
        marker = await send(http.on(a, n1), other, "marker")
        seen = await next_chat_event(b_sse)
        assert (seen.event, seen.data["chat_id"], seen.data["id"]) == (
            "message.created",
            other,
            marker["id"],
        )
        # Node 2 has no local member of the chat left: it dropped the chat's subscription.
        assert n2.info.events is not None
        assert chat not in n2.info.events.router.chats_of(b.id)
        assert chat not in n2.info.events.router.subscriptions
        assert chat in n3.info.events.router.subscriptions
        await b_sse.aclose()
        await d_sse.aclose()


async def test_two_members_on_different_nodes_both_receive(
    cluster: ClusterHarness, http: Http
) -> None:
    n1, n2, n3 = cluster.nodes
    with trio.fail_after(TEST_CEILING):
        (a, b, c), ws = await users_in_workspace(cluster, http, 3)
        chat = await create_group(http.on(a, n3), ws, [b, c])
        await send(http.on(a, n3), chat, "owned by node 3")
        b_sse = await sse_ready(n2, b)
        c_sse = await sse_ready(n1, c)
        sent = await send(http.on(b, n1), chat, "hello")  # through node 1, owner node 3
        for client in (b_sse, c_sse):
            got = await next_chat_event(client)
            assert (got.event, got.data["id"]) == ("message.created", sent["id"])
        assert n3.info.system.directory.is_running(chat)
        await b_sse.aclose()
        await c_sse.aclose()


async def test_resume_on_another_node_gets_what_was_missed(
    cluster: ClusterHarness, http: Http
) -> None:
    """C3: ids are stream sequences, valid on every node: a reconnect to another node with
    node 2's id gets the event missed while away, once, and no ``resync``."""
    n1, n2, n3 = cluster.nodes
    with trio.fail_after(TEST_CEILING):
        (a, b, c), ws = await users_in_workspace(cluster, http, 3)
        chat = await create_group(http.on(a, n1), ws, [b, c])
        b_sse = await sse_ready(n2, b)
        sent = await send(http.on(a, n1), chat, "seen on node 2")
        got = await next_chat_event(b_sse)
        assert got.data["id"] == sent["id"]
        assert got.id
        await b_sse.aclose()
        missed = await send(http.on(a, n1), chat, "missed while away")
        again = await SseClient.connect(rt(n3), b.api.token, last_event_id=got.id)
        assert (await again.next_event()).event == "ready"
        replayed = await again.next_event()
        assert (replayed.event, replayed.data["id"]) == ("message.created", missed["id"])
        await again.aclose()
