"""Cluster ownership in PostgreSQL (issue 12, docs/cluster.md §1, §2; plan steps A1, A2):
node heartbeats and expiry on the database clock, chat leases with a fencing epoch, and the
fence in front of every chat write of ``ChatStore``."""

from __future__ import annotations

import ast
import inspect
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio

import fechatter.actors.chat
from fechatter.errors import ChatMoved, Conflict, NotFound, Unavailable
from fechatter.models import ChatRecord, ChatType, Role, User
from fechatter.storage import chats
from fechatter.storage.cluster import (
    ACQUIRE_LOCK_TIMEOUT_MS,
    ChatStore,
    ClusterStore,
    Fence,
    Owner,
    try_acquire_chat,
)
from fechatter.storage.postgres import _InsertRequest, open_postgres_storage, run_op
from fechatter.storage.postgres_pool import PoolConfig, open_pg_pool
from tests.pg import PgServer, wait_until_blocked_by

from .factories import make_group, make_user, msg, send

FAST: dict[str, Any] = {
    "pool_size": 3,
    "acquire_timeout": 1.0,
    "connect_timeout": 2,
    "operation_timeout": 3.0,
}
TTL = 5.0
A, B = "node-a.aaaaaa", "node-b.bbbbbb"


def _admin(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description is not None else []


def _expire(url: str, node_id: str) -> None:
    """Make a node's row expired now, as if its beats had stopped ``TTL`` seconds ago."""
    _admin(
        url,
        "UPDATE cluster_nodes SET expires_at = now() - interval '1 second' WHERE node_id = %s",
        node_id,
    )


def _snapshot(url: str) -> dict[str, list[str]]:
    """Every row of every table (cluster_nodes aside: heartbeats are not chat writes)."""
    tables = [
        r[0]
        for r in _admin(
            url,
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = 'public' AND table_name <> 'cluster_nodes'",
        )
    ]
    return {
        t: sorted(r[0] for r in _admin(url, f"SELECT to_jsonb(x)::text FROM {t} x")) for t in tables
    }


async def _taken_over(url: str, cluster: ClusterStore, chat_id: int) -> tuple[Fence, Fence]:
    """A owns ``chat_id`` at epoch 1, expires, B takes it at epoch 2: (stale, current)."""
    assert await cluster.acquire_chat(chat_id, A) == Owner(A, 1)
    _expire(url, A)
    assert await cluster.acquire_chat(chat_id, B) == Owner(B, 2)
    return Fence(chat_id, A, 1), Fence(chat_id, B, 2)


# -- nodes ---------------------------------------------------------------------------------
async def test_nodes_register_beat_and_list(pg_database: str) -> None:
    async with open_postgres_storage(pg_database, **FAST) as storage:
        cluster = ClusterStore(storage)
        with trio.fail_after(20):
            await cluster.register_node(A, "all", TTL)
            await cluster.register_node(B, "realtime", TTL, nats_ok=False)
            nodes = await cluster.live_nodes()
            assert [(n.node_id, n.role, n.nats_ok, n.draining) for n in nodes] == [
                (A, "all", True, False),
                (B, "realtime", False, False),
            ]
            before = nodes[0].expires_at
            assert await cluster.heartbeat(A, TTL, nats_ok=False)
            (a, _) = await cluster.live_nodes()
            assert a.expires_at > before
            assert not a.nats_ok
            with pytest.raises(Conflict) as taken:
                await cluster.register_node(A, "all", TTL)
            assert taken.value.code == "node_id_taken"
            with pytest.raises(ValueError, match="role"):
                await cluster.register_node("x.1", "boss", TTL)  # type: ignore[arg-type]
            assert not await cluster.heartbeat("never-registered.0", TTL)


async def test_a_node_that_stops_beating_expires_on_the_database_clock(pg_database: str) -> None:
    """A short TTL elapses on the server's clock: the node leaves ``live_nodes``, its next
    beat answers False (self-fence) and does not revive it; the id cannot be re-registered."""
    async with open_postgres_storage(pg_database, **FAST) as storage:
        cluster = ClusterStore(storage)
        with trio.fail_after(20):
            await cluster.register_node(A, "api", 0.3)
            await cluster.register_node(B, "api", 60)
            assert [n.node_id for n in await cluster.live_nodes()] == [A, B]
            # Poll the database state (the expiry is the server's clock, not ours).
            while A in [n.node_id for n in await cluster.live_nodes()]:  # noqa: ASYNC110
                await trio.sleep(0.05)
            assert not await cluster.heartbeat(A, 60)
            assert [n.node_id for n in await cluster.live_nodes()] == [B]
            with pytest.raises(Conflict):
                await cluster.register_node(A, "api", 60)
            await cluster.register_node("node-a.cccccc", "api", 60)  # a new boot, a new id
            assert await cluster.heartbeat(B, 60)


async def test_released_node_leaves_and_its_chats_are_taken_at_once(pg_database: str) -> None:
    async with open_postgres_storage(pg_database, **FAST) as storage:
        cluster = ClusterStore(storage)
        with trio.fail_after(20):
            _, _, chat = await make_group(storage, 2)
            await cluster.register_node(A, "all", 60)
            await cluster.register_node(B, "all", 60)
            assert await cluster.acquire_chat(chat.id, A) == Owner(A, 1)
            assert await cluster.acquire_chat(chat.id, B) == Owner(A, 1)
            assert await cluster.release_node(A)
            assert [n.node_id for n in await cluster.live_nodes()] == [B]
            assert not await cluster.heartbeat(A, 60)
            assert not await cluster.release_node(A)
            assert await cluster.acquire_chat(chat.id, B) == Owner(B, 2)


# -- leases --------------------------------------------------------------------------------
async def test_acquire_first_owner_live_owner_and_takeover(pg_database: str) -> None:
    async with open_postgres_storage(pg_database, **FAST) as storage:
        cluster = ClusterStore(storage)
        with trio.fail_after(20):
            _, _, chat = await make_group(storage, 2)
            await cluster.register_node(A, "api", 60)
            await cluster.register_node(B, "api", 60)
            assert await cluster.acquire_chat(chat.id, A) == Owner(A, 1)
            assert await cluster.acquire_chat(chat.id, A) == Owner(A, 1)  # ours: unchanged
            assert await cluster.acquire_chat(chat.id, B) == Owner(A, 1)  # live owner
            assert await cluster.acquire_chat(999_999, A) is None  # no such chat
            _expire(pg_database, A)
            assert await cluster.acquire_chat(chat.id, B) == Owner(B, 2)
            assert await cluster.acquire_chat(chat.id, A) == Owner(B, 2)
            assert await cluster.lease(chat.id) == Owner(B, 2)


async def test_a_live_owner_without_nats_loses_its_chats_to_a_node_with_nats(
    pg_database: str,
) -> None:
    async with open_postgres_storage(pg_database, **FAST) as storage:
        cluster = ClusterStore(storage)
        with trio.fail_after(20):
            _, _, chat = await make_group(storage, 2)
            await cluster.register_node(A, "api", 60)
            await cluster.register_node(B, "api", 60)
            assert await cluster.acquire_chat(chat.id, A) == Owner(A, 1)
            assert await cluster.heartbeat(A, 60, nats_ok=False)
            # Nobody steals when the taker has no NATS either.
            assert await cluster.acquire_chat(chat.id, B, have_nats=False) == Owner(A, 1)
            assert await cluster.acquire_chat(chat.id, B) == Owner(B, 2)


async def test_concurrent_acquirers_exactly_one_wins(pg_database: str) -> None:
    """Two processes (two storages) race for the same chats, first while nobody owns them,
    then after their owner expired: each time exactly one wins, the other is told the
    winner, and the epoch moves by exactly one."""
    async with (
        open_postgres_storage(pg_database, **FAST) as one,
        open_postgres_storage(pg_database, **FAST) as two,
    ):
        first, second = ClusterStore(one), ClusterStore(two)
        with trio.fail_after(30):
            workspace, users, chat = await make_group(one, 2)
            ids = [chat.id]
            for name in ("b", "c", "d", "e"):
                other = await one.create_chat(
                    workspace.id, ChatType.GROUP, name, None, users[0].id, [users[1].id]
                )
                ids.append(other.id)
            pairs = [(A, B), ("node-c.cccccc", "node-d.dddddd")]
            for expected_epoch, (x, y) in enumerate(pairs, start=1):
                await first.register_node(x, "api", 60)
                await first.register_node(y, "api", 60)
                got: dict[tuple[str, int], Owner | None] = {}

                async def race(
                    cluster: ClusterStore,
                    node: str,
                    chat_id: int,
                    got: dict[tuple[str, int], Owner | None] = got,
                ) -> None:
                    got[node, chat_id] = await cluster.acquire_chat(chat_id, node)

                async with trio.open_nursery() as nursery:
                    for chat_id in ids:
                        nursery.start_soon(race, first, x, chat_id)
                        nursery.start_soon(race, second, y, chat_id)
                for chat_id in ids:
                    a, b = got[x, chat_id], got[y, chat_id]
                    assert a is not None
                    assert a == b  # both see the one winner
                    assert a.node_id in (x, y)
                    assert a.epoch == expected_epoch
                # The next pair races for chats whose owners are both dead.
                _expire(pg_database, x)
                _expire(pg_database, y)


# -- the fence -----------------------------------------------------------------------------
# What the ChatActor reads from Storage (no fence needed); every other storage call it makes
# must be a ChatStore write.
ACTOR_READS = {
    "get_message",
    "workspace_role",
    "list_chat_members",
    "get_chat_view",
    "message_sender",
}


def _actor_storage_calls(attrs: tuple[str, ...] = ("_storage", "_writes")) -> set[str]:
    """The methods the ChatActor calls on its storage (reads: ``_storage``; writes, the
    fenced ``ChatStore`` in a cluster: ``_writes``)."""
    source = Path(inspect.getfile(fechatter.actors.chat)).read_text(encoding="utf-8")
    called: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr in attrs
        ):
            called.add(node.attr)
    return called


def test_chat_store_has_exactly_the_actors_writes() -> None:
    methods = {
        name
        for name, fn in inspect.getmembers(ChatStore, inspect.iscoroutinefunction)
        if not name.startswith("_")
    }
    # Every public coroutine is a fenced write, or one of the named lease checks: a new
    # method must be added to one of the two lists (and, if a write, to the fenced tests).
    assert methods == set(ChatStore.WRITES) | set(ChatStore.CHECKS)
    assert _actor_storage_calls() - ACTOR_READS - set(ChatStore.CHECKS) == set(ChatStore.WRITES)
    # Every write goes through the actor's ChatStore, never around it (A4).
    assert _actor_storage_calls(("_writes",)) - set(ChatStore.CHECKS) == set(ChatStore.WRITES)
    assert _actor_storage_calls(("_storage",)) <= ACTOR_READS


Call = Callable[[ChatStore], Awaitable[object]]


def _writes(
    chat: ChatRecord, users: list[User], message_id: int, outsider: User
) -> dict[str, Call]:
    alice, bob, carol = users
    c = chat.id
    return {
        "insert_messages": lambda s: s.insert_messages(c, [msg(alice, "new")]),
        "edit_message": lambda s: s.edit_message(c, message_id, "edited", (bob.id,), False),
        "delete_message": lambda s: s.delete_message(c, message_id),
        "add_reaction": lambda s: s.add_reaction(c, message_id, carol.id, "🎉", 50),
        "remove_reaction": lambda s: s.remove_reaction(c, message_id, bob.id, "👍"),
        "add_chat_members": lambda s: s.add_chat_members(c, [outsider.id], Role.MEMBER),
        "remove_chat_member": lambda s: s.remove_chat_member(c, carol.id, None),
        "set_chat_member_role": lambda s: s.set_chat_member_role(c, bob.id, Role.ADMIN),
        "update_chat": lambda s: s.update_chat(c, description="renamed"),
        "mark_read": lambda s: s.mark_read(c, bob.id, message_id),
        "delete_chat": lambda s: s.delete_chat(c),
    }


@pytest.mark.parametrize("method", ChatStore.WRITES)
async def test_every_chat_write_is_fenced(pg_database: str, method: str) -> None:
    """Each ``ChatStore`` write, called with a stale fence (the old owner at its epoch, or
    the new owner at a wrong epoch), raises ``ChatMoved`` and changes no row of any table;
    with the current fence it succeeds and writes."""
    async with open_postgres_storage(pg_database, **FAST) as storage:
        cluster = ClusterStore(storage)
        with trio.fail_after(20):
            workspace, users, chat = await make_group(storage, 3)
            outsider = await make_user(storage, "dave")
            await storage.add_workspace_member(workspace.id, outsider.id, Role.MEMBER)
            (message,) = await send(storage, chat.id, users[0], "hello")
            assert await storage.add_reaction(chat.id, message.id, users[1].id, "👍", 50)
            await cluster.register_node(A, "api", 60)
            await cluster.register_node(B, "api", 60)
            stale, current = await _taken_over(pg_database, cluster, chat.id)
            write = _writes(chat, users, message.id, outsider)[method]
            before = _snapshot(pg_database)
            for fence in (stale, Fence(chat.id, B, 1), Fence(chat.id, B, 3)):
                with pytest.raises(ChatMoved) as moved:
                    await write(cluster.chat_store(fence))
                assert moved.value.code == "chat_moved"
                assert moved.value.status == 503
                assert _snapshot(pg_database) == before
            await write(cluster.chat_store(current))
            assert _snapshot(pg_database) != before


async def test_an_unfenced_store_is_the_storage_itself(pg_database: str) -> None:
    async with open_postgres_storage(pg_database, **FAST) as storage:
        with trio.fail_after(20):
            _, users, chat = await make_group(storage, 2)
            store = storage.chat_store(None)
            (sent,) = await store.insert_messages(chat.id, [msg(users[0], "plain")])
            assert sent.created
            assert await store.mark_read(
                chat.id, users[1].id, sent.message.id if sent.message else 0
            )
            with pytest.raises(ValueError, match="fenced for chat"):
                await storage.chat_store(Fence(chat.id, A, 1)).mark_read(chat.id + 1, 1, 1)


async def test_sqlite_refuses_a_fence(tmp_path: Path) -> None:
    from fechatter.storage import open_storage

    async with open_storage(f"sqlite:///{tmp_path / 'f.db'}") as storage:
        assert isinstance(storage.chat_store(None), ChatStore)  # type: ignore[attr-defined]
        with pytest.raises(ValueError, match="PostgreSQL"):
            storage.chat_store(Fence(1, A, 1))  # type: ignore[attr-defined]


async def test_a_fenced_write_of_a_deleted_chat_is_chat_not_found(pg_database: str) -> None:
    async with open_postgres_storage(pg_database, **FAST) as storage:
        cluster = ClusterStore(storage)
        with trio.fail_after(20):
            _, users, chat = await make_group(storage, 2)
            await cluster.register_node(A, "api", 60)
            assert await cluster.acquire_chat(chat.id, A) == Owner(A, 1)
            store = cluster.chat_store(Fence(chat.id, A, 1))
            await store.delete_chat(chat.id)
            assert await cluster.lease(chat.id) is None  # gone with the chat
            for write in (
                store.update_chat(chat.id, description="x"),
                store.insert_messages(chat.id, [msg(users[0], "late")]),
            ):
                with pytest.raises(NotFound) as gone:
                    await write
                assert gone.value.code == "chat_not_found"
            assert await cluster.acquire_chat(chat.id, A) is None


async def test_a_round_with_a_moved_chat_fails_that_chat_alone(pg_database: str) -> None:
    """The cross-chat group commit with fences: one chat's fence is stale, so the round's
    one call fails and the round is stored batch by batch; only that chat fails
    (``ChatMoved``) and writes nothing. A round whose fences all hold is one commit."""
    async with open_postgres_storage(pg_database, **FAST) as storage:
        cluster = ClusterStore(storage)
        with trio.fail_after(20):
            workspace, users, chat = await make_group(storage, 2)
            alice = users[0]
            ids = [chat.id]
            for name in ("b", "c"):
                other = await storage.create_chat(
                    workspace.id, ChatType.GROUP, name, None, alice.id, [users[1].id]
                )
                ids.append(other.id)
            await cluster.register_node(A, "api", 60)
            await cluster.register_node(B, "api", 60)
            fences = {c: Fence(c, A, 1) for c in ids}
            for c in ids:
                assert await cluster.acquire_chat(c, A) == Owner(A, 1)
            requests = [_InsertRequest(c, [msg(alice, f"in {c}")], fences[c]) for c in ids]
            before = storage.statistics().transactions
            await storage._run_round(requests)
            assert storage.statistics().transactions - before == 1
            assert all(not isinstance(r.outcome, Exception) for r in requests)
            # B takes the middle chat from A (A's row expired, then A beats again: too late).
            _expire(pg_database, A)
            assert await cluster.acquire_chat(ids[1], B) == Owner(B, 2)
            requests = [_InsertRequest(c, [msg(alice, "again")], fences[c]) for c in ids]
            before = storage.statistics().transactions
            await storage._run_round(requests)
            assert storage.statistics().transactions - before == 2  # batch by batch
            moved = requests[1].outcome
            assert isinstance(moved, ChatMoved)
            assert not isinstance(requests[0].outcome, Exception)
            assert not isinstance(requests[2].outcome, Exception)
            for c, expected in zip(ids, (2, 1, 2), strict=True):
                page = await storage.list_messages(c, limit=10, before=None, after=0)
                assert len(page.items) == expected
            # Through the public path too: the fenced send of the moved chat alone fails.
            with pytest.raises(ChatMoved):
                await cluster.chat_store(fences[ids[1]]).insert_messages(ids[1], [msg(alice)])
            done = await cluster.chat_store(Fence(ids[1], B, 2)).insert_messages(
                ids[1], [msg(alice, "by b")]
            )
            assert done[0].created


async def test_a_takeover_waits_for_an_in_flight_fenced_write(
    pg_server: PgServer, pg_database: str
) -> None:
    """The old owner's fenced write holds the lease row FOR SHARE; a takeover's acquire
    (the UPDATE of that row) waits until it commits, so the new owner, loading the state
    after its acquire, sees the write."""
    async with (
        open_postgres_storage(pg_database, **FAST) as storage,
        open_pg_pool(pg_database, PoolConfig(size=1)) as other,
    ):
        cluster = ClusterStore(storage)
        with trio.fail_after(20):
            _, _, chat = await make_group(storage, 2)
            await cluster.register_node(A, "api", 60)
            await cluster.register_node(B, "api", 60)
            assert await cluster.acquire_chat(chat.id, A) == Owner(A, 1)
            got: list[Owner | None] = []
            async with other.connection() as conn:
                writer = conn.info.backend_pid
                await conn.execute("BEGIN")
                await conn.execute("SELECT fechatter_fence(%s, %s, %s)", (chat.id, A, 1))
                await run_op(conn, chats.update_chat(chat.id, None, "by a"))
                _expire(pg_database, A)

                async def take() -> None:
                    got.append(await cluster.acquire_chat(chat.id, B))

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(take)
                    # Poll: the server gives no event when a statement starts waiting.
                    await wait_until_blocked_by(pg_server, writer)
                    assert got == []
                    await conn.execute("COMMIT")
            assert got == [Owner(B, 2)]
            record = await storage.get_chat(chat.id)
            assert record is not None
            assert record.description == "by a"


async def test_a_fenced_write_waiting_for_a_takeover_is_refused(
    pg_server: PgServer, pg_database: str
) -> None:
    """The other order: the takeover's UPDATE of the lease row is in flight when the old
    owner's fenced write starts; the fence waits for it, re-reads the new epoch and raises
    ``ChatMoved``; nothing is written."""
    async with (
        open_postgres_storage(pg_database, **FAST) as storage,
        open_pg_pool(pg_database, PoolConfig(size=1)) as other,
    ):
        cluster = ClusterStore(storage)
        with trio.fail_after(20):
            _, _, chat = await make_group(storage, 2)
            await cluster.register_node(A, "api", 60)
            await cluster.register_node(B, "api", 60)
            assert await cluster.acquire_chat(chat.id, A) == Owner(A, 1)
            _expire(pg_database, A)
            outcome: list[BaseException] = []
            async with other.connection() as conn:
                taker = conn.info.backend_pid
                await conn.execute("BEGIN")
                assert await run_op(conn, try_acquire_chat(chat.id, B, True)) == Owner(B, 2)
                before = _snapshot(pg_database)

                async def late_write() -> None:
                    try:
                        await cluster.chat_store(Fence(chat.id, A, 1)).update_chat(
                            chat.id, description="late"
                        )
                    except ChatMoved as exc:
                        outcome.append(exc)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(late_write)
                    await wait_until_blocked_by(pg_server, taker)
                    await conn.execute("COMMIT")
            assert len(outcome) == 1
            after = _snapshot(pg_database)
            assert after["chats"] == before["chats"]
            assert await cluster.lease(chat.id) == Owner(B, 2)


async def test_deleting_a_workspace_waits_for_a_fenced_write_without_deadlock(
    pg_server: PgServer, pg_database: str
) -> None:
    """Workspace deletion removes the lease rows before the chats (the fence's lock order):
    with a fenced write in flight it waits for it, then deletes; no deadlock."""
    async with (
        open_postgres_storage(pg_database, **FAST) as storage,
        open_pg_pool(pg_database, PoolConfig(size=1)) as other,
    ):
        cluster = ClusterStore(storage)
        with trio.fail_after(20):
            workspace, users, chat = await make_group(storage, 2)
            await cluster.register_node(A, "api", 60)
            assert await cluster.acquire_chat(chat.id, A) == Owner(A, 1)
            deleted: list[list[int]] = []
            async with other.connection() as conn:
                writer = conn.info.backend_pid
                await conn.execute("BEGIN")
                await conn.execute("SELECT fechatter_fence(%s, %s, %s)", (chat.id, A, 1))

                async def delete() -> None:
                    deleted.append(await storage.delete_workspace(workspace.id))

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(delete)
                    await wait_until_blocked_by(pg_server, writer)
                    # The write goes on to take the chat row: it must not deadlock.
                    await run_op(conn, chats.update_chat(chat.id, None, "last words"))
                    await conn.execute("COMMIT")
            assert deleted == [[chat.id]]
            assert await storage.get_chat(chat.id) is None
            assert users  # the users outlive their workspace


async def test_an_acquire_blocked_by_a_dead_sessions_lock_fails_fast_as_unavailable(
    pg_server: PgServer, pg_database: str
) -> None:
    """A frozen or partitioned old owner left a fenced write open (the lease row held FOR
    SHARE, idle in transaction): the new owner's acquire gives up after its lock timeout
    (``ACQUIRE_LOCK_TIMEOUT_MS``) with a retryable ``Unavailable``, long before the
    operation timeout; once the session is gone the acquire succeeds."""
    async with (
        open_postgres_storage(pg_database, **FAST) as storage,
        open_pg_pool(pg_database, PoolConfig(size=1)) as other,
    ):
        cluster = ClusterStore(storage)
        with trio.fail_after(20):
            _, _, chat = await make_group(storage, 2)
            await cluster.register_node(A, "api", 60)
            await cluster.register_node(B, "api", 60)
            assert await cluster.acquire_chat(chat.id, A) == Owner(A, 1)
            async with other.connection() as conn:
                await conn.execute("BEGIN")
                await conn.execute("SELECT fechatter_fence(%s, %s, %s)", (chat.id, A, 1))
                _expire(pg_database, A)
                began = trio.current_time()
                with pytest.raises(Unavailable):
                    await cluster.acquire_chat(chat.id, B)
                waited = trio.current_time() - began
                await conn.execute("ROLLBACK")
            assert ACQUIRE_LOCK_TIMEOUT_MS / 1000 <= waited < FAST["operation_timeout"] - 1
            assert await cluster.acquire_chat(chat.id, B) == Owner(B, 2)


async def test_the_server_ends_a_session_left_idle_in_transaction(
    pg_server: PgServer, pg_database: str
) -> None:
    """Every pooled connection carries the server-side session bounds; a session left idle
    in a transaction (a node frozen mid-write) is ended by the server after
    ``idle_in_transaction_timeout``, which frees its locks for the next owner."""
    async with open_postgres_storage(
        pg_database, idle_in_transaction_timeout=0.3, **FAST
    ) as storage:
        cluster = ClusterStore(storage)
        with trio.fail_after(20):
            _, _, chat = await make_group(storage, 2)
            await cluster.register_node(A, "api", 60)
            await cluster.register_node(B, "api", 60)
            assert await cluster.acquire_chat(chat.id, A) == Owner(A, 1)
            async with storage._pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT current_setting('idle_in_transaction_session_timeout') AS idle,"
                    " current_setting('tcp_keepalives_idle') AS ka_idle,"
                    " current_setting('tcp_keepalives_interval') AS ka_interval,"
                    " current_setting('tcp_keepalives_count') AS ka_count"
                )
                row = await cur.fetchone()
                assert row is not None
                assert row["idle"] == "300ms"
                # (the test server is on TCP; a Unix socket would show 0s)
                assert (row["ka_idle"], row["ka_interval"], row["ka_count"]) == ("10", "5", "3")
                pid = conn.info.backend_pid
                await conn.execute("BEGIN")
                await conn.execute("SELECT fechatter_fence(%s, %s, %s)", (chat.id, A, 1))
                _expire(pg_database, A)
                # The "frozen node": no statement, no commit. Wait for the server to end it.
                while _admin(  # noqa: ASYNC110
                    pg_database, "SELECT 1 FROM pg_stat_activity WHERE pid = %s", pid
                ):
                    await trio.sleep(0.05)
            # The pool took back a dead connection and dropped it; the lock is gone.
            assert await cluster.acquire_chat(chat.id, B) == Owner(B, 2)


async def test_deleting_a_workspace_locks_its_leases_in_chat_id_order(
    pg_server: PgServer, pg_database: str
) -> None:
    """Workspace deletion locks the lease rows in ascending chat id, the order in which a
    cross-chat round (and any writer of several chats) takes them: the larger chat's rows come
    first in heap order (lease and chat), a writer holds the smaller one's lease
    FOR SHARE while the deletion starts, then takes the larger one's. Locking in heap order,
    the deletion would hold the larger lease and wait for the smaller: a deadlock, which
    PostgreSQL breaks by failing one side. In id order, the deletion waits for the smaller
    lease holding nothing; the writer finishes; the deletion follows."""
    async with (
        open_postgres_storage(pg_database, **FAST) as storage,
        open_pg_pool(pg_database, PoolConfig(size=1)) as other,
    ):
        cluster = ClusterStore(storage)
        with trio.fail_after(20):
            workspace, (alice, *_), small = await make_group(storage, 2)
            large = await storage.create_chat(
                workspace.id, small.type, None, None, alice.id, [alice.id]
            )
            assert small.id < large.id
            # Heap order ≠ id order in both tables: a non-HOT update (an indexed column
            # changes) moves the smaller chat's row after the larger one's, so a deletion
            # that reaches the leases through a scan of the chats meets the larger first.
            _admin(pg_database, "UPDATE chats SET name_key = 'moved' WHERE id = %s", small.id)
            await cluster.register_node(A, "api", 60)
            assert await cluster.acquire_chat(large.id, A) == Owner(A, 1)  # stored first
            assert await cluster.acquire_chat(small.id, A) == Owner(A, 1)
            deleted: list[list[int]] = []
            async with other.connection() as conn:
                writer = conn.info.backend_pid
                await conn.execute("BEGIN")
                await conn.execute("SELECT fechatter_fence(%s, %s, %s)", (small.id, A, 1))

                async def delete() -> None:
                    deleted.append(await storage.delete_workspace(workspace.id))

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(delete)
                    await wait_until_blocked_by(pg_server, writer)
                    # The second lease, as a round takes it: must not deadlock.
                    await conn.execute("SELECT fechatter_fence(%s, %s, %s)", (large.id, A, 1))
                    await conn.execute("COMMIT")
            assert deleted == [sorted([small.id, large.id])]
            assert await storage.get_chat(large.id) is None
