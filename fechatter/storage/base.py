"""The ``Storage`` protocol: every persistent operation the server performs.

Typed records in, typed records out (``fechatter.models``). Implementations translate their
driver's errors here, at the boundary: a uniqueness violation becomes ``Conflict``, an
unreachable or failing database becomes ``Unavailable``. Every method is atomic: it either
commits all of its writes or none. Authorisation is *not* storage's job; callers decide who
may do what, storage only answers questions and applies writes.

One behaviour suite (``tests/storage/test_contract.py``) runs against every backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

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
)
from fechatter.search_text import SearchQuery


class Storage(Protocol):
    """Persistent state of a Fechatter server."""

    # -- lifecycle ---------------------------------------------------------------------
    async def ping(self) -> None:
        """Raise ``Unavailable`` unless the database answers a trivial query."""

    def statistics(self) -> StorageStatistics:
        """Counters since open (for metrics and the group-commit tests)."""

    # -- users -------------------------------------------------------------------------
    async def create_user(
        self, fullname: str, email: str, password_hash: str, workspace_name: str | None
    ) -> tuple[User, Workspace | None]:
        """Create a user (email stored lower-cased) and, if named, a workspace it owns.

        ``Conflict(code="email_taken")`` or ``Conflict(code="workspace_name_taken")``; on
        conflict nothing is written.
        """

    async def get_user(self, user_id: int) -> User | None: ...

    async def get_users(self, user_ids: Sequence[int]) -> dict[int, User]:
        """The users among ``user_ids`` that exist."""

    async def get_credentials(self, email: str) -> Credentials | None:
        """Look up by email, case-insensitively."""

    async def get_user_by_email(self, email: str) -> User | None: ...

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
        """Update the given fields; ``clear_avatar`` sets avatar to null. A new
        ``password_hash`` raises the security version in the same transaction
        (``raise_security_version``: every access token voided, every session but
        ``keep_family``'s revoked)."""

    # -- refresh tokens (stored as SHA-256 hex of the opaque token) --------------------
    async def add_refresh_token(
        self,
        user_id: int,
        token_hash: str,
        family_id: str,
        expires_at: str,
        security_version: int | None = None,
    ) -> bool:
        """Store a token. With ``security_version``, only while the user's version is still
        that one: False (nothing stored) if it moved — a session that raced a revocation."""

    async def rotate_refresh_token(
        self, token_hash: str, new_hash: str, new_expires_at: str, now: str
    ) -> RefreshGrant | None:
        """Exchange a live token for a new one in the same family, atomically; the grant
        carries the user's security version and status read in that transaction.

        Returns None (and writes nothing else) for an unknown, expired or revoked token. A
        token that was already rotated is a reuse: the whole family is revoked, None returned.
        """

    async def revoke_refresh_token(self, token_hash: str, user_id: int) -> None:
        """Revoke the family of this token if it belongs to ``user_id``; else do nothing."""

    async def revoke_user_refresh_tokens(self, user_id: int) -> None: ...

    async def security_state(self, user_id: int) -> SecurityState | None:
        """The user's security version and whether they are active; None if no such user."""

    async def raise_security_version(
        self, user_id: int, keep_family: str | None = None
    ) -> SecurityState:
        """Void every access token of the user: raise their security version, record the
        change for other processes (``security_changes``) and revoke every refresh token
        except those of ``keep_family`` — one transaction. ``NotFound`` for no such user."""

    async def set_user_status(self, user_id: int, status: UserStatus) -> SecurityState:
        """Suspend or reactivate a user; a status change raises the security version
        (``raise_security_version``: every token voided, every session revoked)."""

    async def security_changes(self, after: int, since: str) -> list[SecurityChange]:
        """Changes with an id above ``after`` or recorded at/after ``since`` (RFC 3339), in
        id order. ``since`` re-reads a recent window because ids are handed out at insert and
        may commit out of order across processes; applying a change twice is harmless."""

    async def last_security_change(self) -> int:
        """The id of the newest change (0 if none): where a new follower starts."""

    # -- workspaces --------------------------------------------------------------------
    async def create_workspace(
        self, name: str, description: str | None, owner_id: int
    ) -> Workspace:
        """``Conflict(code="workspace_name_taken")`` if the name (case-insensitive) exists."""

    async def get_workspace(self, workspace_id: int) -> Workspace | None: ...

    async def list_workspaces(self, user_id: int) -> list[Workspace]:
        """Workspaces the user belongs to, oldest first."""

    async def update_workspace(
        self, workspace_id: int, *, name: str | None = None, description: str | None = None
    ) -> Workspace: ...

    async def delete_workspace(self, workspace_id: int) -> list[int]:
        """Delete it with its chats and messages; returns the deleted chat ids."""

    async def workspace_role(self, workspace_id: int, user_id: int) -> Role | None: ...

    async def list_workspace_members(self, workspace_id: int) -> list[WorkspaceMember]:
        """Oldest member first."""

    async def add_workspace_member(
        self, workspace_id: int, user_id: int, role: Role
    ) -> WorkspaceMember:
        """``Conflict(code="already_member")`` if present."""

    async def remove_workspace_member(self, workspace_id: int, user_id: int) -> bool:
        """Remove the workspace membership only (chats are the caller's business)."""

    async def workspace_member_ids(self, workspace_id: int, user_ids: Sequence[int]) -> set[int]:
        """Which of ``user_ids`` are members of the workspace."""

    async def list_user_chat_ids(self, user_id: int, workspace_id: int) -> list[int]:
        """Ids of the user's chats in a workspace."""

    # -- chats -------------------------------------------------------------------------
    async def create_chat(
        self,
        workspace_id: int,
        type: ChatType,
        name: str | None,
        description: str | None,
        owner_id: int,
        member_ids: Sequence[int],
    ) -> ChatRecord:
        """Create a chat; the owner gets role owner, the others member.

        ``member_ids`` includes the owner. ``Conflict(code="chat_name_taken")`` when a channel
        of that name (case-insensitive) exists in the workspace; ``Conflict(code=
        "single_exists")`` when a Single chat of the same pair exists in the workspace.
        """

    async def find_single_chat(self, workspace_id: int, user_a: int, user_b: int) -> int | None:
        """The id of the Single chat between two users, if any — also when one of them left
        it (by leaving the workspace): the chat is theirs to reopen."""

    async def chat_member_role(self, chat_id: int, user_id: int) -> Role | None:
        """The user's role in the chat, or None if not a member."""

    async def get_chat(self, chat_id: int) -> ChatRecord | None: ...

    async def get_chat_view(self, chat_id: int, viewer_id: int) -> Chat | None:
        """The chat with members_count, last_message and the viewer's unread_count."""

    async def list_chats(self, user_id: int, workspace_id: int | None) -> list[Chat]:
        """The user's chats, most recently active first (last message, else creation)."""

    async def list_public_channels(self, workspace_id: int, viewer_id: int) -> list[Chat]: ...

    async def update_chat(
        self, chat_id: int, *, name: str | None = None, description: str | None = None
    ) -> ChatRecord: ...

    async def delete_chat(self, chat_id: int) -> None: ...

    async def load_chat_state(self, chat_id: int) -> ChatState | None:
        """Everything a ChatActor needs at start, or None if the chat does not exist."""

    async def presence_peer_ids(self, user_id: int, max_chat_size: int) -> list[int]:
        """Other users sharing with ``user_id`` a chat of at most ``max_chat_size`` members.

        Presence is pushed only within such chats: in a 5000-member channel, pushing every
        arrival to everyone costs N² deliveries; clients ask ``/api/online-users`` instead.
        """

    async def list_chat_members(self, chat_id: int) -> list[Member]:
        """Members with fullname, oldest first."""

    async def add_chat_members(
        self, chat_id: int, user_ids: Sequence[int], role: Role
    ) -> list[Member]:
        """Add users that are not yet members; returns the added members."""

    async def remove_chat_member(
        self, chat_id: int, user_id: int, new_owner_id: int | None
    ) -> None:
        """Remove a member, optionally promoting ``new_owner_id`` to owner in the same
        transaction (also updating the chat's owner_id)."""

    async def set_chat_owner(self, chat_id: int, user_id: int) -> None: ...

    # -- messages ----------------------------------------------------------------------
    async def insert_messages(self, chat_id: int, batch: Sequence[NewMessage]) -> list[Inserted]:
        """Insert a batch in ONE transaction (group commit), in order.

        Each new message gets the next ``seq`` of the chat (gapless, 1-based). A message whose
        (sender_id, client_id) already exists in this chat — including earlier in the same
        batch — is not inserted; its original is returned with ``created=False``. A message
        whose ``reply_to`` names no message of this chat gets ``error`` and no seq. The sender's
        read marker moves to its own new message. The chat's activity time is updated.

        Thread replies (``thread_id``): an item whose ``thread_id`` is not a non-deleted
        top-level message of this chat gets ``error`` (``THREAD_ERROR``) and no seq; a reply
        increments its root's ``reply_count`` and sets ``last_reply_at`` in the same
        transaction (the actor reads the roots back to publish ``message.updated``).
        ``mentions`` and ``mentions_channel`` are stored as given.

        A retried item's message is the stored one as it is now (edited, or a tombstone), with
        its reactions, read after the commit; if that read fails the message comes back without
        them (a warning is logged): once the batch committed this never raises.
        """

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
        """before: newest first below id; after: oldest first above id; neither: newest.

        ``thread_id``: only the replies of that thread; ``top_level``: only messages that are
        not thread replies. Messages carry their reactions. (The caller checks that
        ``thread_id`` is a root of this chat.)
        """

    async def messages_around(self, chat_id: int, message_id: int, *, limit: int) -> MessageWindow:
        """The page of ``limit`` messages centred on ``message_id`` (it included), oldest
        first: ``limit // 2`` older ones, it, and the newer rest. ``NotFound`` code
        ``message_not_found`` if it is not a message of this chat."""

    async def search_messages(
        self, user_id: int, query: SearchQuery, filters: SearchFilters, *, limit: int
    ) -> SearchPage:
        """Up to ``limit`` live messages of the chats ``user_id`` is a member of now that
        contain every term of ``query`` and pass ``filters`` (SPEC §9), newest first or by
        relevance, with their reactions; ``has_more`` if another page follows."""

    async def get_message(self, message_id: int) -> Message | None:
        """One message with its reactions (tombstones included), or None."""

    async def edit_message(
        self,
        chat_id: int,
        message_id: int,
        content: str,
        mentions: Sequence[int],
        mentions_channel: bool,
    ) -> Message:
        """Replace content and mentions, set ``edited_at``; the message as it is now.

        ``NotFound`` (``message_not_found``) unless a non-deleted message of this chat. Who
        may edit is the caller's check (``message_sender`` first).
        """

    async def delete_message(self, chat_id: int, message_id: int) -> Deleted:
        """Make a message a tombstone in one transaction: ``deleted``, content "", files [],
        mentions [], its reactions removed; a reply's root gets ``reply_count`` (non-deleted
        replies) and ``last_reply_at`` (newest non-deleted reply, or None) recomputed.
        ``NotFound`` (``message_not_found``) unless a non-deleted message of this chat."""

    async def message_sender(self, chat_id: int, message_id: int) -> int | None:
        """The sender of a non-deleted message of this chat, or None (absent, deleted)."""

    async def is_thread_root(self, chat_id: int, message_id: int) -> bool:
        """Whether the message is a top-level message of this chat (tombstones included: a
        deleted root keeps its thread), i.e. a thread whose replies may be listed. A light
        check (no columns, no reactions read). A new reply's root must also not be deleted
        (``insert_messages``)."""

    async def add_reaction(
        self, chat_id: int, message_id: int, user_id: int, emoji: str, max_distinct: int
    ) -> bool:
        """Add the user's reaction; True if added, False if it was already there.

        ``NotFound`` (``message_not_found``) unless a non-deleted message of this chat;
        ``Invalid`` field ``emoji`` (code ``too_many_reactions``) when the message already has
        ``max_distinct`` distinct emoji and this one is new to it."""

    async def remove_reaction(
        self, chat_id: int, message_id: int, user_id: int, emoji: str
    ) -> bool:
        """Remove the user's reaction; True if removed, False if there was none.
        ``NotFound`` (``message_not_found``) unless a non-deleted message of this chat."""

    async def set_chat_member_role(self, chat_id: int, user_id: int, role: Role) -> Member:
        """Set a member's role; the member as it is now. ``NotFound`` (``member_not_found``)."""

    async def mark_read(self, chat_id: int, user_id: int, message_id: int) -> bool:
        """Move the read marker forward to ``message_id`` (which must be of this chat).

        Returns True if it moved, False if it was already at or past it.
        ``Invalid`` field ``message_id`` if the message is not in this chat.
        """
