"""Typed, immutable records that cross layer boundaries (storage ⇄ actors ⇄ transports).

Records are frozen slotted dataclasses rather than pydantic models: they are built from
database rows and serialised on the fan-out path, where construction cost matters, and they
are never parsed from untrusted input (that happens at the edges, in ``schemas.py``).
Timestamps are RFC 3339 UTC strings with a ``Z``, produced by the storage backends, so a
record serialises without conversion. This module must never do I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any


def utc_now() -> str:
    """The current time as an RFC 3339 UTC string with microseconds and a ``Z``."""
    return format_time(datetime.now(UTC))


def format_time(moment: datetime) -> str:
    """Format an aware datetime as RFC 3339 UTC (``2026-11-25T11:47:27.123456Z``); the year
    always has four digits (``0001-…``: ``strftime("%Y")`` writes years below 1000 unpadded).
    ``OverflowError`` when the UTC time falls outside years 1-9999."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


class ChatType(enum.StrEnum):
    SINGLE = "Single"
    GROUP = "Group"
    PRIVATE_CHANNEL = "PrivateChannel"
    PUBLIC_CHANNEL = "PublicChannel"


class Role(enum.StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"

    @property
    def manages(self) -> bool:
        """Owners and admins manage a chat or workspace."""
        return self is not Role.MEMBER


class UserStatus(enum.StrEnum):
    """``Active``; ``Suspended`` by an admin; ``Pending``: created by an import, never
    activated (no password yet) — a reset link or an email-bound invite activates it."""

    ACTIVE = "Active"
    SUSPENDED = "Suspended"
    PENDING = "Pending"


@dataclass(frozen=True, slots=True)
class User:
    id: int
    fullname: str
    email: str
    avatar: str | None
    status: UserStatus
    created_at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "fullname": self.fullname,
            "email": self.email,
            "avatar": self.avatar,
            "status": self.status.value,
            "created_at": self.created_at,
        }


@dataclass(frozen=True, slots=True)
class Credentials:
    """A user with the stored Argon2 hash, only ever returned for sign-in."""

    user: User
    password_hash: str
    security_version: int = 0  # read with the hash: a session starts under this version


@dataclass(frozen=True, slots=True)
class Workspace:
    id: int
    name: str
    description: str | None
    owner_id: int
    created_at: str
    updated_at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "owner_id": self.owner_id,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True, slots=True)
class WorkspaceMember:
    user: User
    role: Role
    joined_at: str

    def to_json(self) -> dict[str, Any]:
        return {"user": self.user.to_json(), "role": self.role.value, "joined_at": self.joined_at}


@dataclass(frozen=True, slots=True)
class Reaction:
    """One emoji on a message (SPEC §6): how many reacted, and the first 20 of them, in the
    order they reacted. Reactions of a message are listed in the order each emoji first
    appeared on it."""

    emoji: str
    count: int
    user_ids: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"emoji": self.emoji, "count": self.count, "user_ids": list(self.user_ids)}


REACTION_USER_IDS = 20  # user ids listed per reaction (SPEC §6)


@dataclass(frozen=True, slots=True)
class Message:
    """A message as stored (SPEC §2 + §6). A deleted message is a *tombstone*: it keeps
    ``id``, ``seq``, ``sender_id``, ``thread_id`` and ``created_at``; ``deleted`` is True and
    its content, files, reactions and mentions are empty. ``reply_count``/``last_reply_at``
    describe a thread root (non-deleted replies only)."""

    id: int
    chat_id: int
    seq: int
    sender_id: int
    content: str
    files: tuple[str, ...]
    reply_to: int | None
    client_id: str | None
    created_at: str
    edited_at: str | None
    deleted: bool = False
    thread_id: int | None = None
    reply_count: int = 0
    last_reply_at: str | None = None
    reactions: tuple[Reaction, ...] = ()
    mentions: tuple[int, ...] = ()
    mentions_channel: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "chat_id": self.chat_id,
            "seq": self.seq,
            "sender_id": self.sender_id,
            "content": self.content,
            "files": list(self.files),
            "reply_to": self.reply_to,
            "client_id": self.client_id,
            "created_at": self.created_at,
            "edited_at": self.edited_at,
            "deleted": self.deleted,
            "thread_id": self.thread_id,
            "reply_count": self.reply_count,
            "last_reply_at": self.last_reply_at,
            "reactions": [r.to_json() for r in self.reactions],
            "mentions": list(self.mentions),
            "mentions_channel": self.mentions_channel,
        }

    def with_reactions(self, reactions: tuple[Reaction, ...]) -> Message:
        """This message with ``reactions`` replaced."""
        return replace(self, reactions=reactions)


@dataclass(frozen=True, slots=True)
class ChatRecord:
    """A chat row as stored, without per-viewer fields."""

    id: int
    workspace_id: int
    name: str | None
    type: ChatType
    description: str | None
    owner_id: int
    created_at: str
    updated_at: str


@dataclass(frozen=True, slots=True)
class Chat:
    """A chat as one viewer sees it (SPEC §2 ``Chat``)."""

    record: ChatRecord
    members_count: int
    last_message: Message | None
    unread_count: int
    mention_count: int = 0  # unread, non-deleted messages that mention the viewer (SPEC §6)
    muted: bool = False  # the viewer's own mute of the chat (SPEC §7)

    @property
    def id(self) -> int:
        return self.record.id

    def to_json(self) -> dict[str, Any]:
        r = self.record
        return {
            "id": r.id,
            "workspace_id": r.workspace_id,
            "name": r.name,
            "type": r.type.value,
            "description": r.description,
            "owner_id": r.owner_id,
            "members_count": self.members_count,
            "last_message": self.last_message.to_json() if self.last_message else None,
            "unread_count": self.unread_count,
            "mention_count": self.mention_count,
            "muted": self.muted,
            "created_at": r.created_at,
            "updated_at": r.updated_at,
        }

    def to_event_json(self) -> dict[str, Any]:
        """``to_json`` for an event sent to every member: without the viewer's own ``muted``
        (another member's mute is theirs alone; clients keep their own)."""
        data = self.to_json()
        del data["muted"]
        return data


@dataclass(frozen=True, slots=True)
class Member:
    user_id: int
    chat_id: int
    role: Role
    joined_at: str
    fullname: str

    def to_json(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "chat_id": self.chat_id,
            "role": self.role.value,
            "joined_at": self.joined_at,
            "fullname": self.fullname,
        }


@dataclass(frozen=True, slots=True)
class ChatState:
    """What a ChatActor loads once when it starts: the chat and its members' roles."""

    chat: ChatRecord
    members: dict[int, Role]
    joined: dict[int, str]


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A validated send waiting in a group-commit batch. ``mentions`` (members of the chat,
    ascending, distinct) and ``mentions_channel`` are filled in by the ChatActor, the one
    that knows the members; ``thread_id`` names the thread root the message replies in."""

    sender_id: int
    content: str
    files: tuple[str, ...]
    reply_to: int | None
    client_id: str | None
    thread_id: int | None = None
    mentions: tuple[int, ...] = ()
    mentions_channel: bool = False


@dataclass(frozen=True, slots=True)
class Inserted:
    """Outcome of one item of a batch insert.

    ``created`` is False when an earlier message with the same (sender, client_id) exists:
    ``message`` is then that original. ``error`` is set (and ``message`` None) when the item
    was rejected, e.g. ``reply_to`` names no message of this chat; the rest of the batch
    still commits.
    """

    message: Message | None
    created: bool
    error: str | None = None
    error_field: str = "reply_to"  # the request field ``error`` is about (``thread_id``)


@dataclass(frozen=True, slots=True)
class MessagePage:
    items: list[Message]
    has_more: bool


@dataclass(frozen=True, slots=True)
class MessageWindow:
    """The page centred on one message (``?around=``), oldest first."""

    items: list[Message]
    has_more_before: bool
    has_more_after: bool


@dataclass(frozen=True, slots=True)
class Deleted:
    """Outcome of a deletion: the tombstone, and the thread root whose counters it changed
    (None for a top-level message)."""

    tombstone: Message
    root: Message | None


@dataclass(frozen=True, slots=True)
class SecurityState:
    """What decides whether a user's access tokens still hold: tokens carry the
    ``version`` they were issued under; a raised version, or a user not active, voids them."""

    user_id: int
    version: int
    active: bool


@dataclass(frozen=True, slots=True)
class SecurityChange:
    """One raise of a user's security version, as followed by every process (``id`` orders
    them); ``state`` is the user's state now, which is at least as new as the change."""

    id: int
    state: SecurityState


@dataclass(frozen=True, slots=True)
class RefreshGrant:
    """Result of presenting a refresh token for rotation: the session, and its user's
    security version and status read in the same transaction as the rotation."""

    user_id: int
    family_id: str
    security_version: int = 0
    active: bool = True
    user: User | None = None


@dataclass(frozen=True, slots=True)
class StorageStatistics:
    """Counters a backend keeps; ``transactions`` counts committed write transactions."""

    transactions: int
    message_batches: int
    messages_inserted: int


@dataclass(frozen=True, slots=True)
class SearchFilters:
    """What a message search keeps besides its words (SPEC §9); None: no such filter.

    ``before`` / ``after``: RFC 3339 UTC times in ``format_time``'s form, exclusive bounds on
    ``created_at``. ``relevance``: best match first (else newest first, by id). Paging:
    ``below_id`` (newest first: only ids below it) or ``offset`` (relevance: rows to skip).
    """

    workspace_id: int | None = None
    chat_id: int | None = None
    sender_id: int | None = None
    before: str | None = None
    after: str | None = None
    relevance: bool = False
    below_id: int | None = None
    offset: int = 0


@dataclass(frozen=True, slots=True)
class SearchPage:
    """One page of search hits (messages with their reactions), in the asked order."""

    items: list[Message]
    has_more: bool
