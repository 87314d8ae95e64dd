"""The PostgreSQL backend of ``Storage``: psycopg 3 async connections driven on trio.

The operations and their statements are ``core.py``'s, shared with SQLite; this module is the
seam. Each call checks a connection out of a trio-native ``PgPool`` (``postgres_pool.py``) and
drives one operation on it with ``await`` (``run_op``) — writes inside ``BEGIN`` … ``COMMIT``
(or, for an operation that is one atomic statement, alone in autocommit: one round trip),
reads that need it inside one read-only snapshot — on the trio thread, no worker threads; the
pool takes the connection back clean. A trio cancel (a caller's
deadline, a shutdown) cancels the statement on the server. Every call is bounded by
``operation_timeout``: a server that stops answering makes calls fail with ``Unavailable``
instead of hanging, and the pool reconnects by itself once the server is back. Why this
driver path: ``docs/storage.md``. This module must never let a psycopg exception escape.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from functools import partial
from typing import TypeVar, cast

import psycopg
import trio
from psycopg import errors as pg_errors
from psycopg.rows import DictRow

from fechatter.errors import ChatMoved, Conflict, FechatterError, Invalid, NotFound, Unavailable
from fechatter.models import Inserted, NewMessage
from fechatter.storage import messages
from fechatter.storage.cluster import Fence
from fechatter.storage.core import SqlStorage
from fechatter.storage.migrations import migrate
from fechatter.storage.outbox import OutboxEvent, send_events
from fechatter.storage.postgres_pool import Connection, PgPool, PoolConfig, open_pg_pool
from fechatter.storage.sql import Op, Result, Row, Script, Stmt, to_postgres

T = TypeVar("T")

log = logging.getLogger(__name__)

DEFAULT_OPERATION_TIMEOUT = 10.0
DEFAULT_POOL_SIZE = 20
# Connections a pool leaves to others when it sizes itself to max_connections: this process's
# own migration/admin use, psql sessions, monitoring.
SPARE_CONNECTIONS = 5
# One node's pool may use at most this share of the connections the server allows clients
# (max_connections less the reserved slots); past it, a second node (or a restart that overlaps
# the old process) cannot fill its pool, and the start logs a warning naming the setting.
POOL_SHARE_MAX = 0.5
# Chats whose batches one group-commit round stores together, at most.
ROUND_MAX = 256
# A round, shielded from its caller's cancellation, gets this many operation timeouts.
ROUND_TIMEOUTS = 2

# Server-side bounds of every pooled session (docs/cluster.md §7, "dead session"). A node
# frozen or cut off mid-transaction leaves its backend "idle in transaction", holding what the
# transaction locked — a fenced write's lease row FOR SHARE and chat row FOR UPDATE, the
# publisher's advisory lock — until the server notices; libpq's keepalives only tell the
# client. Every transaction of ours runs inside one ``_call``, bounded by the operation
# timeout (a publish batch, idle in transaction while it awaits its PubAcks, included; a
# group-commit round, bounded by ROUND_TIMEOUTS of them, is one statement, never idle), so
# a live node is never idle in transaction that long: the server ends a session idle in
# transaction for IDLE_IN_TRANSACTION_TIMEOUTS operation timeouts (30 s by default), which
# exceeds the worst hold of a live node with a margin and frees a dead node's locks.
IDLE_IN_TRANSACTION_TIMEOUTS = 3
# The server's own TCP keepalives (seconds, count), as the client's: a peer that vanished
# while its session was idle is noticed after ~25 s (idle 10 s + 3 probes 5 s apart).
SERVER_KEEPALIVES = (10, 5, 3)


def server_settings(idle_in_transaction_timeout: float) -> tuple[tuple[str, str], ...]:
    """The session settings every pooled connection sets at connect (``PoolConfig``):
    ``idle_in_transaction_session_timeout`` (``idle_in_transaction_timeout`` seconds, in
    whole milliseconds, ≥ 1) and ``tcp_keepalives_idle/interval/count``
    (``SERVER_KEEPALIVES``). All are settable by any user at connect; a connection pooler
    in front must pass ``options`` through."""
    idle, interval, count = SERVER_KEEPALIVES
    idle_ms = max(1, round(idle_in_transaction_timeout * 1000))
    return (
        ("idle_in_transaction_session_timeout", str(idle_ms)),
        ("tcp_keepalives_idle", str(idle)),
        ("tcp_keepalives_interval", str(interval)),
        ("tcp_keepalives_count", str(count)),
    )


# Unique constraints and indexes, as named in 0001_init.sql.
_CONFLICTS = {
    "users_email_key": ("email_taken", "email is already registered"),
    "workspaces_name_key": ("workspace_name_taken", "a workspace with this name exists"),
    "chats_channel_name": ("chat_name_taken", "a channel with this name exists"),
    "chats_single_pair": ("single_exists", "a direct chat of this pair exists"),
    "workspace_members_pkey": ("already_member", "already a member of this workspace"),
    "chat_members_pkey": ("already_member", "already a member of this chat"),
    "cluster_nodes_pkey": ("node_id_taken", "a node with this id is registered"),
}

# SQLSTATEs raised by fechatter_fence (migration 0008, docs/cluster.md §2).
FENCE_MOVED = "FX001"
FENCE_GONE = "FX002"


def translate_error(exc: psycopg.Error | UnicodeError) -> FechatterError:
    """The domain error for a driver error (the only place that inspects them).

    Text the driver cannot encode (a lone surrogate, NUL) is the caller's input: ``Invalid``
    (422); the transaction it was part of rolled back. A failed chat fence: ``FX001`` →
    ``ChatMoved`` (another node or epoch owns the chat), ``FX002`` → ``NotFound``
    (``chat_not_found``); nothing was written.
    """
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate == FENCE_MOVED:
        return ChatMoved("the chat is owned by another node now", retry_after=1)
    if sqlstate == FENCE_GONE:
        return NotFound("chat not found", code="chat_not_found")
    if isinstance(exc, UnicodeError) or (
        isinstance(exc, psycopg.DataError) and not isinstance(exc, pg_errors.NumericValueOutOfRange)
    ):
        return Invalid("the text cannot be stored", code="unstorable_text")
    if isinstance(exc, pg_errors.ForeignKeyViolation):
        return NotFound("a referenced record does not exist")
    if isinstance(exc, pg_errors.UniqueViolation):
        known = _CONFLICTS.get(exc.diag.constraint_name or "")
        if known is not None:
            code, detail = known
            return Conflict(detail, code=code)
        return Conflict("the write conflicts with stored data")
    if isinstance(exc, psycopg.IntegrityError):
        return Conflict("the write conflicts with stored data")
    if isinstance(exc, pg_errors.NumericValueOutOfRange):
        # An id beyond bigint names nothing that could exist.
        return NotFound("no such record")
    return Unavailable("storage unavailable", retry_after=1)


Call = Callable[[Connection], Awaitable[T]]


_BEGIN_SNAPSHOT = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
# Driver errors that mean the server ended the session (terminated, timed out, restarted).
_SESSION_ENDED = (psycopg.OperationalError, pg_errors.IdleInTransactionSessionTimeout)
# The largest value PostgreSQL takes for a timeout setting (milliseconds, INT_MAX: ~24.8 days).
_MAX_TIMEOUT_MS = 2**31 - 1


def _execute_text(text: str) -> Call[None]:
    """A call that runs one statement without parameters and reads no rows."""

    async def run(conn: Connection) -> None:
        await conn.execute(text)

    return run


class _PgSnapshot:
    """``core.ReadSnapshot`` on one connection inside one repeatable-read transaction."""

    def __init__(self, storage: PostgresStorage, conn: Connection) -> None:
        self._storage = storage
        self._conn = conn

    async def read(self, op: Op[T]) -> T:
        return await self.call(lambda conn: run_op(conn, op))

    async def call(self, fn: Call[T]) -> T:
        """``fn`` on the snapshot's connection, bounded like any call. A session the server
        ended meanwhile (terminated, the idle-in-transaction timeout, a restart) is said as
        such: the database ended the snapshot, which is no failure to connect."""
        try:
            return await self._storage._call_on(self._conn, fn)
        except Unavailable as exc:
            cause = exc.__cause__
            if type(exc) is not Unavailable or not isinstance(cause, _SESSION_ENDED):
                raise
            text = str(cause).strip()
            reason = text.splitlines()[0].strip() if text else type(cause).__name__
            if isinstance(cause, pg_errors.IdleInTransactionSessionTimeout):
                reason += " (the reader stalled between two reads past the server's bound)"
            raise Unavailable(f"the database ended the snapshot: {reason}", retry_after=1) from None


class OperationTimedOut(Unavailable):
    """A call did not finish within the storage's operation timeout (its transaction was
    rolled back); an ``Unavailable`` like any other, distinguishable by callers that can
    make the next call smaller (the outbox publisher halves its batch)."""


def _in_transaction(begin: str, fn: Call[T]) -> Call[T]:
    """``fn`` between ``begin`` and ``COMMIT``; on any failure the pool rolls back."""

    async def run(conn: Connection) -> T:
        await conn.execute(begin)
        result = await fn(conn)
        await conn.execute("COMMIT")
        return result

    return run


_RECORD_MIGRATION = to_postgres("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)")


async def _execute(conn: Connection, stmt: Stmt | Script) -> Result:
    if isinstance(stmt, Script):
        await conn.execute(stmt.body.encode())  # no parameters: one multi-statement query
        await conn.execute(_RECORD_MIGRATION, (stmt.version, stmt.applied_at))
        return Result()
    text = stmt.sql.postgres
    if stmt.many:
        rowcount = 0
        for params in stmt.params:
            rowcount += (await conn.execute(text, params)).rowcount
        return Result(rowcount=rowcount)
    if ";" in text:
        # Several statements in one query (one round trip, one implicit transaction): that
        # needs client-side binding; the result is the last statement's.
        client = psycopg.AsyncClientCursor(conn)
        await client.execute(text, stmt.params)
        while client.nextset():
            pass
        cur: psycopg.AsyncCursor[DictRow] = client
    else:
        cur = await conn.execute(text, stmt.params)
    rows = cast(list[Row], await cur.fetchall()) if cur.description is not None else []
    return Result(rows, cur.rowcount)


async def run_op(conn: Connection, op: Op[T]) -> T:
    """Drive an operation to its end on ``conn``, awaiting each statement on trio."""
    try:
        stmt = next(op)
        while True:
            stmt = op.send(await _execute(conn, stmt))
    except StopIteration as done:
        return cast(T, done.value)
    finally:
        op.close()


async def apply_postgres_migrations(conn: Connection) -> list[int]:
    """Apply the migrations not yet recorded (``migrations.migrate``); the versions applied.

    ``conn`` is in autocommit mode and idle. All pending migrations run in one transaction
    that first takes a transaction-level advisory lock, so processes that start together take
    turns (the second one finds everything applied) and a failed or cancelled start leaves
    neither a half-applied migration nor a lock behind. Each migration commits together with
    its ``schema_migrations`` row.
    """
    return await _in_transaction("BEGIN", lambda c: run_op(c, migrate("postgres")))(conn)


class PostgresStorage(SqlStorage):
    """``Storage`` on one PostgreSQL database; build it with ``open_postgres_storage``."""

    dialect = "postgres"

    def __init__(self, pool: PgPool, operation_timeout: float) -> None:
        super().__init__()
        self._pool = pool
        self._operation_timeout = operation_timeout
        self._committed = 0
        # Group commit across chats: sends of different chats that arrive while a round is
        # being stored wait here and go together in the next round (one call, one
        # transaction). Bounded by the callers: each chat's actor has at most one batch in
        # flight, so at most one entry per active chat.
        self._round_queue: list[_InsertRequest] = []
        self._round_running = False
        self._round_over = trio.Event()

    # -- plumbing --------------------------------------------------------------------------
    @asynccontextmanager
    async def reserved(self, size: int = 1) -> AsyncIterator[PostgresStorage]:
        """A storage on ``size`` connections of its own (same database, session settings and
        bounds, no migration) for work that must never wait behind this pool: the cluster
        node's heartbeat, which a pool full of slow writes would otherwise delay past its
        self-fence (docs/cluster.md §6 budget: pool + 1). Closed on exit."""
        conninfo, config = self._pool.source
        async with open_pg_pool(conninfo, replace(config, size=size)) as pool:
            yield PostgresStorage(pool, self._operation_timeout)

    @property
    def pool_size(self) -> int:
        """The most connections this storage's pool holds (a fixed count)."""
        return self._pool.statistics().size

    async def connection_budget(self) -> ConnectionBudget:
        """The server's ``max_connections`` and reserved slots now; ``Unavailable``."""
        return await self._call(connection_budget)

    async def _bounded(self, work: Callable[[], Awaitable[T]]) -> T:
        """``await work()`` within the operation timeout (else ``OperationTimedOut``), driver
        errors translated into domain errors: the one bound every call here runs under."""
        with trio.move_on_after(self._operation_timeout) as bounded:
            try:
                return await work()
            except (psycopg.Error, UnicodeError) as exc:
                raise translate_error(exc) from exc
        assert bounded.cancelled_caught
        raise OperationTimedOut("the database did not answer in time", retry_after=1)

    async def _call(self, fn: Call[T]) -> T:
        """Run ``fn`` on a pooled connection, bounded; driver errors become domain errors."""

        async def pooled() -> T:
            async with self._pool.connection() as conn:
                return await fn(conn)

        return await self._bounded(pooled)

    async def _call_on(self, conn: Connection, fn: Call[T]) -> T:
        """``_call`` on a connection the caller holds already."""
        return await self._bounded(partial(fn, conn))

    @asynccontextmanager
    async def open_read_snapshot(self, hold: float = math.inf) -> AsyncIterator[_PgSnapshot]:
        """One ``REPEATABLE READ READ ONLY`` transaction on one pooled connection for the
        whole block (``SqlStorage``). Each read in it is bounded by the operation timeout.
        Between reads the connection is idle in transaction: for a finite ``hold`` (seconds
        the caller will hold the block at most, ``ArchiveStore.snapshot_limit``) the
        server's idle-in-transaction timeout is set for this transaction to ``hold`` plus
        one operation timeout (``SET LOCAL``), so a caller stalled between reads (a slow
        disk under the archive) is ended by its own limit, not by the node's 30 s bound;
        without one, that bound (``idle_in_transaction_timeout``) ends the session and the
        next read fails with ``Unavailable`` ("the database ended the snapshot: …"). While
        open, the snapshot's xmin keeps vacuum from removing rows deleted or updated since
        it began."""
        async with AsyncExitStack() as stack:
            conn = await self._bounded(partial(stack.enter_async_context, self._pool.connection()))
            # On any failure the pool rolls back what is left open (shielded, bounded) as
            # the connection goes back in.
            snapshot = _PgSnapshot(self, conn)
            await snapshot.call(_execute_text(_BEGIN_SNAPSHOT))
            if math.isfinite(hold):
                idle_ms = min(_MAX_TIMEOUT_MS, math.ceil((hold + self._operation_timeout) * 1000))
                await snapshot.call(
                    _execute_text(f"SET LOCAL idle_in_transaction_session_timeout = {idle_ms:d}")
                )
            # A transaction takes its snapshot at its first query, not at BEGIN: take it now.
            await snapshot.call(_execute_text("SELECT 1"))
            yield snapshot
            await snapshot.call(_execute_text("COMMIT"))

    async def _write(self, fn: Call[T]) -> T:
        """Run ``fn`` in one write transaction."""
        result = await self._call(_in_transaction("BEGIN", fn))
        self._committed += 1
        return result

    async def _read(self, fn: Call[T], *, snapshot: bool = False) -> T:
        """Run a read; ``snapshot`` puts several statements in one consistent snapshot."""
        if snapshot:
            return await self._call(_in_transaction(_BEGIN_SNAPSHOT, fn))
        return await self._call(fn)

    # -- the seam of core.SqlStorage -------------------------------------------------------
    async def _read_op(self, op: Op[T], *, snapshot: bool = False) -> T:
        return await self._read(lambda conn: run_op(conn, op), snapshot=snapshot)

    async def _write_op(self, op: Op[T], *, one_statement: bool = False) -> T:
        if not one_statement:
            return await self._write(lambda conn: run_op(conn, op))
        # Atomic by itself in autocommit: no BEGIN/COMMIT round trips.
        result = await self._call(lambda conn: run_op(conn, op))
        self._committed += 1
        return result

    def _transactions(self) -> int:
        return self._committed

    async def _fenced_write_op(self, op: Op[T], fence: Fence) -> T:
        """Run ``op`` in one write transaction that starts with ``fechatter_fence``.

        ``BEGIN`` and the fence go as one simple query (one round trip, client-side binding
        of an int, a text and an int), so a fenced write costs no round trip more than an
        unfenced one. ``ChatMoved`` / ``NotFound`` when the fence fails: nothing written."""
        return await self._chat_write_op(op, fence.chat_id, fence, lock_chat=False)

    async def _chat_write_op(
        self, op: Op[T], chat_id: int, fence: Fence | None, *, lock_chat: bool
    ) -> T:
        """Run ``op`` in one write transaction on chat ``chat_id`` that starts with the
        fence (if any) and, with ``lock_chat``, the chat row ``FOR UPDATE`` (the outbox's
        event counter: lease row, then chat row, then whatever ``op`` locks), all sent with
        ``BEGIN`` as one simple query — no extra round trip."""
        head = "BEGIN"
        args: list[object] = []
        if fence is not None:
            head += "; SELECT fechatter_fence(%s, %s, %s)"
            args += [fence.chat_id, fence.node_id, fence.epoch]
        if lock_chat:
            head += "; SELECT 1 FROM chats WHERE id = %s FOR UPDATE"
            args.append(chat_id)

        async def run(conn: Connection) -> T:
            fenced = psycopg.AsyncClientCursor(conn)
            await fenced.execute(head, args)
            while fenced.nextset():
                pass
            result = await run_op(conn, op)
            await conn.execute("COMMIT")
            return result

        result = await self._call(run)
        self._committed += 1
        return result

    # -- group commit across chats ---------------------------------------------------------
    async def insert_messages(self, chat_id: int, batch: Sequence[NewMessage]) -> list[Inserted]:
        """Insert a chat's batch, unfenced: ``_insert_messages(chat_id, batch, None)``."""
        return await self._insert_messages(chat_id, batch, None)

    async def _fenced_insert_messages(
        self, chat_id: int, batch: Sequence[NewMessage], fence: Fence
    ) -> list[Inserted]:
        return await self._insert_messages(chat_id, batch, fence)

    async def _outbox_insert_messages(
        self, chat_id: int, batch: Sequence[NewMessage], fence: Fence | None
    ) -> tuple[list[Inserted], list[OutboxEvent]]:
        """``_insert_messages`` with the batch's outbox rows written in the same call (still
        one round trip, in the cross-chat round too): the results, and the events written
        (``outbox.send_events``)."""
        if not batch:
            return [], []
        request = _InsertRequest(chat_id, batch, fence, outbox=True)
        results = await self._insert_request(request)
        if request.ev_base is None:  # pragma: no cover - every stored outbox batch has one
            raise AssertionError("an outbox batch came back without its event base")
        return results, send_events(chat_id, request.ev_base, results)

    async def _insert_messages(
        self, chat_id: int, batch: Sequence[NewMessage], fence: Fence | None
    ) -> list[Inserted]:
        """Insert a chat's batch (see ``Storage.insert_messages``), committed together with
        the batches of other chats that are waiting at the same moment (SQLite's writer does
        the same across its round): whichever caller finds no round running stores everything
        queued in one call; the others wait for their round.

        A caller cancelled before its round started is withdrawn. Once its round has started,
        the round completes for every batch in it (shielded, within ``ROUND_TIMEOUTS``
        operation timeouts, then ``Unavailable`` for what is left), also for a caller that
        was cancelled meanwhile — as a write handed to SQLite's writer thread completes.

        ``fence``: the batch's ``fechatter_fence`` runs in the same call (the fenced
        functions of migration 0008); a failed fence fails this batch alone."""
        if not batch:
            return []
        return await self._insert_request(_InsertRequest(chat_id, batch, fence))

    async def _insert_request(self, request: _InsertRequest) -> list[Inserted]:
        """Queue ``request`` for a round and answer it (see ``_insert_messages``)."""
        self._round_queue.append(request)
        try:
            while request.outcome is None:
                if self._round_running:
                    await self._round_over.wait()
                    continue
                self._round_running = True
                taken = _take_round(self._round_queue)
                try:
                    await self._run_round(taken)
                finally:
                    self._round_running = False
                    over, self._round_over = self._round_over, trio.Event()
                    over.set()
        finally:
            # Cancelled before a round took it: withdraw it, so nothing is stored for it.
            if request.outcome is None and request in self._round_queue:
                self._round_queue.remove(request)
        outcome = request.outcome
        if isinstance(outcome, FechatterError):
            raise outcome
        # After the commit, outside the round: the round's call is one statement.
        return await self.with_retry_reactions(outcome[0])

    async def _run_round(self, requests: list[_InsertRequest]) -> None:
        """Answer every request of a round, whatever happens to the task running it."""
        deadline = trio.current_time() + ROUND_TIMEOUTS * self._operation_timeout
        try:
            with trio.CancelScope(shield=True, deadline=deadline):
                await self._store_round(requests)
        finally:
            late = Unavailable("the database did not answer in time", retry_after=1)
            for request in requests:
                if request.outcome is None:
                    request.outcome = late

    async def _store_round(self, requests: list[_InsertRequest]) -> None:
        """Store ``requests`` (distinct chats, ascending) in one call; if that call fails,
        store each alone so a failure (a refused text, a lock held too long, a lost race)
        stays with its batch — a fence that fails (``ChatMoved``) too."""
        if len(requests) > 1:
            bases: dict[int, int] = {}
            op = messages.insert_rounds_postgres(
                [(r.chat_id, r.batch) for r in requests],
                [r.fence_args() for r in requests],
                [r.outbox for r in requests],
                bases,
            )
            try:
                outcomes = await self._call(lambda conn: run_op(conn, op))
            except FechatterError:
                pass  # nothing was written: store batch by batch below
            else:
                self._committed += 1
                for request, outcome in zip(requests, outcomes, strict=True):
                    request.ev_base = bases.get(request.chat_id)
                    self._answer(request, outcome)
                return
        for request in requests:
            try:
                self._answer(request, await self._call(partial(_insert_one, request)))
                self._committed += 1
            except FechatterError as exc:
                request.outcome = exc

    def _answer(self, request: _InsertRequest, outcome: messages.RoundOutcome) -> None:
        request.outcome = outcome
        if not isinstance(outcome, FechatterError):
            self._message_batches += 1
            self._messages_inserted += outcome[1]


async def _insert_one(request: _InsertRequest, conn: Connection) -> tuple[list[Inserted], int]:
    bases: dict[int, int] | None = {} if request.outbox else None
    op = messages.insert_messages(
        "postgres", request.chat_id, request.batch, request.fence_args(), bases
    )
    outcome = await run_op(conn, op)
    if bases is not None:
        request.ev_base = bases.get(request.chat_id)
    return outcome


_BEGIN_FENCED = "BEGIN; SELECT fechatter_fence(%s, %s, %s)"


def _take_round(queue: list[_InsertRequest]) -> list[_InsertRequest]:
    """Remove and return the next round from ``queue``: in arrival order, at most ``ROUND_MAX``
    requests and at most ONE per chat (a round's rows come back keyed by chat, and a chat's
    batches must commit in arrival order), sorted by chat id (the lock order). A second batch
    of a chat stays queued for a later round — the ChatActor never sends one (it awaits each
    commit), but a caller that does must not get another batch's rows."""
    taken: dict[int, _InsertRequest] = {}
    rest: list[_InsertRequest] = []
    for request in queue:
        if len(taken) < ROUND_MAX and request.chat_id not in taken:
            taken[request.chat_id] = request
        else:
            rest.append(request)
    queue[:] = rest
    return sorted(taken.values(), key=lambda r: r.chat_id)


class _InsertRequest:
    """One chat's batch waiting for (or stored in) a round; ``outcome`` set when answered."""

    __slots__ = ("batch", "chat_id", "ev_base", "fence", "outbox", "outcome")

    def __init__(
        self,
        chat_id: int,
        batch: Sequence[NewMessage],
        fence: Fence | None = None,
        *,
        outbox: bool = False,
    ) -> None:
        self.chat_id = chat_id
        self.batch = batch
        self.fence = fence
        self.outbox = outbox  # write the batch's events (migration 0009) in the same call
        self.ev_base: int | None = None  # the chat's last_event_seq before them, once stored
        self.outcome: tuple[list[Inserted], int] | FechatterError | None = None

    def fence_args(self) -> messages.FenceArgs | None:
        return None if self.fence is None else (self.fence.node_id, self.fence.epoch)


@asynccontextmanager
async def open_postgres_storage(
    url: str,
    *,
    pool_size: int | None = None,
    acquire_timeout: float = 5.0,
    connect_timeout: int = 5,
    operation_timeout: float = DEFAULT_OPERATION_TIMEOUT,
    idle_in_transaction_timeout: float | None = None,
) -> AsyncIterator[PostgresStorage]:
    """Connect to the database at ``url`` (migrating it if needed); close the pool on exit.

    ``pool_size``: at most this many connections (None: ``DEFAULT_POOL_SIZE``); either way
    capped to what the server has free when this opens (``free_connections``), so processes
    that start one after another never ask for more than ``max_connections``. ``Unavailable``
    if the server cannot be reached or migrated within the bounds.
    ``idle_in_transaction_timeout``: seconds after which the server ends a session left idle
    in a transaction (a dead or frozen node's; None: ``IDLE_IN_TRANSACTION_TIMEOUTS``
    times ``operation_timeout``), see ``server_settings``.
    """
    idle_timeout = (
        IDLE_IN_TRANSACTION_TIMEOUTS * operation_timeout
        if idle_in_transaction_timeout is None
        else idle_in_transaction_timeout
    )
    settings = server_settings(idle_timeout)
    wanted = DEFAULT_POOL_SIZE if pool_size is None else pool_size
    # One connection first, to migrate and to ask the server how many connections it has free.
    setup = PoolConfig(
        size=1,
        acquire_timeout=acquire_timeout,
        connect_timeout=connect_timeout,
        server_settings=settings,
    )
    async with open_pg_pool(url, setup) as setup_pool:
        setup_storage = PostgresStorage(setup_pool, operation_timeout)
        await setup_storage._call(apply_postgres_migrations)
        free = await setup_storage._call(free_connections)
        budget = await setup_storage._call(connection_budget)
    too_big = budget.oversized_pool(wanted)
    if too_big is not None:
        log.warning("%s", too_big)
    size = max(1, min(wanted, free))
    if size < wanted:
        log.warning(
            "PostgreSQL has %d connections free (max_connections less reserved slots, those in"
            " use and %d spare): a pool of %d instead of %d",
            free,
            SPARE_CONNECTIONS,
            size,
            wanted,
        )
    config = PoolConfig(
        size=size,
        acquire_timeout=acquire_timeout,
        connect_timeout=connect_timeout,
        server_settings=settings,
    )
    async with open_pg_pool(url, config) as pool:
        yield PostgresStorage(pool, operation_timeout)


async def free_connections(conn: Connection) -> int:
    """Connections this process may still open: ``max_connections`` less the superuser and
    ``reserved_connections`` slots, those in use now and ``SPARE_CONNECTIONS``, plus this one
    (closed before the pool opens)."""
    cur = await conn.execute(
        "SELECT current_setting('max_connections')::int"
        " - current_setting('superuser_reserved_connections')::int"
        " - COALESCE(current_setting('reserved_connections', true)::int, 0)"
        " - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
        " AS free"
    )
    row = await cur.fetchone()
    return (int(row["free"]) if row else 0) - SPARE_CONNECTIONS + 1


@dataclass(frozen=True, slots=True)
class ConnectionBudget:
    """What a PostgreSQL server allows its ordinary clients (counts of connections)."""

    max_connections: int
    reserved: int  # superuser_reserved_connections + reserved_connections (PostgreSQL 16+)

    @property
    def available(self) -> int:
        """Connections ordinary (non-superuser) clients of every node may hold together."""
        return max(0, self.max_connections - self.reserved)

    def cluster_overcommitted(self, nodes: int, pool_size: int) -> str | None:
        """The error to log when ``nodes`` live nodes (this one counted), each counted at
        ``pool_size + 2`` connections (the budget rule of docs/cluster.md §6, with a margin
        for other clients), may need more than ``available - SPARE_CONNECTIONS``; else
        None. It only warns: a node whose pool cannot grow gets ``Unavailable`` (503) when
        PostgreSQL refuses a connection, which the operator should hear of at start."""
        need = nodes * (pool_size + 2)
        room = self.available - SPARE_CONNECTIONS
        if need <= room:
            return None
        return (
            f"{nodes} cluster nodes with database_pool_size {pool_size} may hold {need}"
            f" PostgreSQL connections (pool + 2 each), more than the {room} the server allows"
            f" (max_connections {self.max_connections} less {self.reserved} reserved and"
            f" {SPARE_CONNECTIONS} spare): lower database_pool_size to at most"
            f" {max(1, room // nodes - 2)} on every node or raise max_connections"
        )

    def oversized_pool(self, pool_size: int) -> str | None:
        """The warning to log when one node's ``pool_size`` exceeds ``POOL_SHARE_MAX`` of
        ``available`` (two such nodes cannot both fill their pools), else None."""
        if pool_size <= self.available * POOL_SHARE_MAX:
            return None
        return (
            f"database_pool_size {pool_size} is more than {POOL_SHARE_MAX:.0%} of the"
            f" {self.available} connections PostgreSQL allows clients (max_connections"
            f" {self.max_connections} less {self.reserved} reserved): a second node, or a"
            " restart overlapping this process, cannot fill its pool; set"
            " database_pool_size (FECHATTER_DATABASE_POOL_SIZE) to at most"
            " (max_connections - reserved - other clients) / nodes, or raise max_connections"
        )


async def connection_budget(conn: Connection) -> ConnectionBudget:
    """The server's ``max_connections`` and reserved slots (``SHOW``-able settings)."""
    cur = await conn.execute(
        "SELECT current_setting('max_connections')::int AS max_connections,"
        " current_setting('superuser_reserved_connections')::int"
        " + COALESCE(current_setting('reserved_connections', true)::int, 0) AS reserved"
    )
    row = await cur.fetchone()
    assert row is not None  # a SELECT without FROM returns its one row
    return ConnectionBudget(int(row["max_connections"]), int(row["reserved"]))
