"""A trio-native, bounded pool of psycopg ``AsyncConnection``s driven on trio without threads.

Every touch-point with psycopg's connection objects lives here and in ``postgres.py``:

- ``Connection`` is psycopg's ``AsyncConnection`` with its ``wait()`` — the one place where
  psycopg blocks on the socket — replaced: it drives psycopg's generator protocol (yield
  ``Wait.R/W/RW``, receive ``Ready``) on ``trio.lowlevel.wait_readable/wait_writable``, so
  statements run on the trio thread with no worker thread and no asyncio loop. If the waiting
  task is cancelled (a caller's deadline, the operation timeout, shutdown), the running
  statement is cancelled *on the server* (libpq's cancel request, also driven on trio) and the
  same generator is drained, shielded and bounded by ``CANCEL_WAIT``, until the server has
  answered; a connection the server does not release in time is closed. Either way the
  ``trio.Cancelled`` propagates and the connection is left idle, in a failed transaction, or
  closed — never with a statement still running.
- ``PgPool.connection()`` checks a connection out: waiting for a free slot is bounded
  (``acquire_timeout``, then ``Unavailable``), a checked-out connection is healthy (not closed or
  broken, idle, nothing unread on its socket — a server that restarted or terminated the session
  leaves a message or EOF there — and pinged if it sat idle longer than ``ping_after``), and a
  missing one is (re)connected with a bounded ``connect_timeout``. A connection goes back to the
  pool only idle (an open or failed transaction is rolled back, bounded); anything else is
  closed.

Connecting is the only work done on a worker thread: libpq resolves host names and walks
multi-host URLs synchronously, and a connect is rare (pool fill, after an outage).

This relies on psycopg internals (the generator protocol and ``AsyncConnection.wait``,
``AsyncConnection.lock``, building the connection from a ``pq.PGconn``), so ``pyproject.toml``
pins psycopg to one minor version; see ``docs/storage.md``. This module raises ``Unavailable``
for exhausted pools and ``DatabaseUnreachable`` (an ``Unavailable``) for failed connects; it
must never let a psycopg exception escape from the pool's own work, nor block the trio
thread on the network.
"""

from __future__ import annotations

import select
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import psycopg
import trio
from psycopg import pq
from psycopg.abc import PQGen
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import TransactionStatus
from psycopg.pq.abc import PGcancelConn, PGconn
from psycopg.rows import DictRow, dict_row
from psycopg.waiting import Ready, Wait

from fechatter.errors import DatabaseUnreachable, Unavailable

T = TypeVar("T")

# How long a cancelled statement may take to stop on the server (cancel request plus the
# server's answer) before its connection is given up and closed.
CANCEL_WAIT = 5.0


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """Sizes and bounds of a ``PgPool`` (seconds)."""

    size: int = 10
    acquire_timeout: float = 5.0
    connect_timeout: int = 5  # libpq counts whole seconds, minimum 2
    ping_after: float = 30.0
    # Server settings of every connection, sent at connect as libpq ``options``
    # (``-c name=value``, after any ``options`` of the URL): ``(name, value)`` pairs.
    server_settings: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class PoolStatistics:
    size: int
    idle: int
    in_use: int
    connects: int
    discarded: int


class _ExclusiveLock:
    """Stands in for psycopg's per-connection ``asyncio.Lock``, which needs an asyncio loop.

    The pool lends a connection to one task at a time, so the lock is never contended; a
    second holder is a bug and fails loudly. No checkpoint: a statement costs no extra trip
    through trio's scheduler.
    """

    def __init__(self) -> None:
        self._held = False

    async def __aenter__(self) -> None:
        if self._held:
            raise RuntimeError("a pooled connection is used by two tasks at once")
        self._held = True

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._held = False


async def _wait_fd(fileno: int, state: int) -> int:
    """Park until ``fileno`` is ready for what psycopg's generator asked (``Wait`` flags)."""
    if state == Wait.R:
        await trio.lowlevel.wait_readable(fileno)
        return Ready.R
    if state == Wait.W:
        await trio.lowlevel.wait_writable(fileno)
        return Ready.W
    # RW: libpq could not flush a large message and also wants to read what the server sends
    # meanwhile. Rare (big parameters); race both waits.
    ready: int = Ready.NONE

    async def park(wait: Any, flag: Ready, scope: trio.CancelScope) -> None:
        nonlocal ready
        await wait(fileno)
        ready |= flag
        scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(park, trio.lowlevel.wait_readable, Ready.R, nursery.cancel_scope)
        nursery.start_soon(park, trio.lowlevel.wait_writable, Ready.W, nursery.cancel_scope)
    return ready


async def _drive_pqconn_gen(gen: Any) -> None:
    """Run a libpq cancel/connect-style generator that yields ``(fileno, Wait)`` pairs."""
    try:
        fileno, state = next(gen)
        while True:
            ready = await _wait_fd(fileno, state)
            fileno, state = gen.send(ready)
    except StopIteration:
        return


def _cancel_poll(cancel: PGcancelConn) -> Any:
    """A generator over libpq's non-blocking cancel connection (``PQcancelPoll``)."""
    while True:
        status = cancel.poll()
        if status == pq.PollingStatus.OK:
            return
        if status == pq.PollingStatus.READING:
            yield cancel.socket, Wait.R
        elif status == pq.PollingStatus.WRITING:
            yield cancel.socket, Wait.W
        else:
            raise psycopg.OperationalError(f"cancel request failed: {cancel.get_error_message()}")


class Connection(psycopg.AsyncConnection[DictRow]):
    """psycopg's async connection, parked on trio; build it with ``connect()``."""

    def __init__(self, pgconn: PGconn) -> None:
        super().__init__(pgconn, row_factory=dict_row)
        self.lock = _ExclusiveLock()  # type: ignore[assignment]

    async def wait(
        self,
        gen: PQGen[T],
        interval: float | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - psycopg's signature
    ) -> T:
        """Consume one of psycopg's generators, waiting on trio (overrides psycopg's)."""
        if timeout is not None:  # only notifies() waits with a timeout; Fechatter never does
            raise NotImplementedError("timed waits are not driven on trio")
        try:
            state = next(gen)
            fileno = self.pgconn.socket
            while True:
                try:
                    ready = await _wait_fd(fileno, state)
                except OSError as exc:
                    await self._give_up(gen)
                    raise psycopg.OperationalError("connection socket failed") from exc
                except BaseException:
                    # trio.Cancelled (or KeyboardInterrupt) while the server works on a
                    # statement: stop it there and read its end, then let the cancel go on.
                    await self._interrupted(gen)
                    raise
                state = gen.send(ready)
        except StopIteration as done:
            result: T = done.value
            return result

    async def _interrupted(self, gen: PQGen[Any]) -> None:
        """Cancel the statement ``gen`` is running on the server and drain ``gen``, bounded.

        Afterwards the connection is idle, in a failed transaction, or closed.
        """
        ended = False
        with trio.CancelScope(shield=True), trio.move_on_after(CANCEL_WAIT):
            if self.pgconn.transaction_status == TransactionStatus.ACTIVE:
                with suppress(psycopg.Error, OSError):
                    await self.request_cancel()
                # Resume ``gen`` where the cancel interrupted it: it reads the statement's
                # end (QueryCanceled, or its result if it finished first) and keeps
                # psycopg's bookkeeping (prepared statements) consistent.
                try:
                    fileno = self.pgconn.socket
                    ready: int = Ready.NONE  # the generator waits again for this
                    while True:
                        state = gen.send(ready)
                        ready = await _wait_fd(fileno, state)
                except StopIteration:
                    ended = True  # the statement completed before the cancel reached it
                except psycopg.Error:
                    ended = True  # QueryCanceled, as expected (or the connection broke)
                except OSError:
                    pass
        if not ended or self.pgconn.transaction_status in (
            TransactionStatus.ACTIVE,
            TransactionStatus.UNKNOWN,
        ):
            await self._give_up(gen)

    async def _give_up(self, gen: PQGen[Any]) -> None:
        gen.close()
        await self.close()

    async def request_cancel(self) -> None:
        """Ask the server to cancel the running statement (libpq's cancel request)."""
        if psycopg.capabilities.has_cancel_safe():  # libpq >= 17: non-blocking, on trio
            cancel = self.pgconn.cancel_conn()
            try:
                cancel.start()
                await _drive_pqconn_gen(_cancel_poll(cancel))
            finally:
                cancel.finish()
        else:  # pragma: no cover - psycopg[binary] bundles libpq >= 17
            await trio.to_thread.run_sync(self.pgconn.get_cancel().cancel, abandon_on_cancel=True)

    @classmethod
    async def open(cls, conninfo: str, limiter: trio.CapacityLimiter) -> Connection:
        """Connect on a worker thread (bounded by libpq's ``connect_timeout``).

        A cancelled connect leaves the thread to close what it made.
        """
        made: list[PGconn] = []
        lock = threading.Lock()
        abandoned = False

        def connect() -> PGconn:
            pgconn = pq.PGconn.connect(conninfo.encode())
            if pgconn.status != pq.ConnStatus.OK:
                message = pgconn.get_error_message()
                pgconn.finish()
                raise psycopg.OperationalError(f"connection failed: {message}".rstrip())
            with lock:
                if abandoned:
                    pgconn.finish()
                else:
                    made.append(pgconn)
            return pgconn

        try:
            pgconn = await trio.to_thread.run_sync(connect, abandon_on_cancel=True, limiter=limiter)
        except trio.Cancelled:
            with lock:
                abandoned = True
                for pgconn in made:  # finished just before the cancel
                    pgconn.finish()
            raise
        pgconn.nonblocking = 1  # psycopg's generators expect a non-blocking libpq connection
        conn = cls(pgconn)
        await conn.set_autocommit(True)
        return conn


def _socket_is_quiet(conn: Connection) -> bool:
    """True if nothing arrived on an idle connection (no termination notice, no EOF)."""
    # poll, not select: a busy server has sockets numbered past select()'s limit of 1024, and
    # select() raising there made every checkout throw away a healthy connection.
    try:
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLIN | select.POLLPRI)
        return not poller.poll(0)
    except (OSError, ValueError, psycopg.Error):
        return False


def _idle(conn: Connection) -> bool:
    """Open, and no transaction or statement in progress (libpq's view: no round trip)."""
    pgconn = conn.pgconn
    return pgconn.status == pq.ConnStatus.OK and pgconn.transaction_status == _IDLE


_IDLE = TransactionStatus.IDLE


def _healthy(conn: Connection) -> bool:
    return _idle(conn) and _socket_is_quiet(conn)


class PgPool:
    """At most ``config.size`` connections to ``conninfo``; build it with ``open_pg_pool``."""

    def __init__(self, conninfo: str, config: PoolConfig) -> None:
        if config.size < 1:
            raise ValueError("pool size must be at least 1")
        options = " ".join(
            [str(conninfo_to_dict(conninfo).get("options") or "")]
            + [f"-c {name}={value}" for name, value in config.server_settings]
        ).strip()
        self._conninfo = make_conninfo(
            conninfo,
            options=options or None,
            connect_timeout=config.connect_timeout,
            # Keepalives notice a peer that vanished without closing the socket.
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
        )
        self._config = config
        self.source = (conninfo, config)  # to open a sibling pool (``PostgresStorage.reserved``)
        self._slots = trio.Semaphore(config.size)
        self._connect_threads = trio.CapacityLimiter(config.size)
        self._idle: list[tuple[Connection, float]] = []
        self._closed = False
        self._connects = 0
        self._discarded = 0

    def statistics(self) -> PoolStatistics:
        size = self._config.size
        return PoolStatistics(
            size=size,
            idle=len(self._idle),
            in_use=size - self._slots.value,
            connects=self._connects,
            discarded=self._discarded,
        )

    async def _new_connection(self) -> Connection:
        try:
            conn = await Connection.open(self._conninfo, self._connect_threads)
        except psycopg.Error as exc:
            raise DatabaseUnreachable("cannot connect to the database", retry_after=1) from exc
        self._connects += 1
        return conn

    async def _checkout(self) -> Connection:
        while self._idle:
            conn, idle_since = self._idle.pop()
            if not _healthy(conn):
                await self._discard(conn)
                continue
            if trio.current_time() - idle_since > self._config.ping_after:
                try:
                    await conn.execute("SELECT 1")
                except psycopg.Error:
                    await self._discard(conn)
                    continue
            return conn
        return await self._new_connection()

    async def _discard(self, conn: Connection) -> None:
        self._discarded += 1
        with suppress(psycopg.Error):
            await conn.close()  # no network wait: libpq queues the goodbye, closes the socket

    async def _checkin(self, conn: Connection) -> None:
        if self._closed or conn.closed or conn.broken:
            await self._discard(conn)
            return
        if not _idle(conn):
            # A failed or cancelled call left a transaction open: roll back, bounded.
            with (
                trio.CancelScope(shield=True),
                trio.move_on_after(CANCEL_WAIT),
                suppress(psycopg.Error),
            ):
                await conn.rollback()
            if not _idle(conn):
                await self._discard(conn)
                return
        self._idle.append((conn, trio.current_time()))

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A healthy connection for one call; ``Unavailable`` when none is free in time."""
        if self._closed:
            raise Unavailable("the database pool is closed")
        if self._slots.value:
            # A free slot: no wait, no checkpoint (the statement that follows yields anyway).
            self._slots.acquire_nowait()
        else:
            with trio.move_on_after(self._config.acquire_timeout) as waited:
                await self._slots.acquire()
            if waited.cancelled_caught:
                raise Unavailable("no database connection free", retry_after=1)
        try:
            conn = await self._checkout()
            try:
                yield conn
            finally:
                await self._checkin(conn)
        finally:
            self._slots.release()

    async def aclose(self) -> None:
        """Close the idle connections; connections in use close when they come back."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn, _ in idle:
            with suppress(psycopg.Error):
                await conn.close()


@asynccontextmanager
async def open_pg_pool(conninfo: str, config: PoolConfig | None = None) -> AsyncIterator[PgPool]:
    """A pool that closes its connections on exit."""
    pool = PgPool(conninfo, config or PoolConfig())
    try:
        yield pool
    finally:
        await pool.aclose()
