"""PostgreSQL-only behaviour: outages, cancellation, several writers, pool bounds, migrations."""

from __future__ import annotations

import logging
import resource
import socket
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import trio
from psycopg.pq import TransactionStatus

from fechatter.app import ServerInfo, serve
from fechatter.config import Settings
from fechatter.errors import Conflict, Invalid, NotFound, Unavailable
from fechatter.models import ChatType, Message, NewMessage
from fechatter.storage import accounts, messages, migrations, open_storage, postgres_pool
from fechatter.storage.postgres import (
    POOL_SHARE_MAX,
    PostgresStorage,
    _InsertRequest,
    apply_postgres_migrations,
    open_postgres_storage,
    run_op,
    translate_error,
)
from fechatter.storage.postgres_pool import Connection, PoolConfig, open_pg_pool
from tests.conftest import Api, make_chat, make_settings, make_workspace
from tests.pg import PgServer, free_port, wait_until_blocked_by

from .factories import make_group, msg, send

# Small bounds so an outage is noticed quickly; each test still has a fail_after ceiling.
FAST: dict[str, Any] = {
    "pool_size": 3,
    "acquire_timeout": 1.0,
    "connect_timeout": 2,
    "operation_timeout": 3.0,
}


async def _all_messages(storage: PostgresStorage, chat_id: int) -> list[Message]:
    page = await storage.list_messages(chat_id, limit=100_000, before=None, after=0)
    return page.items


def _admin_rows(server: PgServer, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with server.connect() as conn:
        return conn.execute(sql, params).fetchall()


# -- outage --------------------------------------------------------------------------------
async def test_server_outage_is_unavailable_then_recovers(
    pg_server: PgServer, pg_database: str
) -> None:
    async with open_postgres_storage(pg_database, **FAST) as storage:
        _, users, chat = await make_group(storage, 2)
        acked: list[Message] = []
        failures = 0
        enough_before, enough_failures, enough_after = trio.Event(), trio.Event(), trio.Event()
        restarted = False

        async def writer() -> None:
            # One message at a time, like a ChatActor: a send either returns (acknowledged)
            # or raises Unavailable; nothing else, and never a hang (fail_after below).
            nonlocal failures
            n = 0
            while not enough_after.is_set():
                n += 1
                try:
                    [done] = await storage.insert_messages(chat.id, [msg(users[n % 2], f"m{n}")])
                except Unavailable:
                    failures += 1
                    if failures >= 3:
                        enough_failures.set()
                    await trio.lowlevel.checkpoint()
                    continue
                assert done.message is not None
                acked.append(done.message)
                if len(acked) >= 5:
                    enough_before.set()
                if restarted and len(acked) >= 15:
                    enough_after.set()

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer)
                await enough_before.wait()
                await trio.to_thread.run_sync(pg_server.stop)
                try:
                    await enough_failures.wait()
                    with pytest.raises(Unavailable) as caught:
                        await storage.ping()
                    assert caught.value.headers["Retry-After"] == "1"
                    with pytest.raises(Unavailable):
                        await storage.get_user(users[0].id)
                finally:
                    await trio.to_thread.run_sync(pg_server.start)
                restarted = True
                await enough_after.wait()
        # Recovered by itself, and every acknowledged message is there, numbered gaplessly.
        await storage.ping()
        stored = await _all_messages(storage, chat.id)
        assert {m.id for m in acked} <= {m.id for m in stored}
        assert [m.seq for m in stored] == list(range(1, len(stored) + 1))
        assert failures >= 3


async def test_http_answers_503_while_postgres_is_down(
    nursery: trio.Nursery, tmp_path: Path, pg_server: PgServer, pg_database: str
) -> None:
    settings: Settings = make_settings(tmp_path, pg_database)
    shutdown = trio.Event()
    info: ServerInfo = await nursery.start(serve, settings, shutdown)
    try:
        async with httpx.AsyncClient(base_url=info.api_url, timeout=20) as client:
            api = Api(client)
            a, b = await api.signup(), await api.signup()
            chat = await make_chat(a, await make_workspace(a, b), "Single", b)
            url = f"/api/chats/{chat}/messages"
            first = await a.api.post(url, json={"content": "before"})
            assert first.status_code == 201, first.text
            await trio.to_thread.run_sync(pg_server.stop)
            try:
                with trio.fail_after(20):
                    down = await a.api.post(url, json={"content": "during"})
                    ready = await api.get("/ready")
                assert down.status_code == 503, down.text
                assert down.headers["Retry-After"]
                assert ready.status_code == 503
            finally:
                await trio.to_thread.run_sync(pg_server.start)
            with trio.fail_after(20):
                after = await a.api.post(url, json={"content": "after"})
                assert after.status_code == 201, after.text
                assert (await api.get("/ready")).status_code == 200
                items = (await a.api.get(url)).json()["items"]
            contents = [m["content"] for m in items]
            assert "before" in contents
            assert "after" in contents
            assert sorted(m["seq"] for m in items) == list(range(1, len(items) + 1))
    finally:
        shutdown.set()


async def test_unreachable_server_is_unavailable_quickly() -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    with trio.fail_after(10), pytest.raises(Unavailable):
        async with open_postgres_storage(url, **FAST):
            pass  # pragma: no cover


# -- cancellation --------------------------------------------------------------------------
def _backend_state(server: PgServer, pid: int) -> tuple[str, str]:
    rows = _admin_rows(server, "SELECT state, query FROM pg_stat_activity WHERE pid = %s", pid)
    assert len(rows) == 1, rows
    return rows[0][0], rows[0][1]


async def test_cancelled_query_stops_on_the_server_and_connection_is_reused(
    pg_server: PgServer, pg_database: str
) -> None:
    async with open_pg_pool(pg_database, PoolConfig(size=1)) as pool:
        async with pool.connection() as conn:
            pid = conn.info.backend_pid
        finished = trio.Event()

        async def sleeper(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
            with trio.CancelScope() as scope:
                task_status.started(scope)
                async with pool.connection() as conn:
                    await conn.execute("SELECT pg_sleep(60)")
            finished.set()

        with trio.fail_after(15):
            async with trio.open_nursery() as nursery:
                scope: trio.CancelScope = await nursery.start(sleeper)
                # Poll: the server gives no event when a statement starts running.
                while _backend_state(pg_server, pid) != ("active", "SELECT pg_sleep(60)"):  # noqa: ASYNC110
                    await trio.sleep(0.01)
                scope.cancel()
                await finished.wait()
        # Cancelled on the server (the backend is idle, not sleeping its 60 s) ...
        assert _backend_state(pg_server, pid)[0] == "idle"
        # ... and the same pooled connection serves the next call.
        async with pool.connection() as conn:
            assert conn.info.backend_pid == pid
            cur = await conn.execute("SELECT 41 + 1 AS x")
            assert await cur.fetchone() == {"x": 42}
        assert (pool.statistics().connects, pool.statistics().discarded) == (1, 0)


async def test_cancel_that_the_server_does_not_honour_replaces_the_connection(
    pg_server: PgServer, pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The cancel request is lost: the statement keeps running, so after CANCEL_WAIT the pool
    # gives the connection up (closed, never reused) and the next call gets a new one.
    async def lost(self: Connection) -> None:
        pass

    monkeypatch.setattr(Connection, "request_cancel", lost)
    monkeypatch.setattr(postgres_pool, "CANCEL_WAIT", 0.2)
    async with open_pg_pool(pg_database, PoolConfig(size=1)) as pool:
        async with pool.connection() as conn:
            pid = conn.info.backend_pid
        with trio.fail_after(10):
            with trio.move_on_after(0.2) as bounded:
                async with pool.connection() as conn:
                    await conn.execute("SELECT pg_sleep(60)")
            assert bounded.cancelled_caught
            assert conn.closed
            async with pool.connection() as conn:
                assert conn.info.backend_pid != pid
                assert await (await conn.execute("SELECT 1 AS one")).fetchone() == {"one": 1}
        stats = pool.statistics()
        assert (stats.connects, stats.discarded) == (2, 1)
    # The abandoned backend is still sleeping (nothing told it otherwise); end it.
    _admin_rows(pg_server, "SELECT pg_terminate_backend(%s)", pid)


async def test_cancelled_write_transaction_rolls_back_on_the_same_connection(
    pg_server: PgServer, pg_database: str
) -> None:
    async with open_postgres_storage(pg_database, pool_size=1, operation_timeout=0.5) as storage:
        await storage.ping()
        pool = storage._pool
        async with pool.connection() as conn:
            pid = conn.info.backend_pid

        async def insert_then_sleep(c: Connection) -> None:
            await run_op(c, accounts.create_user("A", "a@example.com", "h", "ws"))
            await c.execute("SELECT pg_sleep(60)")

        with trio.fail_after(10), pytest.raises(Unavailable, match="in time"):
            await storage._write(insert_then_sleep)
        # Cancelled on the server and rolled back: idle (not "idle in transaction"), nothing
        # of the transaction kept, and the same connection serves the next call.
        assert _backend_state(pg_server, pid)[0] == "idle"
        assert await storage.get_user_by_email("a@example.com") is None
        assert (pool.statistics().connects, pool.statistics().discarded) == (1, 0)
        assert storage.statistics().transactions == 0


async def test_statements_run_on_the_trio_thread(
    pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_postgres_storage(pg_database, pool_size=1) as storage:
        await storage.ping()  # the pool holds its connection: no connect (thread) below

        def no_threads(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("a storage call used a worker thread")

        monkeypatch.setattr(trio.to_thread, "run_sync", no_threads)
        _, users, chat = await make_group(storage, 2)
        await send(storage, chat.id, users[0], "one", "two")
        with trio.move_on_after(0.1):  # a cancelled statement: cancel request on trio too
            await storage._read(lambda c: c.execute("SELECT pg_sleep(60)"))
        assert len(await _all_messages(storage, chat.id)) == 2


async def test_large_statement_is_sent_in_pieces(pg_database: str) -> None:
    # Bigger than the socket buffers: libpq cannot flush it at once, so psycopg's generator
    # waits for the socket to become writable (and readable) on trio several times.
    big = "x" * (32 * 1024 * 1024)
    async with open_pg_pool(pg_database, PoolConfig(size=1)) as pool, pool.connection() as conn:
        cur = await conn.execute("SELECT length(%s) AS n", (big,))
        assert await cur.fetchone() == {"n": len(big)}


async def test_operation_timeout_cancels_and_answers_unavailable(pg_database: str) -> None:
    async with open_postgres_storage(pg_database, pool_size=1, operation_timeout=0.5) as storage:
        with trio.fail_after(10), pytest.raises(Unavailable, match="in time"):
            await storage._read(lambda c: c.execute("SELECT pg_sleep(60)"))
        await storage.ping()  # the one connection is usable again


# -- several writers -----------------------------------------------------------------------
async def test_two_processes_writing_one_chat_keep_seq_gapless(pg_database: str) -> None:
    async with (
        open_postgres_storage(pg_database, pool_size=5) as one,
        open_postgres_storage(pg_database, pool_size=5) as other,
    ):
        _, users, chat = await make_group(one, 4)
        per_task, batch = 12, 3

        async def write(storage: PostgresStorage, task: int) -> None:
            for n in range(per_task):
                items = [msg(users[task % 4], f"{task}-{n}-{i}") for i in range(batch)]
                done = await storage.insert_messages(chat.id, items)
                assert all(d.created for d in done)

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for i in range(8):
                    nursery.start_soon(write, one if i % 2 else other, i)
        stored = await _all_messages(one, chat.id)
        assert len(stored) == 8 * per_task * batch
        assert [m.seq for m in stored] == list(range(1, len(stored) + 1))
        # A batch is numbered contiguously: it was written under one chat-row lock.
        for m in stored:
            task, n, i = map(int, m.content.split("-"))
            if i > 0:
                previous = next(p for p in stored if p.content == f"{task}-{n}-{i - 1}")
                assert previous.seq == m.seq - 1


async def test_concurrent_duplicate_client_id_is_inserted_once(pg_database: str) -> None:
    async with (
        open_postgres_storage(pg_database) as one,
        open_postgres_storage(pg_database) as other,
    ):
        _, users, chat = await make_group(one, 2)
        results: list[bool] = []

        async def send_once(storage: PostgresStorage) -> None:
            [done] = await storage.insert_messages(chat.id, [msg(users[1], "x", client_id="c1")])
            results.append(done.created)

        async with trio.open_nursery() as nursery:
            for storage in (one, other, one, other):
                nursery.start_soon(send_once, storage)
        assert sorted(results) == [False, False, False, True]
        assert len(await _all_messages(one, chat.id)) == 1


async def test_read_marker_never_moves_back_under_concurrency(pg_database: str) -> None:
    async with open_postgres_storage(pg_database, pool_size=8) as storage:
        _, users, chat = await make_group(storage, 2)
        sent = await send(storage, chat.id, users[0], *[f"m{i}" for i in range(20)])

        async with trio.open_nursery() as nursery:
            for m in reversed(sent):
                nursery.start_soon(storage.mark_read, chat.id, users[1].id, m.id)
        view = await storage.get_chat_view(chat.id, users[1].id)
        assert view is not None
        assert view.unread_count == 0


# -- pool ----------------------------------------------------------------------------------
async def test_exhausted_pool_is_unavailable_not_a_hang(pg_database: str) -> None:
    async with open_pg_pool(pg_database, PoolConfig(size=1, acquire_timeout=0.2)) as pool:
        async with pool.connection():
            with trio.fail_after(5), pytest.raises(Unavailable, match="no database connection"):
                async with pool.connection():
                    pass  # pragma: no cover
        async with pool.connection() as conn:
            assert await (await conn.execute("SELECT 1")).fetchone()


async def test_terminated_connection_is_replaced_on_checkout(
    pg_server: PgServer, pg_database: str
) -> None:
    async with open_pg_pool(pg_database, PoolConfig(size=1)) as pool:
        async with pool.connection() as conn:
            pid = conn.info.backend_pid
        _admin_rows(pg_server, "SELECT pg_terminate_backend(%s)", pid)
        # Poll: the termination notice reaches the idle socket asynchronously.
        with trio.fail_after(10):
            while _admin_rows(pg_server, "SELECT 1 FROM pg_stat_activity WHERE pid = %s", pid):  # noqa: ASYNC110
                await trio.sleep(0.01)
        async with pool.connection() as conn:
            assert conn.info.backend_pid != pid
            assert await (await conn.execute("SELECT 1")).fetchone()
        stats = pool.statistics()
        assert (stats.connects, stats.discarded) == (2, 1)


def _pool_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "fechatter.storage.postgres" and "database_pool_size" in r.getMessage()
    ]


def _client_connections(pg_server: PgServer) -> int:
    """max_connections less the reserved slots, as the server reports them."""
    max_connections, reserved, extra = _admin_rows(
        pg_server,
        "SELECT current_setting('max_connections')::int,"
        " current_setting('superuser_reserved_connections')::int,"
        " COALESCE(current_setting('reserved_connections', true)::int, 0)",
    )[0]
    return int(max_connections) - int(reserved) - int(extra)


async def test_a_pool_beyond_half_the_servers_connections_is_a_warning(
    nursery: trio.Nursery,
    tmp_path: Path,
    pg_server: PgServer,
    pg_database: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A node whose pool alone could take more than half of max_connections says so at start,
    naming the setting; a warning, not an error: the server starts and serves."""
    settings = make_settings(tmp_path, pg_database, database_pool_size=100_000)
    shutdown = trio.Event()
    with caplog.at_level(logging.WARNING, logger="fechatter.storage.postgres"):
        info: ServerInfo = await nursery.start(serve, settings, shutdown)
    try:
        [warning] = _pool_warnings(caplog)
        text = warning.getMessage()
        assert warning.levelno == logging.WARNING
        assert warning.exc_info is None
        assert text.startswith("database_pool_size 100000 is more than 50% of the")
        assert f" {_client_connections(pg_server)} connections PostgreSQL allows" in text
        assert "FECHATTER_DATABASE_POOL_SIZE" in text
        async with httpx.AsyncClient(base_url=info.api_url, timeout=10) as client:
            with trio.fail_after(10):
                assert (await client.get("/ready")).status_code == 200
    finally:
        shutdown.set()


async def test_pool_budget_warning_starts_past_half(
    pg_server: PgServer, pg_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    half = int(_client_connections(pg_server) * POOL_SHARE_MAX)
    with caplog.at_level(logging.WARNING, logger="fechatter.storage.postgres"), trio.fail_after(10):
        async with open_postgres_storage(pg_database, pool_size=half):
            pass
        assert _pool_warnings(caplog) == []
        async with open_postgres_storage(pg_database, pool_size=half + 1):
            pass
        assert len(_pool_warnings(caplog)) == 1


async def test_failed_transaction_returns_a_clean_connection(pg_database: str) -> None:
    async with open_postgres_storage(pg_database, pool_size=1) as storage:
        await storage.create_user("A", "a@example.com", "h", None)
        with pytest.raises(Conflict):
            await storage.create_user("B", "a@example.com", "h", "ws")
        assert await storage.get_user_by_email("a@example.com") is not None
        assert storage.statistics().transactions == 1


# -- migrations, URLs, errors --------------------------------------------------------------
async def test_concurrent_first_start_migrates_once(pg_server: PgServer) -> None:
    """Nodes starting together on a fresh database take turns on the migration lock.

    Without ``pg_advisory_xact_lock`` (checked by removing it) this fails on every run: the
    starts race on the same DDL and all but one get ``Conflict`` (a duplicate type or table).
    """
    url = pg_server.new_database(empty=True)
    try:
        opened = 0

        async def start(n: int) -> None:
            nonlocal opened
            async with open_storage(url) as storage:
                # The schema is usable by each starter as soon as its storage is open.
                await storage.create_user(f"U{n}", f"u{n}@example.com", "h", None)
                opened += 1

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for n in range(4):
                    nursery.start_soon(start, n)
        assert opened == 4
        with psycopg.connect(url) as conn:
            versions = conn.execute(
                "SELECT version FROM schema_migrations ORDER BY version"
            ).fetchall()
        assert versions == [(v,) for v, _ in migrations.load_migrations("postgres")]
    finally:
        pg_server.drop_database(url)


async def test_migrations_are_recorded_and_not_reapplied(pg_database: str) -> None:
    async with open_pg_pool(pg_database, PoolConfig(size=1)) as pool:
        async with pool.connection() as conn:
            assert await apply_postgres_migrations(conn) == []
        async with pool.connection() as conn:  # the migration transaction was committed
            assert conn.info.transaction_status == TransactionStatus.IDLE


async def test_postgres_scheme_alias(pg_database: str) -> None:
    async with open_storage(pg_database.replace("postgresql://", "postgres://", 1)) as storage:
        await storage.ping()


async def test_unknown_references_are_not_found(pg_database: str) -> None:
    async with open_postgres_storage(pg_database) as storage:
        with pytest.raises(NotFound):
            await storage.create_chat(999, ChatType.GROUP, None, None, 1, [1])
        with pytest.raises(NotFound):
            await storage.add_refresh_token(999, "t", "f", "2999-01-01T00:00:00.000000Z")
        with pytest.raises(NotFound):
            await storage.insert_messages(999, [NewMessage(1, "x", (), None, None)])
        assert await storage.get_user(2**63) is None


def test_translate_error() -> None:
    assert isinstance(translate_error(psycopg.OperationalError("server closed")), Unavailable)
    assert isinstance(translate_error(psycopg.InterfaceError("closed")), Unavailable)
    assert isinstance(translate_error(psycopg.errors.ForeignKeyViolation("fk")), NotFound)
    other = translate_error(psycopg.errors.NotNullViolation("null"))
    assert isinstance(other, Conflict)
    assert other.code == "conflict"
    unnamed = translate_error(psycopg.errors.UniqueViolation("dup"))
    assert isinstance(unnamed, Conflict)
    assert unnamed.code == "conflict"


async def test_connections_numbered_past_1024_stay_pooled(pg_database: str) -> None:
    """A server with thousands of streams open gets database sockets above select()'s limit;
    the checkout health check must still recognise them as healthy (regression: it used
    select(), raised, and every call reconnected)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 1200:  # pragma: no cover - this machine allows 20,000
        pytest.fail("the test needs an open-files limit of at least 1200")
    filler = [socket.socket() for _ in range(1100)]
    try:
        async with open_pg_pool(pg_database, PoolConfig(size=1)) as pool:
            for _ in range(5):
                async with pool.connection() as conn:
                    assert conn.fileno() > 1024
                    await conn.execute("SELECT 1")
            assert (pool.statistics().connects, pool.statistics().discarded) == (1, 0)
    finally:
        for s in filler:
            s.close()


async def test_batches_of_several_chats_are_committed_in_one_round(pg_database: str) -> None:
    """Group commit across chats: batches that wait together are stored by one call in one
    transaction, and each still gets exactly its own outcome — a missing chat, a bad
    reply_to, a client_id retry — as if stored alone."""
    async with open_postgres_storage(pg_database, **FAST) as storage:
        _, users, first = await make_group(storage, 2)
        alice = users[0]
        chats = [first.id]
        for name in ("b", "c", "d"):
            chat = await storage.create_chat(
                first.workspace_id, ChatType.GROUP, name, None, alice.id, [u.id for u in users]
            )
            chats.append(chat.id)
        (earlier,) = await send(storage, chats[2], alice, "earlier")
        batches: dict[int, list[NewMessage]] = {
            chats[0]: [msg(alice, "a1"), msg(alice, "a2")],
            chats[1]: [msg(alice, "bad", reply_to=earlier.id)],  # a message of another chat
            chats[2]: [msg(alice, "k", client_id="k"), msg(alice, "k again", client_id="k")],
            chats[3]: [msg(alice, "d1")],
            999_999: [msg(alice, "nowhere")],
        }
        before = storage.statistics().transactions
        outcomes: dict[int, Any] = {}

        async def insert(chat_id: int) -> None:
            try:
                outcomes[chat_id] = await storage.insert_messages(chat_id, batches[chat_id])
            except NotFound as exc:
                outcomes[chat_id] = exc

        # Started together, whichever caller runs first finds no round running and stores its
        # own batch; the four others wait meanwhile and go together in the next round: at
        # most two commits for five batches (one per batch would be four).
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for chat_id in batches:
                    nursery.start_soon(insert, chat_id)
        assert storage.statistics().transactions - before <= 2
        a1, a2 = outcomes[chats[0]]
        assert [(i.message.content, i.message.seq) for i in (a1, a2) if i.message] == [
            ("a1", 1),
            ("a2", 2),
        ]
        (bad,) = outcomes[chats[1]]
        assert (bad.message, bad.error) == (None, "must be a message of this chat")
        k, k_again = outcomes[chats[2]]
        assert (k.created, k_again.created) == (True, False)
        assert k.message is not None
        assert k_again.message == k.message
        assert k.message.seq == 2  # after "earlier"
        (d1,) = outcomes[chats[3]]
        assert d1.created
        assert d1.message is not None
        assert d1.message.seq == 1
        assert isinstance(outcomes[999_999], NotFound)
        assert [m.content for m in await _all_messages(storage, chats[1])] == []


async def test_two_batches_of_one_chat_never_share_a_round(pg_database: str) -> None:
    """A round's rows come back keyed by chat: two batches of one chat in one round would each
    get the other's rows. The second waits for a later round and both get their own."""
    async with open_postgres_storage(pg_database, **FAST) as storage:
        _, users, chat = await make_group(storage, 2)
        alice = users[0]
        outcomes: dict[str, list[Any]] = {}

        async def insert(name: str, count: int) -> None:
            batch = [msg(alice, f"{name}{i}") for i in range(count)]
            outcomes[name] = await storage.insert_messages(chat.id, batch)

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                # Three callers: the first runs a round alone, the other two queue meanwhile
                # and, without the one-per-chat rule, would go together into the next one.
                for name, count in (("x", 1), ("y", 2), ("z", 3)):
                    nursery.start_soon(insert, name, count)
        for name, count in (("x", 1), ("y", 2), ("z", 3)):
            got = [i.message.content for i in outcomes[name] if i.message]
            assert got == [f"{name}{i}" for i in range(count)], (name, outcomes[name])
        seqs = sorted(i.message.seq for o in outcomes.values() for i in o if i.message)
        assert seqs == [1, 2, 3, 4, 5, 6]


async def test_a_round_that_fails_is_stored_batch_by_batch(pg_database: str) -> None:
    """One batch the driver refuses (a lone surrogate, past the edge that normally stops it)
    fails the round's one call; the round is then stored batch by batch, so only that batch
    fails and the others commit. The round is driven directly, so the path is certain."""
    async with open_postgres_storage(pg_database, **FAST) as storage:
        _, users, first = await make_group(storage, 2)
        alice = users[0]
        chats = [first.id]
        for name in ("b", "c"):
            chat = await storage.create_chat(
                first.workspace_id, ChatType.GROUP, name, None, alice.id, [u.id for u in users]
            )
            chats.append(chat.id)
        contents = {chats[0]: "one", chats[1]: "bad \ud83d", chats[2]: "fine"}
        requests = [_InsertRequest(c, [msg(alice, contents[c])]) for c in sorted(chats)]
        before = storage.statistics().transactions
        with trio.fail_after(20):
            await storage._run_round(requests)
        outcome = {r.chat_id: r.outcome for r in requests}
        refused = outcome[chats[1]]
        assert isinstance(refused, Invalid)
        assert refused.code == "unstorable_text"
        assert storage.statistics().transactions - before == 2  # batch by batch: two commits
        assert [m.content for m in await _all_messages(storage, chats[0])] == ["one"]
        assert [m.content for m in await _all_messages(storage, chats[2])] == ["fine"]
        assert [m.content for m in await _all_messages(storage, chats[1])] == []
        # The same round without the bad batch is one call and one commit.
        requests = [_InsertRequest(c, [msg(alice, "again")]) for c in (chats[0], chats[2])]
        before = storage.statistics().transactions
        await storage._run_round(requests)
        assert storage.statistics().transactions - before == 1
        assert all(not isinstance(r.outcome, Exception) for r in requests)


async def test_a_round_stores_thread_replies_and_mentions(pg_database: str) -> None:
    """The cross-chat round (``fechatter_insert_rounds``) applies the thread and mention
    rules of each chat's batch as the single-chat call does: replies count on their root,
    a root of another chat is refused naming ``thread_id``, mentions are stored."""
    async with open_postgres_storage(pg_database, **FAST) as storage:
        _, users, first = await make_group(storage, 2)
        alice, bob = users
        second = await storage.create_chat(
            first.workspace_id, ChatType.GROUP, "b", None, alice.id, [alice.id, bob.id]
        )
        (root,) = await send(storage, first.id, alice, "root")
        replies = [
            NewMessage(bob.id, "r1", (), None, None, thread_id=root.id, mentions=(alice.id,)),
            NewMessage(alice.id, "r2", (), None, "k", thread_id=root.id, mentions_channel=True),
        ]
        foreign = [NewMessage(bob.id, "x", (), None, None, thread_id=root.id), msg(bob, "ok")]
        requests = [_InsertRequest(first.id, replies), _InsertRequest(second.id, foreign)]
        before = storage.statistics().transactions
        with trio.fail_after(20):
            await storage._run_round(requests)
        assert storage.statistics().transactions - before == 1  # one call for both chats
        done, refused = (r.outcome for r in requests)
        assert done is not None
        assert not isinstance(done, Exception)
        assert refused is not None
        assert not isinstance(refused, Exception)
        r1, r2 = (i.message for i in done[0])
        assert r1 is not None
        assert r2 is not None
        assert [(m.thread_id, m.mentions, m.mentions_channel) for m in (r1, r2)] == [
            (root.id, (alice.id,), False),
            (root.id, (), True),
        ]
        bad, ok = refused[0]
        assert (bad.message, bad.error_field) == (None, "thread_id")
        assert ok.message is not None
        assert ok.message.seq == 1
        now = await storage.get_message(root.id)
        assert now is not None
        assert (now.reply_count, now.last_reply_at) == (2, r2.created_at)
        assert [m for m in await _all_messages(storage, first.id) if m.id != root.id] == [r1, r2]


async def test_a_round_whose_retry_reactions_cannot_be_read_is_stored_once(
    pg_database: str,
) -> None:
    """The round's one call commits in autocommit; nothing may run after it in the same
    operation. A batch holding a ``client_id`` retry of a live message used to read that
    message's reactions as a second statement: when it failed, the round was stored again
    batch by batch, every message twice. The reactions are now read after the round (by
    ``insert_messages``), so a failure there cannot touch what was stored."""
    async with open_postgres_storage(pg_database, **FAST) as storage:
        _, (alice, bob), first = await make_group(storage, 2)
        second = await storage.create_chat(
            first.workspace_id, ChatType.GROUP, "b", None, alice.id, [alice.id, bob.id]
        )
        [orig] = await storage.insert_messages(first.id, [msg(alice, "orig", client_id="k")])
        assert orig.message is not None
        assert await storage.add_reaction(first.id, orig.message.id, bob.id, "👍", 50)
        with psycopg.connect(pg_database, autocommit=True) as conn:  # reads of reactions fail
            conn.execute("ALTER TABLE message_reactions RENAME TO message_reactions_hidden")
        requests = [
            _InsertRequest(first.id, [msg(alice, "retry", client_id="k"), msg(bob, "new")]),
            _InsertRequest(second.id, [msg(bob, "other")]),
        ]
        before = storage.statistics().transactions
        with trio.fail_after(20):
            await storage._run_round(requests)
        with psycopg.connect(pg_database, autocommit=True) as conn:
            conn.execute("ALTER TABLE message_reactions_hidden RENAME TO message_reactions")
        assert [m.content for m in await _all_messages(storage, first.id)] == ["orig", "new"]
        assert [m.content for m in await _all_messages(storage, second.id)] == ["other"]
        assert storage.statistics().transactions - before == 1  # the round's one call
        assert all(not isinstance(r.outcome, Exception) for r in requests)


async def test_a_reply_to_a_root_another_process_deletes_meanwhile_is_refused(
    pg_server: PgServer, pg_database: str
) -> None:
    """Another process deletes the root (``delete_message``, its transaction still open) while
    a reply to it is being stored: the reply waits for the root's row, then sees the tombstone
    and is refused (field ``thread_id``); nothing is counted on the tombstone. (Migration 0006
    checked the root without locking it: the reply was stored into the deleted root.)"""
    async with (
        open_postgres_storage(pg_database, **FAST) as storage,
        open_pg_pool(pg_database, PoolConfig(size=1)) as other,
    ):
        _, (alice, bob), chat = await make_group(storage, 2)
        (root,) = await send(storage, chat.id, alice, "root")
        late = NewMessage(bob.id, "late", (), None, None, thread_id=root.id)
        outcome: list[Any] = []

        async def reply() -> None:
            outcome.extend(await storage.insert_messages(chat.id, [late]))

        with trio.fail_after(20):
            async with other.connection() as conn:
                deleter = conn.info.backend_pid
                await conn.execute("BEGIN")
                deleted = await run_op(conn, messages.delete_message(chat.id, root.id))
                assert deleted.tombstone.deleted
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(reply)
                    # Poll: the server gives no event when a statement starts waiting.
                    await wait_until_blocked_by(pg_server, deleter)
                    await conn.execute("COMMIT")
        [refused] = outcome
        assert (refused.message, refused.error_field) == (None, "thread_id")
        tombstone = await storage.get_message(root.id)
        assert tombstone is not None
        assert (tombstone.deleted, tombstone.reply_count, tombstone.last_reply_at) == (
            True,
            0,
            None,
        )
        assert [m.id for m in await _all_messages(storage, chat.id)] == [root.id]


async def test_the_group_commit_is_planned_once_and_probes_indexes(pg_database: str) -> None:
    """fechatter_insert_batch (migration 0018) runs its statements on generic plans (planned
    once per connection, not per call: a custom plan shows the chat id as a constant) whose
    every access to ``messages`` is an index probe per item or root, never a scan of the
    chat's history (``Index Cond: (chat_id = $1)`` alone, a Seq or Bitmap Heap Scan), nor
    of any other table.

    The plans come from auto_explain, loaded in this session only, its output sent to this
    client as notices (the test server has no pg_stat_statements; docs/storage.md "Planning
    the group commit" has the bench that measures the cost)."""
    with trio.fail_after(20):
        async with open_postgres_storage(pg_database, **FAST) as storage:
            _, (alice, bob), chat = await make_group(storage, 2)
            (root,) = await send(storage, chat.id, alice, "root")
            await send(storage, chat.id, bob, *(f"history {k}" for k in range(30)))
    plans: list[str] = []
    # A blocking connection (notices are read synchronously): its bounds are the server's.
    with psycopg.connect(
        pg_database, autocommit=True, connect_timeout=5, options="-c statement_timeout=10s"
    ) as conn:
        conn.add_notice_handler(lambda diag: plans.append(diag.message_primary or ""))
        conn.execute("LOAD 'auto_explain'")
        for setting in (
            "auto_explain.log_min_duration = 0",
            "auto_explain.log_nested_statements = on",
            "auto_explain.log_level = notice",
            "client_min_messages = notice",
        ):
            conn.execute(f"SET {setting}")
        for call in range(3):
            plans.clear()
            rows = conn.execute(
                "SELECT * FROM fechatter_insert_batch(%s, %s, %s, %s, %s, %s, %s, %s, %s, now())",
                (
                    chat.id,
                    [alice.id, bob.id],
                    ["a reply", "a retry"],
                    ["{}", "{}"],
                    [root.id, None],
                    [None, "k"],
                    [root.id, None],
                    ["{}", "{}"],
                    [False, False],
                ),
            ).fetchall()
            # Calls 2 and 3 retry the stored "k": its row comes back as existing.
            assert (rows[1][1] is not None) is (call > 0), rows
    batch = [p for p in plans if "WITH items AS" in p]
    lock = [p for p in plans if "SELECT DISTINCT th FROM unnest(p_threads)" in p]
    assert len(batch) == 1
    assert len(lock) == 1
    for plan in (batch[0], lock[0]):
        assert "chat_id = $1" in plan
        assert f"'{chat.id}'::bigint" not in plan  # no custom plan
        assert "Index Cond: (chat_id = $1)\n" not in plan
        assert "Seq Scan" not in plan, plan
        assert "Bitmap Heap Scan" not in plan, plan
