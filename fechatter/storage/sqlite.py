"""The SQLite backend of ``Storage``: stdlib ``sqlite3`` driven from trio worker threads.

One writer connection, used only on a ``CapacityLimiter(1)`` thread, runs every write as one
``BEGIN IMMEDIATE`` … ``COMMIT`` transaction (so a group-commit batch costs one fsync); a
small pool of read-only connections serves pure reads concurrently thanks to WAL mode. The
statements live in ``sqlite_accounts.py`` and ``sqlite_chats.py``; this module owns the
connections, the transactions, the counters and the translation of driver errors into
``fechatter.errors``. It must never let a ``sqlite3`` exception escape, and never run a
statement on the trio thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, Generic, TypeVar

import trio

from fechatter.errors import Conflict, FechatterError, Invalid, NotFound, Unavailable
from fechatter.models import (
    Chat,
    ChatRecord,
    ChatState,
    ChatType,
    Credentials,
    Inserted,
    Member,
    Message,
    MessagePage,
    NewMessage,
    RefreshGrant,
    Role,
    SecurityChange,
    SecurityState,
    StorageStatistics,
    User,
    UserStatus,
    Workspace,
    WorkspaceMember,
    utc_now,
)
from fechatter.storage import sqlite_accounts as accounts
from fechatter.storage import sqlite_chats as chats
from fechatter.storage.migrations import apply_sqlite_migrations

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


def _connect(path: str) -> sqlite3.Connection:
    # isolation_level=None: the driver never opens transactions behind our back.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
    except BaseException:
        conn.close()
        raise
    return conn


def _open_writer(path: str) -> sqlite3.Connection:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = _connect(path)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
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


class _WriteRequest(Generic[T]):
    """One caller's write, waiting for (or done in) a group-commit round."""

    __slots__ = ("error", "finished", "fn", "value")

    def __init__(self, fn: Callable[[sqlite3.Connection], T]) -> None:
        self.fn = fn
        self.value: T | None = None
        self.error: Exception | None = None
        self.finished = False


class SqliteStorage:
    """``Storage`` on one SQLite file; build it with ``open_sqlite_storage``."""

    def __init__(self, writer: sqlite3.Connection, readers: Sequence[sqlite3.Connection]) -> None:
        if not readers:
            raise ValueError("at least one reader connection is needed")
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
        self._transactions = 0
        self._message_batches = 0
        self._messages_inserted = 0

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
            self._transactions += 1  # a round in which everything failed wrote nothing
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

    # -- lifecycle -------------------------------------------------------------------------
    async def ping(self) -> None:
        """Raise ``Unavailable`` unless the database answers a trivial query."""
        await self._read(lambda c: c.execute("SELECT 1").fetchone())

    def statistics(self) -> StorageStatistics:
        """Counters since open."""
        return StorageStatistics(
            transactions=self._transactions,
            message_batches=self._message_batches,
            messages_inserted=self._messages_inserted,
        )

    # -- users -----------------------------------------------------------------------------
    async def create_user(
        self, fullname: str, email: str, password_hash: str, workspace_name: str | None
    ) -> tuple[User, Workspace | None]:
        """Create a user and, if named, a workspace it owns; all or nothing."""
        return await self._write(
            lambda c: accounts.create_user(c, fullname, email, password_hash, workspace_name)
        )

    async def get_user(self, user_id: int) -> User | None:
        return await self._read(lambda c: accounts.get_user(c, user_id))

    async def get_users(self, user_ids: Sequence[int]) -> dict[int, User]:
        """The users among ``user_ids`` that exist."""
        if not user_ids:
            return {}
        return await self._read(lambda c: accounts.get_users(c, user_ids))

    async def get_credentials(self, email: str) -> Credentials | None:
        """Look up by email, case-insensitively."""
        return await self._read(lambda c: accounts.get_credentials(c, email))

    async def get_user_by_email(self, email: str) -> User | None:
        return await self._read(lambda c: accounts.get_user_by_email(c, email))

    async def update_user(
        self,
        user_id: int,
        *,
        fullname: str | None = None,
        avatar: str | None = None,
        clear_avatar: bool = False,
        password_hash: str | None = None,
    ) -> User:
        """Update the given fields; ``NotFound`` for an unknown user."""
        return await self._write(
            lambda c: accounts.update_user(
                c, user_id, fullname, avatar, clear_avatar, password_hash
            )
        )

    # -- refresh tokens --------------------------------------------------------------------
    async def add_refresh_token(
        self, user_id: int, token_hash: str, family_id: str, expires_at: str
    ) -> None:
        await self._write(
            lambda c: accounts.add_refresh_token(c, user_id, token_hash, family_id, expires_at)
        )

    async def rotate_refresh_token(
        self, token_hash: str, new_hash: str, new_expires_at: str, now: str
    ) -> RefreshGrant | None:
        """Exchange a live token for a new one; a reused token revokes its family."""
        return await self._write(
            lambda c: accounts.rotate_refresh_token(c, token_hash, new_hash, new_expires_at, now)
        )

    async def revoke_refresh_token(self, token_hash: str, user_id: int) -> None:
        await self._write(lambda c: accounts.revoke_refresh_token(c, token_hash, user_id))

    async def revoke_user_refresh_tokens(self, user_id: int) -> None:
        await self._write(lambda c: accounts.revoke_user_refresh_tokens(c, user_id))

    async def security_state(self, user_id: int) -> SecurityState | None:
        return await self._read(lambda c: accounts.security_state(c, user_id))

    async def raise_security_version(
        self, user_id: int, keep_family: str | None = None
    ) -> SecurityState:
        return await self._write(lambda c: accounts.raise_security_version(c, user_id, keep_family))

    async def set_user_status(self, user_id: int, status: UserStatus) -> SecurityState:
        return await self._write(lambda c: accounts.set_user_status(c, user_id, status))

    async def security_changes(self, after: int, since: str) -> list[SecurityChange]:
        return await self._read(lambda c: accounts.security_changes(c, after, since))

    async def last_security_change(self) -> int:
        return await self._read(accounts.last_security_change)

    # -- workspaces ------------------------------------------------------------------------
    async def create_workspace(
        self, name: str, description: str | None, owner_id: int
    ) -> Workspace:
        """Create a workspace with ``owner_id`` as its owner member."""
        return await self._write(
            lambda c: accounts.insert_workspace(c, name, description, owner_id, utc_now())
        )

    async def get_workspace(self, workspace_id: int) -> Workspace | None:
        return await self._read(lambda c: accounts.get_workspace(c, workspace_id))

    async def list_workspaces(self, user_id: int) -> list[Workspace]:
        return await self._read(lambda c: accounts.list_workspaces(c, user_id))

    async def update_workspace(
        self, workspace_id: int, *, name: str | None = None, description: str | None = None
    ) -> Workspace:
        return await self._write(
            lambda c: accounts.update_workspace(c, workspace_id, name, description)
        )

    async def delete_workspace(self, workspace_id: int) -> list[int]:
        return await self._write(lambda c: accounts.delete_workspace(c, workspace_id))

    async def workspace_role(self, workspace_id: int, user_id: int) -> Role | None:
        return await self._read(lambda c: accounts.workspace_role(c, workspace_id, user_id))

    async def list_workspace_members(self, workspace_id: int) -> list[WorkspaceMember]:
        return await self._read(lambda c: accounts.list_workspace_members(c, workspace_id))

    async def add_workspace_member(
        self, workspace_id: int, user_id: int, role: Role
    ) -> WorkspaceMember:
        return await self._write(
            lambda c: accounts.add_workspace_member(c, workspace_id, user_id, role)
        )

    async def remove_workspace_member(self, workspace_id: int, user_id: int) -> bool:
        return await self._write(
            lambda c: accounts.remove_workspace_member(c, workspace_id, user_id)
        )

    async def workspace_member_ids(self, workspace_id: int, user_ids: Sequence[int]) -> set[int]:
        return await self._read(lambda c: accounts.workspace_member_ids(c, workspace_id, user_ids))

    async def list_user_chat_ids(self, user_id: int, workspace_id: int) -> list[int]:
        return await self._read(lambda c: accounts.list_user_chat_ids(c, user_id, workspace_id))

    # -- chats -----------------------------------------------------------------------------
    async def create_chat(
        self,
        workspace_id: int,
        type: ChatType,
        name: str | None,
        description: str | None,
        owner_id: int,
        member_ids: Sequence[int],
    ) -> ChatRecord:
        return await self._write(
            lambda c: chats.create_chat(
                c, workspace_id, type, name, description, owner_id, member_ids
            )
        )

    async def find_single_chat(self, workspace_id: int, user_a: int, user_b: int) -> int | None:
        return await self._read(lambda c: chats.find_single_chat(c, workspace_id, user_a, user_b))

    async def chat_member_role(self, chat_id: int, user_id: int) -> Role | None:
        return await self._read(lambda c: chats.chat_member_role(c, chat_id, user_id))

    async def get_chat(self, chat_id: int) -> ChatRecord | None:
        return await self._read(lambda c: chats.get_chat(c, chat_id))

    async def get_chat_view(self, chat_id: int, viewer_id: int) -> Chat | None:
        return await self._read(lambda c: chats.get_chat_view(c, chat_id, viewer_id))

    async def list_chats(self, user_id: int, workspace_id: int | None) -> list[Chat]:
        return await self._read(lambda c: chats.list_chats(c, user_id, workspace_id))

    async def list_public_channels(self, workspace_id: int, viewer_id: int) -> list[Chat]:
        return await self._read(lambda c: chats.list_public_channels(c, workspace_id, viewer_id))

    async def update_chat(
        self, chat_id: int, *, name: str | None = None, description: str | None = None
    ) -> ChatRecord:
        return await self._write(lambda c: chats.update_chat(c, chat_id, name, description))

    async def delete_chat(self, chat_id: int) -> None:
        await self._write(lambda c: chats.delete_chat(c, chat_id))

    async def load_chat_state(self, chat_id: int) -> ChatState | None:
        return await self._read(lambda c: chats.load_chat_state(c, chat_id))

    async def presence_peer_ids(self, user_id: int, max_chat_size: int) -> list[int]:
        return await self._read(lambda c: chats.presence_peer_ids(c, user_id, max_chat_size))

    async def list_chat_members(self, chat_id: int) -> list[Member]:
        return await self._read(lambda c: chats.list_chat_members(c, chat_id))

    async def add_chat_members(
        self, chat_id: int, user_ids: Sequence[int], role: Role
    ) -> list[Member]:
        return await self._write(lambda c: chats.add_chat_members(c, chat_id, user_ids, role))

    async def remove_chat_member(
        self, chat_id: int, user_id: int, new_owner_id: int | None
    ) -> None:
        await self._write(lambda c: chats.remove_chat_member(c, chat_id, user_id, new_owner_id))

    async def set_chat_owner(self, chat_id: int, user_id: int) -> None:
        await self._write(lambda c: chats.set_chat_owner(c, chat_id, user_id))

    # -- messages --------------------------------------------------------------------------
    async def insert_messages(self, chat_id: int, batch: Sequence[NewMessage]) -> list[Inserted]:
        """Insert a batch in ONE transaction (group commit), in order."""
        if not batch:
            return []
        results, inserted = await self._write(lambda c: chats.insert_messages(c, chat_id, batch))
        self._message_batches += 1
        self._messages_inserted += inserted
        return results

    async def list_messages(
        self, chat_id: int, *, limit: int, before: int | None, after: int | None
    ) -> MessagePage:
        return await self._read(lambda c: chats.list_messages(c, chat_id, limit, before, after))

    async def get_message(self, message_id: int) -> Message | None:
        return await self._read(lambda c: chats.get_message(c, message_id))

    async def mark_read(self, chat_id: int, user_id: int, message_id: int) -> bool:
        return await self._write(lambda c: chats.mark_read(c, chat_id, user_id, message_id))


@asynccontextmanager
async def open_sqlite_storage(path: str, *, readers: int = 4) -> AsyncIterator[SqliteStorage]:
    """Open (creating and migrating if needed) the database at ``path``; close it on exit."""
    if readers < 1:
        raise ValueError("readers must be at least 1")
    conns: list[sqlite3.Connection] = []
    try:
        try:
            conns.append(await trio.to_thread.run_sync(_open_writer, path))
            for _ in range(readers):
                conns.append(await trio.to_thread.run_sync(_open_reader, path))
        except (sqlite3.Error, OSError) as exc:
            raise Unavailable(f"cannot open the SQLite database: {exc}") from exc
        yield SqliteStorage(conns[0], conns[1:])
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(_close_all, conns)
