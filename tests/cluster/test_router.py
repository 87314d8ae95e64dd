"""One writer per chat across the cluster (docs/cluster.md §2, §3, plan step A4): commands
arriving at any node run at the chat's owner — its local fenced ChatActor, or forwarded over
NATS request/reply — and a moved chat is re-routed. Real PostgreSQL (embedded) and real NATS;
three nodes in this one process (``ClusterHarness``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
import pytest
import trio

from fechatter.actors.commands import SendMessage, Typing
from fechatter.cluster.router import ChatRouter
from fechatter.errors import ChatMoved
from fechatter.models import NewMessage
from tests.cluster.harness import ClusterHarness, RunningNode, open_cluster_harness
from tests.conftest import Api, User, make_workspace
from tests.nats import NatsServer

START_CEILING = 30.0  # three nodes: storage, NATS, registration each
TEST_CEILING = 60.0  # the traffic of one test on 2 shared cores


@pytest.fixture
async def cluster(
    nursery: trio.Nursery, tmp_path: Path, pg_database: str, nats_server: NatsServer
) -> AsyncIterator[ClusterHarness]:
    async with open_cluster_harness(nursery, tmp_path, pg_database, nats_server.url) as harness:
        with trio.fail_after(START_CEILING):
            for _ in range(3):
                # Each node enforces a third of the per-user write limit (api.md): these
                # tests are about ownership, so the limit is far above their bursts.
                await harness.start_node(send_burst=1000)
        yield harness


def _admin(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description is not None else []


def lease(url: str, chat_id: int) -> tuple[str, int]:
    rows = _admin(url, "SELECT node_id, epoch FROM chat_leases WHERE chat_id = %s", chat_id)
    assert len(rows) == 1, rows
    return str(rows[0][0]), int(rows[0][1])


def router(node: RunningNode) -> ChatRouter:
    assert node.info.router is not None
    return node.info.router


def running(cluster: ClusterHarness, chat_id: int) -> list[str]:
    """The names of the live nodes whose directory runs the chat's actor."""
    return [
        n.name
        for n in cluster.nodes
        if not n.stopped.is_set() and n.info.system.directory.is_running(chat_id)
    ]


class Clients:
    """One HTTP client per node; ``on(user, node)`` acts as ``user`` through ``node``."""

    def __init__(self, stack: AsyncExitStack, nodes: list[RunningNode]) -> None:
        self._stack = stack
        self._nodes = nodes
        self.http: dict[str, httpx.AsyncClient] = {}

    async def open(self) -> None:
        for node in self._nodes:
            self.http[node.name] = await self._stack.enter_async_context(
                httpx.AsyncClient(base_url=node.api_url, timeout=20)
            )

    def on(self, user: User, node: RunningNode) -> Api:
        return Api(self.http[node.name], user.api.token)


@pytest.fixture
async def clients(cluster: ClusterHarness) -> AsyncIterator[Clients]:
    async with AsyncExitStack() as stack:
        c = Clients(stack, cluster.nodes)
        await c.open()
        yield c


async def group_chat(
    cluster: ClusterHarness, clients: Clients, n_users: int = 3
) -> tuple[list[User], int]:
    """``n_users`` users (signed up on node 1) in a workspace and a Group chat of them all."""
    anon = Api(clients.http[cluster.nodes[0].name])
    users = [await anon.signup() for _ in range(n_users)]
    ws = await make_workspace(users[0], *users[1:])
    r = await users[0].api.post(
        "/api/chats",
        json={"workspace_id": ws, "type": "Group", "members": [u.id for u in users[1:]]},
    )
    assert r.status_code == 201, r.text
    return users, int(r.json()["id"])


async def messages(api: Api, chat_id: int) -> list[dict[str, Any]]:
    r = await api.get(f"/api/chats/{chat_id}/messages?limit=200")
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


async def send(api: Api, chat_id: int, content: str, client_id: str | None = None) -> Any:
    body: dict[str, Any] = {"content": content}
    if client_id is not None:
        body["client_id"] = client_id
    r = await api.post(f"/api/chats/{chat_id}/messages", json=body)
    assert r.status_code in (200, 201), r.text
    return r


async def test_concurrent_sends_through_three_nodes_have_one_writer(
    cluster: ClusterHarness, clients: Clients, pg_database: str
) -> None:
    nodes = cluster.nodes
    with trio.fail_after(TEST_CEILING):
        users, chat = await group_chat(cluster, clients)
        # 48 distinct (sender, client_id) pairs, each through node k % 3, and 12 repeats of
        # some of them through the next node: 60 concurrent sends, 48 messages.
        plan: list[tuple[User, RunningNode, str]] = []
        for k in range(48):
            plan.append((users[k % 3], nodes[k % 3], f"c{k}"))
        for k in range(0, 48, 4):
            plan.append((users[k % 3], nodes[(k + 1) % 3], f"c{k}"))
        answers: list[tuple[str, int, int]] = []  # (client_id, status, message id)

        async def one(user: User, node: RunningNode, client_id: str) -> None:
            r = await send(clients.on(user, node), chat, f"hi {client_id}", client_id)
            answers.append((f"{user.id}/{client_id}", r.status_code, r.json()["id"]))

        async with trio.open_nursery() as nursery:
            for user, node, client_id in plan:
                nursery.start_soon(one, user, node, client_id)

        statuses = Counter(status for _, status, _ in answers)
        assert statuses == {201: 48, 200: 12}
        ids_per_key: dict[str, set[int]] = {}
        for key, _, message_id in answers:
            ids_per_key.setdefault(key, set()).add(message_id)
        assert len(ids_per_key) == 48
        assert all(len(ids) == 1 for ids in ids_per_key.values())  # a repeat answers the original

        items = await messages(clients.on(users[0], nodes[2]), chat)
        assert sorted(m["seq"] for m in items) == list(range(1, 49))  # gapless, no duplicates
        assert len({m["id"] for m in items}) == 48
        keys = Counter(f"{m['sender_id']}/{m['client_id']}" for m in items)
        assert set(keys) == set(ids_per_key)
        assert set(keys.values()) == {1}

    # Exactly one node runs the chat's actor: the one holding the lease; the others forwarded.
    holders = running(cluster, chat)
    assert len(holders) == 1
    owner = next(n for n in nodes if n.name == holders[0])
    assert lease(pg_database, chat) == (owner.node_id, 1)
    for node in nodes:
        if node is not owner:
            assert router(node).forwarded >= 20
            cached = router(node).cached_owner(chat)
            assert cached is not None
            assert cached.node_id == owner.node_id
    assert router(owner).served >= 40
    assert owner.info.system.directory.statistics().restarts == 0


async def test_edits_reactions_and_membership_are_forwarded(
    cluster: ClusterHarness, clients: Clients, pg_database: str
) -> None:
    n1, n2, _ = cluster.nodes
    with trio.fail_after(TEST_CEILING):
        users, chat = await group_chat(cluster, clients, 4)
        a, b, c, d = users
        first = (await send(clients.on(a, n1), chat, "first", "f1")).json()
        assert running(cluster, chat) == ["n1"]
        before = router(n2).forwarded
        via = clients.on(a, n2)  # n2 does not own the chat: every command below crosses

        r = await via.patch(f"/api/chats/{chat}/messages/{first['id']}", json={"content": "ed"})
        assert r.status_code == 200, r.text
        assert r.json()["content"] == "ed"
        react = f"/api/chats/{chat}/messages/{first['id']}/reactions/{quote('👍', safe='')}"
        r = await clients.on(b, n2).put(react)
        assert r.status_code in (200, 201, 204), r.text
        r = await via.put(f"/api/chats/{chat}/members/{b.id}", json={"role": "admin"})
        assert r.status_code == 200, r.text
        assert r.json()["role"] == "admin"
        r = await via.delete(f"/api/chats/{chat}/members/{d.id}")
        assert r.status_code == 204, r.text
        r = await via.post(f"/api/chats/{chat}/members", json={"user_ids": [d.id]})
        assert r.status_code == 201, r.text
        assert [m["user_id"] for m in r.json()] == [d.id]
        # A domain error crosses too, as its own problem document.
        r = await clients.on(c, n2).delete(f"/api/chats/{chat}/messages/{first['id']}")
        assert r.status_code == 403, r.text

        assert router(n2).forwarded - before == 6
        assert running(cluster, chat) == ["n1"]
        got = (await via.get(f"/api/chats/{chat}/messages/{first['id']}")).json()
        assert got["content"] == "ed"
        assert [(x["emoji"], x["count"]) for x in got["reactions"]] == [("👍", 1)]
        members = (await via.get(f"/api/chats/{chat}/members")).json()
        roles = {m["user_id"]: m["role"] for m in members}
        assert roles[b.id] == "admin"
        assert d.id in roles
    assert lease(pg_database, chat) == (n1.node_id, 1)


async def test_owner_stopped_gracefully_is_taken_over_by_the_next_command(
    cluster: ClusterHarness, clients: Clients, pg_database: str
) -> None:
    n1, n2, n3 = cluster.nodes
    with trio.fail_after(TEST_CEILING):
        users, chat = await group_chat(cluster, clients)
        await send(clients.on(users[0], n1), chat, "one", "s1")
        await send(clients.on(users[1], n2), chat, "two", "s2")  # forwarded to n1
        assert lease(pg_database, chat) == (n1.node_id, 1)
        await n1.stop()
        # n2 still believes n1 owns it: its inbox is gone (no responders), the lease is
        # takeable at once (n1 released its row): n2 takes it at the next epoch.
        await send(clients.on(users[1], n2), chat, "three", "s3")
        assert lease(pg_database, chat) == (n2.node_id, 2)
        assert running(cluster, chat) == ["n2"]
        await send(clients.on(users[2], n3), chat, "four", "s4")  # n3 forwards to n2
        items = await messages(clients.on(users[2], n3), chat)
        assert sorted((m["seq"], m["content"]) for m in items) == [
            (1, "one"),
            (2, "two"),
            (3, "three"),
            (4, "four"),
        ]


async def test_a_fenced_stale_owner_writes_nothing_and_the_command_is_rerouted(
    cluster: ClusterHarness, clients: Clients, pg_database: str
) -> None:
    n1, n2, _ = cluster.nodes
    with trio.fail_after(TEST_CEILING):
        users, chat = await group_chat(cluster, clients)
        a = users[0]
        await send(clients.on(a, n1), chat, "one", "s1")
        assert running(cluster, chat) == ["n1"]
        # A takeover n1 did not see (as after a pause past its row's expiry): n2 at epoch 2.
        _admin(
            pg_database,
            "UPDATE chat_leases SET node_id = %s, epoch = epoch + 1 WHERE chat_id = %s",
            n2.node_id,
            chat,
        )
        directory = n1.info.system.directory
        restarts = directory.statistics().restarts
        published = n1.info.system.users.statistics().published
        # The stale actor is alive; its next write is refused by the fence and it retires.
        stale = SendMessage(NewMessage(a.id, "stale", (), None, "x1"))
        with pytest.raises(ChatMoved):
            await directory.call(chat, stale)
        assert not directory.is_running(chat)
        assert directory.statistics().restarts == restarts  # retired, not restarted
        assert n1.info.system.users.statistics().published == published  # persist, then push
        assert [m["content"] for m in await messages(clients.on(a, n2), chat)] == ["one"]

        # Through n1's API: its cache still names itself; the activation finds n2's lease,
        # so the command is forwarded there and succeeds, gapless.
        before = router(n1).forwarded
        r = await send(clients.on(a, n1), chat, "two", "s2")
        assert r.status_code == 201
        assert r.json()["seq"] == 2
        assert router(n1).forwarded == before + 1
        assert running(cluster, chat) == ["n2"]
        assert lease(pg_database, chat) == (n2.node_id, 2)
        items = await messages(clients.on(a, n1), chat)
        assert sorted((m["seq"], m["content"]) for m in items) == [(1, "one"), (2, "two")]


async def test_a_stale_actor_does_not_answer_typing_the_call_is_rerouted(
    cluster: ClusterHarness, clients: Clients, pg_database: str
) -> None:
    n1, n2, _ = cluster.nodes
    directory = n1.info.system.directory
    # Every typing command re-reads the lease (the default trusts a fence for 2 s).
    directory.config = replace(directory.config, lease_recheck=0.0)
    with trio.fail_after(TEST_CEILING):
        users, chat = await group_chat(cluster, clients)
        a = users[0]
        await send(clients.on(a, n1), chat, "one", "s1")
        assert running(cluster, chat) == ["n1"]
        _admin(
            pg_database,
            "UPDATE chat_leases SET node_id = %s, epoch = epoch + 1 WHERE chat_id = %s",
            n2.node_id,
            chat,
        )
        restarts = directory.statistics().restarts
        before = router(n1).forwarded
        # Typing never writes: the stale actor checks its lease, finds it moved and retires;
        # the call is forwarded to n2, which runs the chat from now on.
        r = await clients.on(a, n1).post(f"/api/chats/{chat}/typing")
        assert r.status_code == 204, r.text
        assert router(n1).forwarded == before + 1
        assert running(cluster, chat) == ["n2"]
        assert directory.statistics().restarts == restarts
        assert lease(pg_database, chat) == (n2.node_id, 2)


async def test_a_self_fenced_node_retires_its_actors(
    cluster: ClusterHarness, clients: Clients, pg_database: str
) -> None:
    n1 = cluster.nodes[0]
    directory = n1.info.system.directory
    with trio.fail_after(TEST_CEILING):
        users, chat = await group_chat(cluster, clients)
        a = users[0]
        await send(clients.on(a, n1), chat, "one", "s1")
        assert running(cluster, chat) == ["n1"]
        restarts = directory.statistics().restarts
        n1.cluster.halt_heartbeat()  # a hung node: its watchdog fences it
        while not n1.cluster.self_fenced:
            await n1.cluster.wait_changed()
        # Its lease is unchanged in the database, yet its actor must not answer any more.
        assert lease(pg_database, chat) == (n1.node_id, 1)
        with pytest.raises(ChatMoved):
            await directory.call(chat, Typing(a.id))
        assert not directory.is_running(chat)
        assert directory.statistics().restarts == restarts
