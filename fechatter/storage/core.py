"""The ``Storage`` methods, written once for both backends, over a small seam.

``SqlStorage`` implements every method of ``base.Storage`` by building an operation
(``accounts.py``, ``chats.py``, ``messages.py``: generators of statements, see ``sql.py``) and
handing it to the backend's seam:

- ``_read_op(op, snapshot=…)``: run it as a read (``snapshot``: its statements see one
  consistent snapshot);
- ``_write_op(op, one_statement=…)``: run it in one write transaction, all or nothing
  (``one_statement``: the operation yields a single statement that is atomic by itself, so a
  backend may send it without ``BEGIN``/``COMMIT``);
- ``transactions``: how many write transactions committed;
- ``open_read_snapshot()``: many reads, issued one after another by the caller (with work
  of its own between them), that all see ONE snapshot — the archive export's
  (``ReadSnapshot``).

``sqlite.SqliteStorage`` and ``postgres.PostgresStorage`` subclass it and provide only that,
plus opening, closing and the translation of driver errors into ``fechatter.errors``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from typing import Protocol, TypeVar

from fechatter.errors import FechatterError
from fechatter.models import (
    Chat,
    ChatRecord,
    ChatState,
    ChatType,
    Credentials,
    Deleted,
    Inserted,
    Member,
    Message,
    MessagePage,
    MessageWindow,
    NewMessage,
    RefreshGrant,
    Role,
    SearchFilters,
    SearchPage,
    SecurityChange,
    SecurityState,
    StorageStatistics,
    User,
    UserStatus,
    Workspace,
    WorkspaceMember,
    utc_now,
)
from fechatter.search_text import SearchQuery
from fechatter.storage import accounts, chats, messages, reactions, search
from fechatter.storage.cluster import ChatStore, Fence
from fechatter.storage.outbox import OutboxEvent
from fechatter.storage.sql import Dialect, Op, Sql, q

T = TypeVar("T")

log = logging.getLogger(__name__)

_PING = Sql("SELECT 1 AS one")


def _ping() -> Op[None]:
    yield q(_PING)


class ReadSnapshot(Protocol):
    """Reads that all see one consistent snapshot of the database, taken when the snapshot
    was opened: nothing committed after that is visible to any of them."""

    async def read(self, op: Op[T]) -> T:
        """Run the read-only operation ``op`` in the snapshot; ``Unavailable`` if the
        database does not answer (PostgreSQL: within the operation timeout)."""
        ...


class SqlStorage:
    """``Storage`` over a SQL backend; subclasses supply the seam (see the module docstring)."""

    dialect: Dialect

    def __init__(self) -> None:
        self._message_batches = 0
        self._messages_inserted = 0

    # -- the seam --------------------------------------------------------------------------
    async def _read_op(self, op: Op[T], *, snapshot: bool = False) -> T:
        raise NotImplementedError

    async def _write_op(self, op: Op[T], *, one_statement: bool = False) -> T:
        raise NotImplementedError

    def _transactions(self) -> int:
        raise NotImplementedError

    def open_read_snapshot(
        self, hold: float = math.inf
    ) -> AbstractAsyncContextManager[ReadSnapshot]:
        """One read transaction held open on one connection until the block ends, for a
        sequence of reads that must agree (the archive export). It never blocks writers, but
        it holds the database back while open (SQLite: the WAL cannot be checkpointed past
        it; PostgreSQL: vacuum cannot remove rows it may see): keep it short, with no
        waiting on anything but the database inside. ``hold``: the most seconds the caller
        will hold it (its own limit; ``math.inf``: none), so the backend does not end it
        sooner for idling between reads (PostgreSQL). ``Unavailable`` if it cannot be
        opened, or if the database ends it ("the database ended the snapshot: …")."""
        raise NotImplementedError

    async def _fenced_write_op(self, op: Op[T], fence: Fence) -> T:
        """Run ``op`` in one write transaction that starts with ``fechatter_fence`` (only
        PostgreSQL has chat leases; ``ChatStore`` never calls this on another backend)."""
        raise NotImplementedError

    async def _chat_write_op(
        self, op: Op[T], chat_id: int, fence: Fence | None, *, lock_chat: bool
    ) -> T:
        """Run ``op`` in one write transaction on ``chat_id`` that starts with the fence (if
        any), then, with ``lock_chat``, locks the chat row (PostgreSQL only)."""
        raise NotImplementedError

    async def _outbox_insert_messages(
        self, chat_id: int, batch: Sequence[NewMessage], fence: Fence | None
    ) -> tuple[list[Inserted], list[OutboxEvent]]:
        """``insert_messages`` writing the batch's outbox rows in the same call, optionally
        fenced (PostgreSQL only): the results and the events written."""
        raise NotImplementedError

    async def _fenced_insert_messages(
        self, chat_id: int, batch: Sequence[NewMessage], fence: Fence
    ) -> list[Inserted]:
        """``insert_messages`` behind ``fence`` (PostgreSQL only, as ``_fenced_write_op``)."""
        raise NotImplementedError

    def chat_store(self, fence: Fence | None = None, *, outbox: bool = False) -> ChatStore:
        """The chat writes a ``ChatActor`` makes (``cluster.ChatStore``): ``fence=None`` is
        this storage's own methods, unchanged; a ``Fence`` (PostgreSQL only, else
        ``ValueError``) runs ``fechatter_fence`` first in each write's transaction;
        ``outbox`` (PostgreSQL only) writes each write's events in its transaction."""
        return ChatStore(self, fence, outbox=outbox)

    # -- lifecycle -------------------------------------------------------------------------
    async def ping(self) -> None:
        """Raise ``Unavailable`` unless the database answers a trivial query."""
        await self._read_op(_ping())

    def statistics(self) -> StorageStatistics:
        """Counters since open."""
        return StorageStatistics(
            transactions=self._transactions(),
            message_batches=self._message_batches,
            messages_inserted=self._messages_inserted,
        )

    # -- users -----------------------------------------------------------------------------
    async def create_user(
        self, fullname: str, email: str, password_hash: str, workspace_name: str | None
    ) -> tuple[User, Workspace | None]:
        """Create a user and, if named, a workspace it owns; all or nothing."""
        return await self._write_op(
            accounts.create_user(fullname, email, password_hash, workspace_name)
        )

    async def get_user(self, user_id: int) -> User | None:
        return await self._read_op(accounts.get_user(user_id))

    async def get_users(self, user_ids: Sequence[int]) -> dict[int, User]:
        """The users among ``user_ids`` that exist."""
        if not user_ids:
            return {}
        return await self._read_op(accounts.get_users(user_ids))

    async def get_credentials(self, email: str) -> Credentials | None:
        """Look up by email, case-insensitively."""
        return await self._read_op(accounts.get_credentials(email))

    async def get_user_by_email(self, email: str) -> User | None:
        return await self._read_op(accounts.get_user_by_email(email))

    async def update_user(
        self,
        user_id: int,
        *,
        fullname: str | None = None,
        avatar: str | None = None,
        clear_avatar: bool = False,
        password_hash: str | None = None,
        keep_family: str | None = None,
    ) -> User:
        """Update the given fields; ``NotFound`` for an unknown user. A new password also
        raises the security version in the same transaction (``raise_security_version``,
        keeping ``keep_family``'s session)."""
        return await self._write_op(
            accounts.update_user(
                user_id, fullname, avatar, clear_avatar, password_hash, keep_family
            )
        )

    # -- refresh tokens --------------------------------------------------------------------
    async def add_refresh_token(
        self,
        user_id: int,
        token_hash: str,
        family_id: str,
        expires_at: str,
        security_version: int | None = None,
    ) -> bool:
        """Store a refresh token; with ``security_version``, only while the user's version
        is still that one (False: it moved, nothing stored)."""
        return await self._write_op(
            accounts.add_refresh_token(user_id, token_hash, family_id, expires_at, security_version)
        )

    async def rotate_refresh_token(
        self, token_hash: str, new_hash: str, new_expires_at: str, now: str
    ) -> RefreshGrant | None:
        """Exchange a live token for a new one; a reused token revokes its family."""
        return await self._write_op(
            accounts.rotate_refresh_token(token_hash, new_hash, new_expires_at, now)
        )

    async def revoke_refresh_token(self, token_hash: str, user_id: int) -> None:
        await self._write_op(accounts.revoke_refresh_token(token_hash, user_id))

    async def revoke_user_refresh_tokens(self, user_id: int) -> None:
        await self._write_op(accounts.revoke_user_refresh_tokens(user_id))

    async def security_state(self, user_id: int) -> SecurityState | None:
        return await self._read_op(accounts.security_state(user_id))

    async def raise_security_version(
        self, user_id: int, keep_family: str | None = None
    ) -> SecurityState:
        return await self._write_op(accounts.raise_security_version(user_id, keep_family))

    async def set_user_status(self, user_id: int, status: UserStatus) -> SecurityState:
        return await self._write_op(accounts.set_user_status(user_id, status))

    async def security_changes(self, after: int, since: str) -> list[SecurityChange]:
        return await self._read_op(accounts.security_changes(after, since))

    async def last_security_change(self) -> int:
        return await self._read_op(accounts.last_security_change())

    # -- workspaces ------------------------------------------------------------------------
    async def create_workspace(
        self, name: str, description: str | None, owner_id: int
    ) -> Workspace:
        """Create a workspace with ``owner_id`` as its owner member."""
        return await self._write_op(
            accounts.insert_workspace(name, description, owner_id, utc_now())
        )

    async def get_workspace(self, workspace_id: int) -> Workspace | None:
        return await self._read_op(accounts.get_workspace(workspace_id))

    async def list_workspaces(self, user_id: int) -> list[Workspace]:
        return await self._read_op(accounts.list_workspaces(user_id))

    async def update_workspace(
        self, workspace_id: int, *, name: str | None = None, description: str | None = None
    ) -> Workspace:
        return await self._write_op(accounts.update_workspace(workspace_id, name, description))

    async def delete_workspace(self, workspace_id: int) -> list[int]:
        return await self._write_op(accounts.delete_workspace(workspace_id, self.dialect))

    async def workspace_role(self, workspace_id: int, user_id: int) -> Role | None:
        return await self._read_op(accounts.workspace_role(workspace_id, user_id))

    async def list_workspace_members(self, workspace_id: int) -> list[WorkspaceMember]:
        return await self._read_op(accounts.list_workspace_members(workspace_id))

    async def add_workspace_member(
        self, workspace_id: int, user_id: int, role: Role
    ) -> WorkspaceMember:
        return await self._write_op(accounts.add_workspace_member(workspace_id, user_id, role))

    async def remove_workspace_member(self, workspace_id: int, user_id: int) -> bool:
        return await self._write_op(accounts.remove_workspace_member(workspace_id, user_id))

    async def workspace_member_ids(self, workspace_id: int, user_ids: Sequence[int]) -> set[int]:
        return await self._read_op(accounts.workspace_member_ids(workspace_id, user_ids))

    async def list_user_chat_ids(self, user_id: int, workspace_id: int) -> list[int]:
        return await self._read_op(accounts.list_user_chat_ids(user_id, workspace_id))

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
        return await self._write_op(
            chats.create_chat(workspace_id, type, name, description, owner_id, member_ids)
        )

    async def find_single_chat(self, workspace_id: int, user_a: int, user_b: int) -> int | None:
        return await self._read_op(chats.find_single_chat(workspace_id, user_a, user_b))

    async def chat_member_role(self, chat_id: int, user_id: int) -> Role | None:
        return await self._read_op(chats.chat_member_role(chat_id, user_id))

    async def get_chat(self, chat_id: int) -> ChatRecord | None:
        return await self._read_op(chats.get_chat(chat_id))

    async def get_chat_view(self, chat_id: int, viewer_id: int) -> Chat | None:
        return await self._read_op(chats.get_chat_view(chat_id, viewer_id))

    async def list_chats(self, user_id: int, workspace_id: int | None) -> list[Chat]:
        return await self._read_op(chats.list_chats(user_id, workspace_id))

    async def list_public_channels(self, workspace_id: int, viewer_id: int) -> list[Chat]:
        return await self._read_op(chats.list_public_channels(workspace_id, viewer_id))

    async def update_chat(
        self, chat_id: int, *, name: str | None = None, description: str | None = None
    ) -> ChatRecord:
        return await self._write_op(chats.update_chat(chat_id, name, description))

    async def delete_chat(self, chat_id: int) -> None:
        await self._write_op(chats.delete_chat(chat_id))

    async def load_chat_state(self, chat_id: int) -> ChatState | None:
        return await self._read_op(chats.load_chat_state(chat_id), snapshot=True)

    async def presence_peer_ids(self, user_id: int, max_chat_size: int) -> list[int]:
        return await self._read_op(chats.presence_peer_ids(user_id, max_chat_size))

    async def list_chat_members(self, chat_id: int) -> list[Member]:
        return await self._read_op(chats.list_chat_members(chat_id))

    async def add_chat_members(
        self, chat_id: int, user_ids: Sequence[int], role: Role
    ) -> list[Member]:
        return await self._write_op(chats.add_chat_members(chat_id, user_ids, role))

    async def remove_chat_member(
        self, chat_id: int, user_id: int, new_owner_id: int | None
    ) -> None:
        await self._write_op(chats.remove_chat_member(chat_id, user_id, new_owner_id))

    async def set_chat_owner(self, chat_id: int, user_id: int) -> None:
        await self._write_op(chats.set_chat_owner(chat_id, user_id))

    # -- messages --------------------------------------------------------------------------
    async def insert_messages(self, chat_id: int, batch: Sequence[NewMessage]) -> list[Inserted]:
        """Insert a batch in ONE transaction (group commit), in order; then the reactions of
        the live messages that ``client_id`` retries answer with (``with_retry_reactions``)."""
        if not batch:
            return []
        op = messages.insert_messages(self.dialect, chat_id, batch)
        results, inserted = await self._write_op(op, one_statement=self.dialect == "postgres")
        self._message_batches += 1
        self._messages_inserted += inserted
        return await self.with_retry_reactions(results)

    async def with_retry_reactions(self, results: list[Inserted]) -> list[Inserted]:
        """``results`` with reactions on the live stored messages of ``client_id`` retries
        (``created=False``): one read after the write committed, none without such a retry.

        Never raises: the batch is committed whatever happens here, so if that read fails
        (``FechatterError``: the database is unavailable, …) a warning is logged and the
        results go back as the write returned them, retried messages without reactions —
        a caller that got an error would think its messages were not stored, and no event
        would announce them."""
        retried = messages.retried_live(results)
        if not retried:
            return results
        try:
            current = await self._read_op(reactions.with_reactions(retried))
        except FechatterError as exc:
            log.warning(
                "the reactions of %d retried message(s) could not be read after the commit"
                " (%s): answering without them",
                len(retried),
                exc,
            )
            return results
        by_id = {m.id: m for m in current}
        return [
            replace(r, message=by_id[r.message.id])
            if not r.created and r.message is not None and r.message.id in by_id
            else r
            for r in results
        ]

    async def list_messages(
        self,
        chat_id: int,
        *,
        limit: int,
        before: int | None,
        after: int | None,
        thread_id: int | None = None,
        top_level: bool = False,
    ) -> MessagePage:
        op = messages.list_messages(chat_id, limit, before, after, thread_id, top_level)
        return await self._read_op(op)

    async def messages_around(self, chat_id: int, message_id: int, *, limit: int) -> MessageWindow:
        return await self._read_op(messages.messages_around(chat_id, message_id, limit))

    async def search_messages(
        self, user_id: int, query: SearchQuery, filters: SearchFilters, *, limit: int
    ) -> SearchPage:
        op = search.search_messages(self.dialect, user_id, query, filters, limit)
        # One snapshot: the probe and the page agree, and the plan setting stays local to it.
        return await self._read_op(op, snapshot=True)

    async def get_message(self, message_id: int) -> Message | None:
        return await self._read_op(messages.get_message(message_id))

    async def message_sender(self, chat_id: int, message_id: int) -> int | None:
        return await self._read_op(messages.message_sender(chat_id, message_id))

    async def is_thread_root(self, chat_id: int, message_id: int) -> bool:
        return await self._read_op(messages.is_thread_root(chat_id, message_id))

    async def edit_message(
        self,
        chat_id: int,
        message_id: int,
        content: str,
        mentions: Sequence[int],
        mentions_channel: bool,
    ) -> Message:
        op = messages.edit_message(chat_id, message_id, content, mentions, mentions_channel)
        return await self._write_op(op)

    async def delete_message(self, chat_id: int, message_id: int) -> Deleted:
        return await self._write_op(messages.delete_message(chat_id, message_id))

    async def mark_read(self, chat_id: int, user_id: int, message_id: int) -> bool:
        return await self._write_op(messages.mark_read(chat_id, user_id, message_id))

    # -- reactions and roles ---------------------------------------------------------------
    async def add_reaction(
        self, chat_id: int, message_id: int, user_id: int, emoji: str, max_distinct: int
    ) -> bool:
        op = reactions.add_reaction(chat_id, message_id, user_id, emoji, max_distinct)
        return await self._write_op(op)

    async def remove_reaction(
        self, chat_id: int, message_id: int, user_id: int, emoji: str
    ) -> bool:
        return await self._write_op(reactions.remove_reaction(chat_id, message_id, user_id, emoji))

    async def set_chat_member_role(self, chat_id: int, user_id: int, role: Role) -> Member:
        return await self._write_op(chats.set_chat_member_role(chat_id, user_id, role))
