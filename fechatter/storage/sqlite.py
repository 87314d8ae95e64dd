"""The SQLite backend of ``Storage``: stdlib ``sqlite3`` driven from trio worker threads.

One writer connection, used only on a ``CapacityLimiter(1)`` thread, runs every write as one
``BEGIN IMMEDIATE`` … ``COMMIT`` transaction shared by every caller queued meanwhile (group
commit across chats and callers, a SAVEPOINT per request); a small pool of read-only
connections serves pure reads concurrently thanks to WAL mode. The operations and their
statements are ``core.py``'s, shared with PostgreSQL; this module is the seam: ``run_op``
drives an operation synchronously on a connection (on a worker thread), and the module owns
the connections, the transactions and the translation of driver errors into
``fechatter.errors``. It must never let a ``sqlite3`` exception escape, and never run a
statement on the trio thread.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

import trio

from fechatter.errors import (
    Conflict,
    DatabaseUnreachable,
    FechatterError,
    Invalid,
    NotFound,
    Unavailable,
)
from fechatter.search_text import search_text
from fechatter.storage.core import SqlStorage
from fechatter.storage.migrations import migrate
from fechatter.storage.sql import Op, Params, Result, Row, Script, Stmt

T = TypeVar("T")

BUSY_TIMEOUT_MS = 5000

# Unique indexes as SQLite names them in "UNIQUE constraint failed: <columns>".
_CONFLICTS = (
    ("users.email", "email_taken", "email is already registered"),
    ("workspaces.name_key", "workspace_name_taken", "a workspace with this name exists"),
    ("chats.workspace_id, chats.name_key", "chat_name_taken", "a channel with this name exists"),
    ("chats.workspace_id, chats.pair_key", "single_exists", "a direct chat of this pair exists"),
    ("workspace_members.", "already_member", "already a member of this workspace"),
    ("chat_members.", "already_member", "already a member of this chat"),
)


def translate_error(exc: sqlite3.Error | UnicodeError) -> FechatterError:
    """The domain error for a driver error (the only place that inspects them).

    Text the driver cannot encode (a lone surrogate) or data it refuses is the caller's
    input: ``Invalid`` (422), and the write it was part of stored nothing.
    """
    if isinstance(exc, UnicodeError | sqlite3.DataError):
        return Invalid("the text cannot be stored", code="unstorable_text")
    if isinstance(exc, sqlite3.IntegrityError):
        text = str(exc)
        if "FOREIGN KEY" in text:
            return NotFound("a referenced record does not exist")
        if text.startswith("UNIQUE constraint failed"):
            for needle, code, detail in _CONFLICTS:
                if needle in text:
                    return Conflict(detail, code=code)
        return Conflict("the write conflicts with stored data")
    return Unavailable("storage unavailable")


def _bind(value: Any) -> Any:
    """A parameter as ``sqlite3`` binds it: arrays become compact JSON text (``sql.py``)."""
    if isinstance(value, list | tuple):
        return json.dumps(list(value), separators=(",", ":"))
    return value


def _bind_all(params: Params) -> Any:
    if isinstance(params, Mapping):
        return {name: _bind(value) for name, value in params.items()}
    return [_bind(value) for value in params]


def _run_script(conn: sqlite3.Connection, script: Script) -> None:
    """Apply one migration in its own ``BEGIN IMMEDIATE`` transaction, with its bookkeeping
    row — unless another process applied it since the versions were read: the check runs
    under the write lock, so two processes starting together on one file take turns."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        applied = conn.execute(
            "SELECT 1 FROM schema_migrations WHERE version = ?", (script.version,)
        ).fetchone()
        if applied is None:
            for statement in _statements(script.body):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                (script.version, script.applied_at),
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _statements(body: str) -> list[str]:
    """The statements of a migration script, cut at each ``;`` where SQLite says a statement
    is complete (``sqlite3.complete_statement`` knows strings, comments and trigger bodies);
    what is left must be comments or blank."""
    statements: list[str] = []
    start = 0
    for end, char in enumerate(body):
        if char == ";" and sqlite3.complete_statement(body[start : end + 1]):
            statements.append(body[start : end + 1])
            start = end + 1
    rest = [
        ln for ln in body[start:].splitlines() if ln.strip() and not ln.strip().startswith("--")
    ]
    if rest:
        raise ValueError(f"migration script ends inside a statement: {rest[0]!r}")
    return statements


def _execute(conn: sqlite3.Connection, stmt: Stmt | Script) -> Result:
    if isinstance(stmt, Script):
        _run_script(conn, stmt)
        return Result()
    if stmt.many:
        cur = conn.executemany(stmt.sql.sqlite, [_bind_all(p) for p in stmt.params])
        return Result(rowcount=cur.rowcount)
    cur = conn.cursor()
    cur.row_factory = sqlite3.Row  # rows by column name whatever the connection's factory
    cur.execute(stmt.sql.sqlite, _bind_all(stmt.params))
    rows = cast(list[Row], cur.fetchall())  # RETURNING rows too: rowcount counts after this
    return Result(rows, cur.rowcount)


def run_op(conn: sqlite3.Connection, op: Op[T]) -> T:
    """Drive an operation to its end on ``conn``, synchronously (a worker thread)."""
    try:
        stmt = next(op)
        while True:
            stmt = op.send(_execute(conn, stmt))
    except StopIteration as done:
        return cast(T, done.value)
    finally:
        op.close()


def apply_sqlite_migrations(conn: sqlite3.Connection) -> list[int]:
    """Apply the migrations not yet recorded (``migrations.migrate``); the versions applied.

    The connection must be in autocommit mode (``isolation_level=None``): each migration
    runs inside its own ``BEGIN IMMEDIATE`` … ``COMMIT`` and is rolled back if it fails.
    """
    register_functions(conn)
    return run_op(conn, migrate("sqlite"))


def register_functions(conn: sqlite3.Connection) -> None:
    """The SQL functions the schema's triggers call: ``fechatter_search_text`` (the search
    index's shadow text, migration 0007). Every connection that may write messages needs
    them; a connection without them fails such a write ("no such function")."""
    conn.create_function("fechatter_search_text", 1, search_text, deterministic=True)


def _connect(path: str) -> sqlite3.Connection:
    # isolation_level=None: the driver never opens transactions behind our back.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.row_factory = sqlite3.Row
        register_functions(conn)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
    except BaseException:
        conn.close()
        raise
    return conn


def _enable_wal(conn: sqlite3.Connection, attempts: int = 100, pause: float = 0.05) -> None:
    """Switch to WAL. Changing the journal mode needs the file to itself and SQLite answers
    "database is locked" at once, without its busy handler, while another process (a second
    server, the admin command line) opens the same new file; so retry for up to
    ``attempts * pause`` seconds (5 s, like ``BUSY_TIMEOUT_MS``). Runs on a worker thread."""
    for attempt in range(attempts):
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(pause)


def create_private(path: str) -> None:
    """Create the database file at ``path`` owner-only (0600) when it does not exist yet,
    whatever the umask: it holds password hashes and every message. SQLite then gives its
    ``-wal`` and ``-shm`` files the database file's permissions (os_unix.c
    ``findCreateFileMode``). An existing file is left as it is. Raises ``OSError``."""
    if path in ("", ":memory:"):
        return
    with suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def _open_writer(path: str) -> sqlite3.Connection:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    create_private(path)
    conn = _connect(path)
    try:
        _enable_wal(conn)
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        apply_sqlite_migrations(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _open_reader(path: str) -> sqlite3.Connection:
    conn = _connect(path)
    try:
        conn.execute("PRAGMA query_only = ON")
    except BaseException:
        conn.close()
        raise
    return conn


def _close_all(conns: Sequence[sqlite3.Connection]) -> None:
    for conn in conns:
        with suppress(sqlite3.Error):
            conn.close()


def _run_in_transaction(
    conn: sqlite3.Connection, begin: str, fn: Callable[[sqlite3.Connection], T]
) -> T:
    conn.execute(begin)
    try:
        result = fn(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise
    return result


def _begin_snapshot(conn: sqlite3.Connection) -> None:
    """Open a read transaction on ``conn`` and pin its snapshot now: in WAL mode a ``BEGIN``
    (deferred) takes its snapshot at the first read, so read the schema table at once."""
    conn.execute("BEGIN")
    try:
        conn.execute("SELECT COUNT(*) FROM sqlite_schema").fetchone()
    except BaseException:
        with suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


def _end_snapshot(conn: sqlite3.Connection) -> None:
    """End a read transaction (nothing to keep: it wrote nothing)."""
    if conn.in_transaction:
        with suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


class _SqliteSnapshot:
    """``core.ReadSnapshot`` on one reader connection inside one read transaction."""

    def __init__(self, conn: sqlite3.Connection, threads: trio.CapacityLimiter) -> None:
        self._conn = conn
        self._threads = threads

    async def read(self, op: Op[T]) -> T:
        try:
            return await trio.to_thread.run_sync(run_op, self._conn, op, limiter=self._threads)
        except (sqlite3.Error, UnicodeError) as exc:
            raise translate_error(exc) from exc


class _WriteRequest(Generic[T]):
    """One caller's write, waiting for (or done in) a group-commit round."""

    __slots__ = ("error", "finished", "fn", "value")

    def __init__(self, fn: Callable[[sqlite3.Connection], T]) -> None:
        self.fn = fn
        self.value: T | None = None
        self.error: Exception | None = None
        self.finished = False


class SqliteStorage(SqlStorage):
    """``Storage`` on one SQLite file; build it with ``open_sqlite_storage``."""

    dialect = "sqlite"

    def __init__(self, writer: sqlite3.Connection, readers: Sequence[sqlite3.Connection]) -> None:
        if not readers:
            raise ValueError("at least one reader connection is needed")
        super().__init__()
        self._writer = writer
        self._write_limiter = trio.CapacityLimiter(1)
        self._queue: list[_WriteRequest[Any]] = []
        self._round_running = False
        self._round_over = trio.Event()
        self._free_readers = list(readers)
        # A task takes a slot, then a free connection, then a thread: slots == connections,
        # so the free-list is never empty for a slot holder.
        self._reader_slots = trio.CapacityLimiter(len(readers))
        self._reader_threads = trio.CapacityLimiter(len(readers))
        self._committed = 0

    # -- plumbing --------------------------------------------------------------------------
    def _run_round(self, batch: list[_WriteRequest[Any]]) -> None:
        """One write transaction for every request of a round (writer thread).

        Each request runs under its own SAVEPOINT, so one that fails is undone alone; if the
        COMMIT itself fails, every request of the round fails (nothing was written).
        """
        conn = self._writer
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            for request in batch:
                request.error = exc
                request.finished = True
            return
        for request in batch:
            conn.execute("SAVEPOINT request")
            try:
                request.value = request.fn(conn)
                conn.execute("RELEASE request")
            except Exception as exc:
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK TO request")
                    conn.execute("RELEASE request")
                request.error = exc
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            for request in batch:
                request.error = request.error or exc
                request.finished = True
            return
        if any(request.error is None for request in batch):
            self._committed += 1  # a round in which everything failed wrote nothing
        for request in batch:
            request.finished = True

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in a write transaction on the writer thread.

        Writes that arrive while a transaction is running are committed together in the next
        one (group commit across chats and callers): whichever waiting caller finds the writer
        idle runs the round for everyone queued. A caller cancelled before its round started
        is withdrawn; once its round runs, it completes (threads are not abandoned).
        """
        request: _WriteRequest[T] = _WriteRequest(fn)
        self._queue.append(request)
        try:
            while not request.finished:
                if self._round_running:
                    await self._round_over.wait()
                    continue
                self._round_running = True
                batch, self._queue = self._queue, []
                try:
                    await trio.to_thread.run_sync(
                        self._run_round, batch, limiter=self._write_limiter
                    )
                finally:
                    # A round that never reached its thread goes back to the front of the queue.
                    self._queue[:0] = [item for item in batch if not item.finished]
                    self._round_running = False
                    over, self._round_over = self._round_over, trio.Event()
                    over.set()
        except trio.Cancelled:
            if request in self._queue:
                self._queue.remove(request)
            raise
        if request.error is not None:
            if isinstance(request.error, sqlite3.Error | UnicodeError):
                raise translate_error(request.error) from request.error
            raise request.error
        return request.value  # type: ignore[return-value]

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one read transaction (one snapshot) on a pooled reader."""
        async with self._reader_slots:
            conn = self._free_readers.pop()
            try:
                return await trio.to_thread.run_sync(
                    _run_in_transaction, conn, "BEGIN", fn, limiter=self._reader_threads
                )
            except (sqlite3.Error, UnicodeError) as exc:
                raise translate_error(exc) from exc
            finally:
                self._free_readers.append(conn)

    # -- the seam of core.SqlStorage -------------------------------------------------------
    async def _read_op(self, op: Op[T], *, snapshot: bool = False) -> T:
        # Every read is one transaction on a reader, so always one snapshot.
        return await self._read(lambda conn: run_op(conn, op))

    async def _write_op(self, op: Op[T], *, one_statement: bool = False) -> T:
        return await self._write(lambda conn: run_op(conn, op))

    def _transactions(self) -> int:
        return self._committed

    @asynccontextmanager
    async def open_read_snapshot(self, hold: float = math.inf) -> AsyncIterator[_SqliteSnapshot]:
        """One read transaction on one pooled reader for the whole block (``SqlStorage``;
        ``hold`` is not needed: no server ends an idle SQLite transaction).

        The reader is out of the pool meanwhile (the others serve every other read) and the
        writer goes on committing: WAL keeps the pages this snapshot sees, so a checkpoint
        cannot pass it and the ``-wal`` file grows by every write until the block ends."""
        async with self._reader_slots:
            conn = self._free_readers.pop()
            try:
                try:
                    await trio.to_thread.run_sync(
                        _begin_snapshot, conn, limiter=self._reader_threads
                    )
                except (sqlite3.Error, UnicodeError) as exc:
                    raise translate_error(exc) from exc
                try:
                    yield _SqliteSnapshot(conn, self._reader_threads)
                finally:
                    with trio.CancelScope(shield=True):
                        await trio.to_thread.run_sync(
                            _end_snapshot, conn, limiter=self._reader_threads
                        )
            finally:
                self._free_readers.append(conn)


@asynccontextmanager
async def open_sqlite_storage(path: str, *, readers: int = 4) -> AsyncIterator[SqliteStorage]:
    """Open (creating and migrating if needed) the database at ``path``; close it on exit.
    ``DatabaseUnreachable`` if the file cannot be opened, is no SQLite database, or cannot
    be migrated (its cause: the driver's or the file system's error)."""
    if readers < 1:
        raise ValueError("readers must be at least 1")
    conns: list[sqlite3.Connection] = []
    try:
        try:
            conns.append(await trio.to_thread.run_sync(_open_writer, path))
            for _ in range(readers):
                conns.append(await trio.to_thread.run_sync(_open_reader, path))
        except (sqlite3.Error, OSError) as exc:
            raise DatabaseUnreachable(f"cannot open the SQLite database: {exc}") from exc
        yield SqliteStorage(conns[0], conns[1:])
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(_close_all, conns)
