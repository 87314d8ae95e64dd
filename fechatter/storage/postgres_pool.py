"""A trio-native, bounded pool of psycopg (sync) connections, each call run in a worker thread.

Every touch-point with psycopg's connection objects lives here and in ``postgres.py``:

- ``PgPool.connection()`` checks a connection out: waiting for a free slot is bounded
  (``acquire_timeout``, then ``Unavailable``), a checked-out connection is healthy (not closed or
  broken, idle, nothing unread on its socket — a server that restarted or terminated the session
  leaves a message or EOF there — and pinged if it sat idle longer than ``ping_after``), and a
  missing one is (re)connected with a bounded ``connect_timeout``. A connection goes back to the
  pool only in a clean state (no open transaction); anything else is closed.
- ``run_sync(conn, fn)`` runs ``fn(conn)`` in a worker thread. If the calling trio task is
  cancelled meanwhile, the running statement is cancelled *on the server* (libpq's cancel
  request) and the call waits, bounded, for the thread to hand the connection back, so the
  connection stays usable; a thread that does not come back in time is abandoned and its
  connection closed when it does.

This module raises ``Unavailable`` for exhausted pools and failed connects; it must never let a
psycopg exception escape from the pool's own work, nor block the trio thread on the network.
"""

from __future__ import annotations

import select
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Generic, TypeVar

import outcome
import psycopg
import trio
from psycopg.pq import TransactionStatus
from psycopg.rows import DictRow, dict_row

from fechatter.errors import Unavailable

T = TypeVar("T")
Connection = psycopg.Connection[DictRow]

# How long a cancelled call waits for the server to stop the statement and the worker thread
# to return the connection, before giving the connection up.
CANCEL_WAIT = 5.0


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """Sizes and bounds of a ``PgPool`` (seconds)."""

    size: int = 10
    acquire_timeout: float = 5.0
    connect_timeout: int = 5  # libpq counts whole seconds, minimum 2
    ping_after: float = 30.0


@dataclass(frozen=True, slots=True)
class PoolStatistics:
    size: int
    idle: int
    in_use: int
    connects: int
    discarded: int


class _Job(Generic[T]):
    """One call of ``fn(conn)`` on a worker thread that the trio side may walk away from."""

    def __init__(self, fn: Callable[[Connection], T], conn: Connection) -> None:
        self.fn = fn
        self.conn = conn
        self.result: outcome.Outcome[T] | None = None
        # A threading event: setting it costs the worker no hop back to the trio thread.
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._abandoned = False

    def run(self) -> None:
        """Worker thread: run the call; close the connection if the caller gave up on it."""
        result = outcome.capture(self.fn, self.conn)
        with self._lock:
            self.result = result
            abandoned = self._abandoned
        if abandoned:
            with suppress(psycopg.Error):
                self.conn.close()
        self.done.set()

    def abandon(self) -> bool:
        """Give the connection up to the thread; False if the call had already finished."""
        with self._lock:
            if self.result is not None:
                return False
            self._abandoned = True
            return True


def _cancel_on_server(conn: Connection) -> None:
    with suppress(psycopg.Error):
        conn.cancel_safe(timeout=CANCEL_WAIT)


def _socket_is_quiet(conn: Connection) -> bool:
    """True if nothing arrived on an idle connection (no termination notice, no EOF)."""
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return False
    return not readable


def _idle(conn: Connection) -> bool:
    """Open, and no transaction or statement in progress."""
    return (
        not conn.closed
        and not conn.broken
        and conn.info.transaction_status == TransactionStatus.IDLE
    )


def _healthy(conn: Connection) -> bool:
    return _idle(conn) and _socket_is_quiet(conn)


def _ping(conn: Connection) -> None:
    conn.execute("SELECT 1")


def _reset(conn: Connection) -> None:
    """Leave no transaction open (after an error or a cancelled call)."""
    if not _idle(conn):
        conn.rollback()


def _close(conn: Connection) -> None:
    with suppress(psycopg.Error):
        conn.close()


class PgPool:
    """At most ``config.size`` connections to ``conninfo``; build it with ``open_pg_pool``."""

    def __init__(self, conninfo: str, config: PoolConfig) -> None:
        if config.size < 1:
            raise ValueError("pool size must be at least 1")
        self._conninfo = conninfo
        self._config = config
        self._slots = trio.Semaphore(config.size)
        # One thread per slot plus one for cancel requests and resets of cancelled calls.
        self.threads = trio.CapacityLimiter(config.size + 1)
        self._idle: list[tuple[Connection, float]] = []
        self._closed = False
        self._connects = 0
        self._discarded = 0
        self._lost: set[int] = set()

    def statistics(self) -> PoolStatistics:
        size = self._config.size
        return PoolStatistics(
            size=size,
            idle=len(self._idle),
            in_use=size - self._slots.value,
            connects=self._connects,
            discarded=self._discarded,
        )

    def _connect(self) -> Connection:
        conn = psycopg.connect(
            self._conninfo,
            autocommit=True,
            row_factory=dict_row,
            connect_timeout=self._config.connect_timeout,
            # Keepalives notice a peer that vanished without closing the socket.
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
        )
        return conn

    async def _new_connection(self) -> Connection:
        """Connect on a worker thread; a cancelled connect closes what it made, later."""
        made: list[Connection] = []
        lock = threading.Lock()
        abandoned = False

        def connect() -> Connection:
            conn = self._connect()
            with lock:
                if abandoned:
                    _close(conn)
                made.append(conn)
            return conn

        try:
            conn = await trio.to_thread.run_sync(
                connect, abandon_on_cancel=True, limiter=self.threads
            )
        except psycopg.Error as exc:
            raise Unavailable("cannot connect to the database", retry_after=1) from exc
        except trio.Cancelled:
            with lock:
                abandoned = True
                for conn in made:  # finished just before the cancel
                    _close(conn)
            raise
        self._connects += 1
        return conn

    async def run(self, conn: Connection, fn: Callable[[Connection], T]) -> T:
        """``fn(conn)`` on a worker thread; a trio cancel cancels the statement on the server.

        Cancellation waits (shielded, at most ``CANCEL_WAIT``) for the server to stop the
        statement and the thread to return, so the connection can be reset and reused.
        """
        job = _Job(fn, conn)
        try:
            await trio.to_thread.run_sync(job.run, abandon_on_cancel=True, limiter=self.threads)
        except trio.Cancelled:
            with trio.CancelScope(shield=True), trio.move_on_after(CANCEL_WAIT):
                if not job.done.is_set():
                    await trio.to_thread.run_sync(
                        _cancel_on_server, conn, abandon_on_cancel=True, limiter=self.threads
                    )
                # The cancel makes the statement end soon; the wait is bounded anyway.
                await trio.to_thread.run_sync(
                    job.done.wait, CANCEL_WAIT, abandon_on_cancel=True, limiter=self.threads
                )
            if not job.done.is_set() and job.abandon():
                self._lost.add(id(conn))  # the thread closes it; never touch it again
            raise
        assert job.result is not None
        return job.result.unwrap()

    async def _checkout(self) -> Connection:
        while self._idle:
            conn, idle_since = self._idle.pop()
            if not _healthy(conn):
                await self._discard(conn)
                continue
            if trio.current_time() - idle_since > self._config.ping_after:
                try:
                    await self.run(conn, _ping)
                except psycopg.Error:
                    await self._discard(conn)
                    continue
            return conn
        return await self._new_connection()

    async def _discard(self, conn: Connection) -> None:
        self._discarded += 1
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(_close, conn, limiter=self.threads)

    async def _checkin(self, conn: Connection) -> None:
        if id(conn) in self._lost:
            self._lost.discard(id(conn))
            self._discarded += 1
            return
        if self._closed or conn.closed or conn.broken:
            await self._discard(conn)
            return
        if not _idle(conn):
            # A failed or cancelled call: roll back on a thread, bounded; give up otherwise.
            with (
                trio.CancelScope(shield=True),
                trio.move_on_after(CANCEL_WAIT),
                suppress(psycopg.Error),
            ):
                await trio.to_thread.run_sync(_reset, conn, limiter=self.threads)
            if not _idle(conn):
                await self._discard(conn)
                return
        self._idle.append((conn, trio.current_time()))

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A healthy connection for one call; ``Unavailable`` when none is free in time."""
        if self._closed:
            raise Unavailable("the database pool is closed")
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
        with trio.CancelScope(shield=True):
            for conn, _ in idle:
                await trio.to_thread.run_sync(_close, conn, limiter=self.threads)


@asynccontextmanager
async def open_pg_pool(conninfo: str, config: PoolConfig | None = None) -> AsyncIterator[PgPool]:
    """A pool that closes its connections on exit."""
    pool = PgPool(conninfo, config or PoolConfig())
    try:
        yield pool
    finally:
        await pool.aclose()
