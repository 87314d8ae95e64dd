"""The PostgreSQL backend of ``Storage``: psycopg 3 async connections driven on trio.

Each call checks a connection out of a trio-native ``PgPool`` (``postgres_pool.py``) and awaits
one async function from ``postgres_accounts.py`` / ``postgres_chats.py`` on it — writes inside
``BEGIN`` … ``COMMIT``, multi-statement reads inside one read-only snapshot — on the trio thread,
no worker threads; the pool takes the connection back clean. A trio cancel (a caller's
deadline, a shutdown) cancels the statement on the server. Every call is bounded by
``operation_timeout``: a server that stops answering makes calls fail with ``Unavailable``
instead of hanging, and the pool reconnects by itself once the server is back. Why this
driver path: ``docs/storage.md``. This module must never let a psycopg exception escape.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TypeVar

import psycopg
import trio
from psycopg import errors as pg_errors

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
from fechatter.storage import postgres_accounts as accounts
from fechatter.storage import postgres_chats as chats
from fechatter.storage.migrations import load_migrations
from fechatter.storage.postgres_pool import Connection, PgPool, PoolConfig, open_pg_pool

T = TypeVar("T")

DEFAULT_OPERATION_TIMEOUT = 10.0
# pg_advisory_lock key serialising migrations of several processes ("fechattr" in ASCII).
MIGRATION_LOCK_KEY = 0x6665636861747472

# Unique constraints and indexes, as named in 0001_init.sql.
_CONFLICTS = {
    "users_email_key": ("email_taken", "email is already registered"),
    "workspaces_name_key": ("workspace_name_taken", "a workspace with this name exists"),
    "chats_channel_name": ("chat_name_taken", "a channel with this name exists"),
    "chats_single_pair": ("single_exists", "a direct chat of this pair exists"),
    "workspace_members_pkey": ("already_member", "already a member of this workspace"),
    "chat_members_pkey": ("already_member", "already a member of this chat"),
}


def translate_error(exc: psycopg.Error | UnicodeError) -> FechatterError:
    """The domain error for a driver error (the only place that inspects them).

    Text the driver cannot encode (a lone surrogate, NUL) is the caller's input: ``Invalid``
    (422); the transaction it was part of rolled back.
    """
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


def _in_transaction(begin: str, fn: Call[T]) -> Call[T]:
    """``fn`` between ``begin`` and ``COMMIT``; on any failure the pool rolls back."""

    async def run(conn: Connection) -> T:
        await conn.execute(begin)
        result = await fn(conn)
        await conn.execute("COMMIT")
        return result

    return run


async def apply_postgres_migrations(conn: Connection) -> list[int]:
    """Apply the migrations not yet recorded; returns the versions applied now.

    ``conn`` is in autocommit mode and idle. All pending migrations run in one transaction
    that first takes a transaction-level advisory lock, so processes that start together take
    turns (the second one finds everything applied) and a failed or cancelled start leaves
    neither a half-applied migration nor a lock behind. Each migration commits together with
    its ``schema_migrations`` row.
    """

    async def migrate(c: Connection) -> list[int]:
        await c.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
        await c.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations"
            " (version integer PRIMARY KEY, applied_at timestamptz NOT NULL)"
        )
        cur = await c.execute("SELECT version FROM schema_migrations")
        done = {row["version"] for row in await cur.fetchall()}
        applied: list[int] = []
        for version, sql in load_migrations("postgres"):
            if version in done:
                continue
            await c.execute(sql.encode())  # no parameters: sent as one multi-statement query
            await c.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (%s, %s)",
                (version, utc_now()),
            )
            applied.append(version)
        return applied

    return await _in_transaction("BEGIN", migrate)(conn)


class PostgresStorage:
    """``Storage`` on one PostgreSQL database; build it with ``open_postgres_storage``."""

    def __init__(self, pool: PgPool, operation_timeout: float) -> None:
        self._pool = pool
        self._operation_timeout = operation_timeout
        self._transactions = 0
        self._message_batches = 0
        self._messages_inserted = 0

    # -- plumbing --------------------------------------------------------------------------
    async def _call(self, fn: Call[T]) -> T:
        """Run ``fn`` on a pooled connection, bounded; driver errors become domain errors."""
        with trio.move_on_after(self._operation_timeout) as bounded:
            try:
                async with self._pool.connection() as conn:
                    return await fn(conn)
            except (psycopg.Error, UnicodeError) as exc:
                raise translate_error(exc) from exc
        assert bounded.cancelled_caught
        raise Unavailable("the database did not answer in time", retry_after=1)

    async def _write(self, fn: Call[T]) -> T:
        """Run ``fn`` in one write transaction."""
        result = await self._call(_in_transaction("BEGIN", fn))
        self._transactions += 1
        return result

    async def _read(self, fn: Call[T], *, snapshot: bool = False) -> T:
        """Run a read; ``snapshot`` puts several statements in one consistent snapshot."""
        if snapshot:
            return await self._call(
                _in_transaction("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", fn)
            )
        return await self._call(fn)

    # -- lifecycle -------------------------------------------------------------------------
    async def ping(self) -> None:
        """Raise ``Unavailable`` unless the database answers a trivial query."""
        await self._read(lambda c: c.execute("SELECT 1"))

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
        return await self._read(lambda c: chats.load_chat_state(c, chat_id), snapshot=True)

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
async def open_postgres_storage(
    url: str,
    *,
    pool_size: int = 10,
    acquire_timeout: float = 5.0,
    connect_timeout: int = 5,
    operation_timeout: float = DEFAULT_OPERATION_TIMEOUT,
) -> AsyncIterator[PostgresStorage]:
    """Connect to the database at ``url`` (migrating it if needed); close the pool on exit.

    ``Unavailable`` if the server cannot be reached or migrated within the bounds.
    """
    config = PoolConfig(
        size=pool_size, acquire_timeout=acquire_timeout, connect_timeout=connect_timeout
    )
    async with open_pg_pool(url, config) as pool:
        storage = PostgresStorage(pool, operation_timeout)
        await storage._call(apply_postgres_migrations)
        yield storage
