"""Node roles (docs/cluster.md §1, §3): an ``api`` node serves the HTTP API and owns chats,
with no stream listener; a ``realtime`` node serves only streams (its API port answers the
operational routes) and never takes a chat lease: its WebSocket ``send`` goes to the chat's
owner, or to ``<prefix>.cmd.any`` when the chat has no live owner. Real PostgreSQL and NATS,
both nodes in this one process (``ClusterHarness``), real HTTP and WebSocket clients."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from fechatter.actors.commands import Typing
from fechatter.errors import Unavailable
from tests.cluster.harness import ClusterHarness, RunningNode, open_cluster_harness, wait_nodes
from tests.conftest import Api, User, make_workspace
from tests.nats import NatsServer
from tests.pg import PgServer, free_port
from tests.realtime.clients import RawWs, SseClient

START_CEILING = 30.0
TEST_CEILING = 60.0


@pytest.fixture
async def cluster(
    nursery: trio.Nursery, tmp_path: Path, pg_database: str, nats_server: NatsServer
) -> AsyncIterator[ClusterHarness]:
    prefix = f"t{uuid.uuid4().hex[:10]}"  # the NATS server is shared by the session
    async with open_cluster_harness(nursery, tmp_path, pg_database, nats_server.url) as harness:
        with trio.fail_after(START_CEILING):
            api = await harness.start_node(nats_prefix=prefix, role="api")
            rt = await harness.start_node(nats_prefix=prefix, role="realtime")
            ids = {api.node_id, rt.node_id}
            await wait_nodes(api, ids)
            await wait_nodes(rt, ids)
        yield harness


def lease_holders(pg_server: PgServer, database_url: str, chat_id: int) -> list[tuple[str, int]]:
    """Every ``chat_leases`` row of ``chat_id`` as (node_id, epoch)."""
    with pg_server.connect(database_url.rsplit("/", 1)[1]) as conn:
        rows = conn.execute(
            "SELECT node_id, epoch FROM chat_leases WHERE chat_id = %s", (chat_id,)
        ).fetchall()
    return [(str(r[0]), int(r[1])) for r in rows]


async def group_of_three(node: RunningNode) -> tuple[User, User, int]:
    """Three users signed up through ``node`` and a Group chat of them: (a, b, chat id)."""
    async with httpx.AsyncClient(base_url=node.api_url, timeout=20) as client:
        anon = Api(client)
        a, b, c = await anon.signup(), await anon.signup(), await anon.signup()
        ws_id = await make_workspace(a, b, c)
        members = [b.id, c.id]
        r = await a.api.post(
            "/api/chats", json={"workspace_id": ws_id, "type": "Group", "members": members}
        )
        assert r.status_code == 201, r.text
        return a, b, int(r.json()["id"])


async def ws_send(ws: RawWs, chat_id: int, content: str, client_id: str) -> dict[str, Any]:
    """A WebSocket ``send`` op; returns its ``ack`` frame's data (other frames skipped)."""
    op = {"op": "send", "chat_id": chat_id, "content": content, "client_id": client_id}
    await ws.send_text(json.dumps(op))
    while True:
        frame = await ws.next_message()
        assert frame.get("event") != "error", frame
        if frame.get("event") == "ack":
            data: dict[str, Any] = frame["data"]
            return data


async def test_a_send_through_a_realtime_node_runs_at_an_api_node(
    cluster: ClusterHarness, pg_server: PgServer
) -> None:
    api_node, rt_node = cluster.nodes
    assert rt_node.info.router is not None
    assert api_node.info.router is not None
    with trio.fail_after(TEST_CEILING):
        a, b, chat = await group_of_three(api_node)
        leases_before = await trio.to_thread.run_sync(
            lease_holders, pg_server, cluster.database_url, chat
        )
        b_sse = await SseClient.connect(rt_node.info.realtime_url, b.api.token)
        assert (await b_sse.next_event()).event == "ready"
        ws = await RawWs.connect(rt_node.info.realtime_url, a.api.token)
        assert (await ws.next_message())["event"] == "ready"
        acks = [await ws_send(ws, chat, f"m{k}", f"c{k}") for k in range(3)]
        assert [ack["message"]["seq"] for ack in acks] == [1, 2, 3]
        # The same client_id again: the original message, not a fourth one.
        again = await ws_send(ws, chat, "m0", "c0")
        assert again["message"]["id"] == acks[0]["message"]["id"]
        got = [await b_sse.next_of("message.created") for _ in acks]
        assert [(e.data["seq"], e.data["content"]) for e in got] == [
            (1, "m0"),
            (2, "m1"),
            (3, "m2"),
        ]
        await ws.aclose()
        await b_sse.aclose()
    # The chat is owned by the api node; the realtime node never held a lease or an actor.
    leases = await trio.to_thread.run_sync(lease_holders, pg_server, cluster.database_url, chat)
    assert leases == [(api_node.node_id, 1)]
    assert api_node.info.system.directory.is_running(chat)
    assert rt_node.info.system.directory.statistics().chat_actors == 0
    rt_router = rt_node.info.router
    assert rt_router.forwarded >= 4
    if not leases_before:  # the first send found no owner: it went through cmd.any
        assert rt_router.forwarded_any >= 1
        assert api_node.info.router.served_any >= 1
    # Later sends went straight to the owner's inbox (its lease was read and cached).
    assert rt_router.cached_owner(chat) is not None
    assert rt_router.cached_owner(chat).node_id == api_node.node_id  # type: ignore[union-attr]


async def test_a_chat_with_no_live_owner_is_taken_through_cmd_any(
    cluster: ClusterHarness, pg_server: PgServer
) -> None:
    """A lease held by a node that is gone: the realtime node does not take it; cmd.any
    reaches the api node, which takes the chat at the next epoch and runs the send."""
    api_node, rt_node = cluster.nodes
    assert rt_node.info.router is not None
    assert api_node.info.router is not None
    with trio.fail_after(TEST_CEILING):
        a, _, chat = await group_of_three(api_node)

        def orphan() -> None:  # a lease of a node that expired long ago
            with pg_server.connect(cluster.database_url.rsplit("/", 1)[1]) as conn:
                conn.execute(
                    "INSERT INTO cluster_nodes (node_id, role, protocol, expires_at)"
                    " VALUES ('gone.abc123', 'api', 1, now() - interval '1 minute')"
                )
                conn.execute(
                    "INSERT INTO chat_leases (chat_id, node_id, epoch)"
                    " VALUES (%s, 'gone.abc123', 7) ON CONFLICT (chat_id)"
                    " DO UPDATE SET node_id = 'gone.abc123', epoch = 7",
                    (chat,),
                )

        await trio.to_thread.run_sync(orphan)
        ws = await RawWs.connect(rt_node.info.realtime_url, a.api.token)
        assert (await ws.next_message())["event"] == "ready"
        any_before = rt_node.info.router.forwarded_any
        ack = await ws_send(ws, chat, "hello", "c-any")
        assert ack["message"]["seq"] == 1
        await ws.aclose()
    assert rt_node.info.router.forwarded_any == any_before + 1
    leases = await trio.to_thread.run_sync(lease_holders, pg_server, cluster.database_url, chat)
    assert leases == [(api_node.node_id, 8)]
    assert rt_node.info.system.directory.statistics().chat_actors == 0


async def test_the_realtime_node_serves_only_operations_on_its_api_port(
    cluster: ClusterHarness,
) -> None:
    _, rt_node = cluster.nodes
    with trio.fail_after(TEST_CEILING):
        async with httpx.AsyncClient(base_url=rt_node.api_url, timeout=20) as client:
            for path in ("/health", "/ready", "/metrics", "/api/sse/health"):
                assert (await client.get(path)).status_code == 200, path
            health = (await client.get("/api/sse/health")).json()
            assert health["node_id"] == rt_node.node_id
            r = await client.post("/api/signup", json={"email": "x@example.com"})
            assert r.status_code == 404
            assert r.headers["content-type"] == "application/problem+json"
            assert r.json()["code"] == "route_not_found"
            assert "role realtime" in r.json()["detail"]


async def test_the_api_node_has_no_stream_listener(cluster: ClusterHarness) -> None:
    api_node, _ = cluster.nodes
    assert api_node.info.realtime_url == ""
    port = free_port()
    with trio.fail_after(TEST_CEILING):
        other = await cluster.start_node(
            nats_prefix=f"t{uuid.uuid4().hex[:10]}", role="api", realtime_port=port
        )
        assert other.info.realtime_url == ""
        # Nothing listens on the stream port it was given.
        with pytest.raises(OSError, match="onnect"):
            await trio.open_tcp_stream("127.0.0.1", port)
        async with httpx.AsyncClient(base_url=other.api_url, timeout=20) as client:
            r = await client.get("/api/sse/health")
            assert r.json()["node_id"] == other.node_id


async def test_cmd_any_requests_waiting_for_a_takeover_do_not_block_the_inbox(
    nursery: trio.Nursery,
    tmp_path: Path,
    pg_database: str,
    nats_server: NatsServer,
    pg_server: PgServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Requests from ``cmd.any`` for a chat whose owner is live on paper but silent wait
    (up to their deadline) for the takeover. They must not take the slots of the inbox, or
    commands forwarded to the chats this node does own would wait behind them."""
    monkeypatch.setattr("fechatter.cluster.router.INBOX_CONCURRENCY", 2)
    prefix = f"t{uuid.uuid4().hex[:10]}"
    async with open_cluster_harness(nursery, tmp_path, pg_database, nats_server.url) as harness:
        with trio.fail_after(TEST_CEILING):
            api_node = await harness.start_node(nats_prefix=prefix, role="api")
            rt_node = await harness.start_node(nats_prefix=prefix, role="realtime")
            await wait_nodes(rt_node, {api_node.node_id, rt_node.node_id})
            a, _, stuck = await group_of_three(api_node)
            owner_user, _, owned = await group_of_three(api_node)
            rt_router, api_router = rt_node.info.router, api_node.info.router
            assert rt_router is not None
            assert api_router is not None
            await api_router.call(owned, Typing(owner_user.id))  # the api node owns it now

            def silent_owner() -> None:  # a live node row whose inbox nobody serves
                with pg_server.connect(harness.database_url.rsplit("/", 1)[1]) as conn:
                    conn.execute(
                        "INSERT INTO cluster_nodes (node_id, role, protocol, expires_at)"
                        " VALUES ('ghost.abc123', 'api', 1, now() + interval '10 minutes')"
                    )
                    conn.execute(
                        "INSERT INTO chat_leases (chat_id, node_id, epoch)"
                        " VALUES (%s, 'ghost.abc123', 1)",
                        (stuck,),
                    )

            await trio.to_thread.run_sync(silent_owner)
            waiting = 0

            async def wait_for_takeover() -> None:
                nonlocal waiting
                waiting += 1
                with suppress(Unavailable):
                    await rt_router.call(stuck, Typing(a.id))
                waiting -= 1

            async with trio.open_nursery() as calls:
                for _ in range(2):
                    calls.start_soon(wait_for_takeover)
                while api_router.served_any < 2:  # both taken from cmd.any, now waiting
                    await api_node.cluster.wait_changed()  # re-checked at each heartbeat
                # Forwarded to the api node's inbox: answered at once, not after they end.
                await rt_router.call(owned, Typing(owner_user.id))
                assert waiting == 2  # answered while the cmd.any requests still wait
                calls.cancel_scope.cancel()
