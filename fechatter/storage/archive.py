"""Workspace archives in the database (issue 17): the export reads and the one import write.

An archive (docs/archive.md) is a workspace as rows: users, the workspace and its members,
chats and their members, messages, reactions and file metadata, each with the ids of the
database it came from. This module reads those rows out of a workspace in bounded batches,
all in one snapshot (``ArchiveStore.snapshot`` → ``ArchiveReads``), and writes a stream of
them into a NEW workspace in ONE transaction (``import_rows``), remapping every id: users
matched by normalised email (never a placeholder under ``.invalid``) or created ``Pending``
(never activated) with no usable password, new chat/message/file ids, ``reply_to``,
``thread_id``, mentions, ``<@id>`` tokens in content, file URLs and avatars. A row naming
an id the archive has not defined (earlier in its order) raises ``ArchiveInvalid`` and the
transaction rolls back: nothing is half-imported.

It must never read an archive file or a blob (``fechatter.domain.archive`` does, and hands
rows in), and never write into an existing workspace or chat: an imported chat is new, so no
``ChatActor`` owns it yet and its ``seq`` can be written as given.
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import trio

from fechatter.errors import Unavailable
from fechatter.models import ChatType, Role, UserStatus
from fechatter.search_text import search_text
from fechatter.storage.chats import pair_key
from fechatter.storage.files import URL_PREFIX, FileRecord, to_file_record
from fechatter.storage.rows import as_files, as_ids, as_time, time_or_none
from fechatter.storage.sql import Op, Row, Sql, first, only, q
from fechatter.text import is_reserved_email, name_key, normalize_email

if TYPE_CHECKING:
    from fechatter.storage.core import ReadSnapshot, SqlStorage

EXPORT_BATCH = 500  # rows per read of an export
# A password hash no verifier accepts (argon2 answers InvalidHash → a failed sign-in): an
# imported account has no password until it is activated (status Pending; a reset link or
# an email-bound invite activates it, fechatter.storage.activation; docs/archive.md).
NO_PASSWORD = "!imported"
FILE_ID_BYTES = 16  # as fechatter.domain.files: 22 URL-safe characters
_USER_TOKEN = re.compile(r"<@([1-9][0-9]{0,18})>")


class ArchiveInvalid(Exception):
    """The archive cannot be imported; the message is one line naming the file and row."""


# -- rows ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ArchiveUser:
    id: int
    fullname: str
    email: str
    avatar: str | None  # a file URL of files.jsonl, or None
    status: str
    created_at: str


@dataclass(frozen=True, slots=True)
class ArchiveWorkspace:
    id: int
    name: str
    description: str | None
    owner_id: int
    created_at: str
    updated_at: str


@dataclass(frozen=True, slots=True)
class ArchiveMember:
    """A workspace member (``chat_id`` None) or a chat member; ``last_read_seq`` is clamped
    to the chat's last imported seq (a larger value: everything read)."""

    chat_id: int | None
    user_id: int
    role: str
    joined_at: str
    last_read_seq: int = 0
    muted: bool = False


@dataclass(frozen=True, slots=True)
class ArchiveChat:
    id: int
    type: str
    name: str | None
    description: str | None
    owner_id: int
    created_at: str
    updated_at: str
    last_activity_at: str | None


@dataclass(frozen=True, slots=True)
class ArchiveMessage:
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
    deleted: bool
    thread_id: int | None
    reply_count: int
    last_reply_at: str | None
    mentions: tuple[int, ...]
    mentions_channel: bool


@dataclass(frozen=True, slots=True)
class ArchiveReaction:
    message_id: int
    user_id: int
    emoji: str
    created_at: str


# A file row of the archive is the upload's own record (docs/archive.md "files.jsonl").
ArchiveFile = FileRecord


class ArchiveSource(Protocol):
    """Rows to import, each section iterated once, in this order: users, files, workspace,
    workspace members, chats, chat members, messages (by chat, then seq), reactions. An
    iterator raises ``ArchiveInvalid`` for a row it cannot read."""

    def users(self) -> Iterator[ArchiveUser]: ...
    def files(self) -> Iterator[ArchiveFile]: ...
    def workspace(self) -> ArchiveWorkspace: ...
    def workspace_members(self) -> Iterator[ArchiveMember]: ...
    def chats(self) -> Iterator[ArchiveChat]: ...
    def members(self) -> Iterator[ArchiveMember]: ...
    def messages(self) -> Iterator[ArchiveMessage]: ...
    def reactions(self) -> Iterator[ArchiveReaction]: ...


@dataclass(slots=True)
class ImportResult:
    """What an import wrote: the new workspace's id and row counts."""

    workspace_id: int = 0
    users_created: int = 0
    users_matched: int = 0
    chats: int = 0
    messages: int = 0
    reactions: int = 0  # stored: rows of the archive naming the same reaction count once
    files: int = 0
    chat_ids: dict[int, int] = field(default_factory=dict)  # archive id → new id


# -- export reads --------------------------------------------------------------------------
_EXPORT_CHATS = Sql(
    "SELECT id, type, name, description, owner_id, created_at, updated_at, last_activity_at,"
    " COALESCE((SELECT MAX(seq) FROM messages m WHERE m.chat_id = chats.id), 0) AS last_seq"
    " FROM chats WHERE workspace_id = ? AND id > ? ORDER BY id LIMIT ?"
)
_EXPORT_WORKSPACE_MEMBERS = Sql(
    "SELECT user_id, role, joined_at FROM workspace_members WHERE workspace_id = ?"
    " AND user_id > ? ORDER BY user_id LIMIT ?"
)
_EXPORT_CHAT_MEMBERS = Sql(
    "SELECT user_id, role, joined_at, last_read_seq, muted FROM chat_members"
    " WHERE chat_id = ? AND user_id > ? ORDER BY user_id LIMIT ?"
)
_EXPORT_MESSAGES = Sql(
    "SELECT id, chat_id, seq, sender_id, content, files, reply_to, client_id, created_at,"
    " edited_at, deleted, thread_id, reply_count, last_reply_at, mentions, mentions_channel"
    " FROM messages WHERE chat_id = ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?"
)
_EXPORT_REACTIONS = Sql(
    "SELECT r.id, r.message_id, r.user_id, r.emoji, r.created_at FROM message_reactions r"
    " JOIN messages m ON m.id = r.message_id"
    " WHERE m.chat_id = ? AND m.seq <= ? AND r.id > ? ORDER BY r.id LIMIT ?"
)
_EXPORT_USERS = Sql(
    "SELECT id, fullname, email, avatar, status, created_at FROM users WHERE id = ANY(?)"
    " ORDER BY id"
)
_EXPORT_FILES = Sql(
    "SELECT id, uploader_id, name, size, content_type, sha256, width, height, thumb_sha256,"
    " thumb_type, thumb_size, created_at FROM files WHERE id = ANY(?) ORDER BY id"
)
_WORKSPACE = Sql(
    "SELECT id, name, description, owner_id, created_at, updated_at FROM workspaces WHERE id = ?"
)
_SCHEMA_VERSION = Sql("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations")


def _rows(sql: Sql, params: Sequence[object]) -> Op[list[Row]]:
    return (yield q(sql, params)).rows


def _to_chat(row: Row) -> tuple[ArchiveChat, int]:
    return (
        ArchiveChat(
            id=row["id"],
            type=row["type"],
            name=row["name"],
            description=row["description"],
            owner_id=row["owner_id"],
            created_at=as_time(row["created_at"]),
            updated_at=as_time(row["updated_at"]),
            last_activity_at=time_or_none(row["last_activity_at"]),
        ),
        int(row["last_seq"]),
    )


def _to_message(row: Row) -> ArchiveMessage:
    return ArchiveMessage(
        id=row["id"],
        chat_id=row["chat_id"],
        seq=row["seq"],
        sender_id=row["sender_id"],
        content=row["content"],
        files=as_files(row["files"]),
        reply_to=row["reply_to"],
        client_id=row["client_id"],
        created_at=as_time(row["created_at"]),
        edited_at=time_or_none(row["edited_at"]),
        deleted=bool(row["deleted"]),
        thread_id=row["thread_id"],
        reply_count=row["reply_count"],
        last_reply_at=time_or_none(row["last_reply_at"]),
        mentions=as_ids(row["mentions"]),
        mentions_channel=bool(row["mentions_channel"]),
    )


# -- the import write ----------------------------------------------------------------------
_USER_ID_BY_EMAIL = Sql("SELECT id FROM users WHERE email = ?")
_INSERT_USER = Sql(
    "INSERT INTO users (fullname, email, password_hash, status, created_at)"
    " VALUES (?, ?, ?, ?, ?) RETURNING id"
)
_SET_AVATAR = Sql("UPDATE users SET avatar = ? WHERE id = ?")
_INSERT_FILE = Sql(
    "INSERT INTO files (id, uploader_id, name, size, content_type, sha256, width, height,"
    " thumb_sha256, thumb_type, thumb_size, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_NAME_TAKEN = Sql("SELECT 1 AS taken FROM workspaces WHERE name_key = ?")
_INSERT_WORKSPACE = Sql(
    "INSERT INTO workspaces (name, name_key, description, owner_id, created_at, updated_at)"
    " VALUES (?, ?, ?, ?, ?, ?) RETURNING id"
)
_INSERT_WORKSPACE_MEMBER = Sql(
    "INSERT INTO workspace_members (workspace_id, user_id, role, joined_at) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (workspace_id, user_id) DO NOTHING"
)
_INSERT_CHAT = Sql(
    "INSERT INTO chats (workspace_id, type, name, name_key, description, owner_id,"
    " last_activity_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"
)
_INSERT_CHAT_MEMBER = Sql(
    "INSERT INTO chat_members (chat_id, user_id, role, joined_at, last_read_seq, muted)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (chat_id, user_id) DO NOTHING"
)
_SET_PAIR = Sql("UPDATE chats SET pair_key = ? WHERE id = ?")
_INSERT_MESSAGE = Sql(
    "INSERT INTO messages (chat_id, seq, sender_id, content, files, reply_to, client_id,"
    " created_at, edited_at, deleted, thread_id, mentions, mentions_channel)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"
)
_INDEX_ONE = Sql("INSERT INTO messages_fts (rowid, body) VALUES (?, ?)")
_INSERT_REACTION = Sql(
    "INSERT INTO message_reactions (message_id, user_id, emoji, created_at) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (message_id, emoji, user_id) DO NOTHING"
)
# Derived columns, recomputed from the imported rows by the server's own rules (SPEC §6):
# a root counts its non-deleted replies and shows the newest one's time.
_THREAD_COUNTERS = Sql(
    "UPDATE messages SET"
    " reply_count = (SELECT COUNT(*) FROM messages r WHERE r.thread_id = messages.id"
    "   AND r.deleted = :no),"
    " last_reply_at = (SELECT MAX(r.created_at) FROM messages r"
    "   WHERE r.thread_id = messages.id AND r.deleted = :no)"
    " WHERE chat_id = :chat AND thread_id IS NULL"
)
_TAIL = (
    " last_message_id = (SELECT id FROM messages WHERE chat_id = :chat AND seq = :seq),"
    " last_activity_at = COALESCE(last_activity_at,"
    "   (SELECT created_at FROM messages WHERE chat_id = :chat AND seq = :seq))"
    " WHERE id = :chat"
)
# PostgreSQL numbers the next send from chats.last_seq; SQLite from the messages themselves.
_CHAT_TAIL = Sql.split(
    sqlite="UPDATE chats SET" + _TAIL, postgres="UPDATE chats SET last_seq = :seq," + _TAIL
)
_READ_MARKERS = Sql(
    "UPDATE chat_members SET"
    " last_read_seq = CASE WHEN last_read_seq > :seq THEN :seq ELSE last_read_seq END,"
    " last_read_message_id = (SELECT m.id FROM messages m WHERE m.chat_id = :chat"
    "   AND m.seq = CASE WHEN chat_members.last_read_seq > :seq THEN :seq"
    "   ELSE chat_members.last_read_seq END)"
    " WHERE chat_id = :chat"
)


def _need(mapping: dict[int, int], key: int | None, what: str, where: str) -> int:
    if key is None or key not in mapping:
        raise ArchiveInvalid(f"{where}: unknown {what} id {key}")
    return mapping[key]


@dataclass(slots=True)
class _ChatState:
    new_id: int
    type: ChatType
    last_seq: int = 0
    members: list[int] = field(default_factory=list)


_PLACEHOLDER_TRIES = 8  # each a fresh 48-bit suffix: the last is never reached in practice


def _free_placeholder(email: str) -> Op[str]:
    """``email`` if no user has it, else ``local+<12 hex>@domain`` (the same ``.invalid``
    domain) that no user has; ``ArchiveInvalid`` if none is found in a few tries."""
    local, _, domain = email.rpartition("@")
    candidate = email
    for _ in range(_PLACEHOLDER_TRIES):
        if first((yield q(_USER_ID_BY_EMAIL, (candidate,)))) is None:
            return candidate
        candidate = f"{local[:200]}+{secrets.token_hex(6)}@{domain}"
    raise ArchiveInvalid(f"no free placeholder address like {email!r}")  # pragma: no cover


def import_rows(
    source: ArchiveSource, workspace_name: str | None, dialect: str
) -> Op[ImportResult]:
    """Write ``source`` as a new workspace (named ``workspace_name``, else the archive's);
    ``ArchiveInvalid`` for a bad row or a taken name (the caller's transaction rolls back)."""
    result = ImportResult()
    users: dict[int, int] = {}
    created: set[int] = set()  # archive ids of users this import creates
    avatars: list[tuple[int, str]] = []
    for u in source.users():
        where = f"users.jsonl user {u.id}"
        if u.id in users:
            raise ArchiveInvalid(f"{where}: listed twice")
        email = normalize_email(u.email)
        if is_reserved_email(email):
            # A placeholder (the Slack import's ``….invalid``): never anyone's account, even
            # if older data holds one with it — always a new user, under a free address.
            email = yield from _free_placeholder(email)
        else:
            row = first((yield q(_USER_ID_BY_EMAIL, (email,))))
            if row is not None:
                users[u.id] = int(row["id"])
                result.users_matched += 1
                continue
        new = only(
            (
                yield q(
                    _INSERT_USER,
                    (u.fullname, email, NO_PASSWORD, UserStatus.PENDING.value, u.created_at),
                )
            )
        )
        users[u.id] = int(new["id"])
        created.add(u.id)
        result.users_created += 1
        if u.avatar:
            avatars.append((u.id, u.avatar))

    file_urls: dict[str, str] = {}
    for f in source.files():
        where = f"files.jsonl file {f.id}"
        old_url = URL_PREFIX + f.id
        if old_url in file_urls:
            raise ArchiveInvalid(f"{where}: listed twice")
        file_id = secrets.token_urlsafe(FILE_ID_BYTES)
        uploader = _need(users, f.uploader_id, "user", where)
        yield q(
            _INSERT_FILE,
            (
                file_id,
                uploader,
                f.name,
                f.size,
                f.content_type,
                f.sha256,
                f.width,
                f.height,
                f.thumb_sha256,
                f.thumb_type,
                f.thumb_size,
                f.created_at,
            ),
        )
        file_urls[old_url] = URL_PREFIX + file_id
        result.files += 1
    for old_user, url in avatars:
        if url not in file_urls:
            raise ArchiveInvalid(f"users.jsonl user {old_user}: avatar {url} not in files.jsonl")
        yield q(_SET_AVATAR, (file_urls[url], users[old_user]))

    ws = source.workspace()
    name = workspace_name or ws.name
    if first((yield q(_NAME_TAKEN, (name_key(name),)))) is not None:
        raise ArchiveInvalid(
            f"a workspace named {name!r} exists already; choose another with --workspace-name"
        )
    owner = _need(users, ws.owner_id, "user", "workspace.json owner_id")
    ws_row = only(
        (
            yield q(
                _INSERT_WORKSPACE,
                (name, name_key(name), ws.description, owner, ws.created_at, ws.updated_at),
            )
        )
    )
    result.workspace_id = ws_id = int(ws_row["id"])
    owner_listed = False
    for m in source.workspace_members():
        where = f"workspace_members.jsonl user {m.user_id}"
        role = _role(m.role, where)
        uid = _need(users, m.user_id, "user", where)
        owner_listed = owner_listed or uid == owner
        yield q(_INSERT_WORKSPACE_MEMBER, (ws_id, uid, role, m.joined_at))
    if not owner_listed:
        yield q(_INSERT_WORKSPACE_MEMBER, (ws_id, owner, Role.OWNER.value, ws.created_at))

    chats: dict[int, _ChatState] = {}
    for c in source.chats():
        where = f"chats.jsonl chat {c.id}"
        if c.id in chats:
            raise ArchiveInvalid(f"{where}: listed twice")
        try:
            kind = ChatType(c.type)
        except ValueError:
            raise ArchiveInvalid(f"{where}: unknown type {c.type!r}") from None
        chat_owner = _need(users, c.owner_id, "user", where)
        key = name_key(c.name) if c.name and kind in _CHANNELS else None
        row = only(
            (
                yield q(
                    _INSERT_CHAT,
                    (
                        ws_id,
                        kind.value,
                        c.name,
                        key,
                        c.description,
                        chat_owner,
                        c.last_activity_at,
                        c.created_at,
                        c.updated_at,
                    ),
                )
            )
        )
        chats[c.id] = _ChatState(int(row["id"]), kind)
        result.chat_ids[c.id] = int(row["id"])
        result.chats += 1

    for m in source.members():
        where = f"members.jsonl chat {m.chat_id} user {m.user_id}"
        chat = chats.get(m.chat_id) if m.chat_id is not None else None
        if chat is None:
            raise ArchiveInvalid(f"{where}: unknown chat id {m.chat_id}")
        uid = _need(users, m.user_id, "user", where)
        yield q(
            _INSERT_CHAT_MEMBER,
            (chat.new_id, uid, _role(m.role, where), m.joined_at, m.last_read_seq, m.muted),
        )
        if chat.type is ChatType.SINGLE:
            chat.members.append(uid)
    for chat in chats.values():
        if chat.type is ChatType.SINGLE and len(set(chat.members)) == 2:
            yield q(_SET_PAIR, (pair_key(chat.type, chat.members), chat.new_id))

    messages: dict[int, tuple[int, int]] = {}  # archive id → (new id, archive chat id)
    for msg in source.messages():
        where = f"messages.jsonl message {msg.id}"
        chat = chats.get(msg.chat_id)
        if chat is None:
            raise ArchiveInvalid(f"{where}: unknown chat id {msg.chat_id}")
        if msg.id in messages:
            raise ArchiveInvalid(f"{where}: listed twice")
        if msg.seq != chat.last_seq + 1:
            raise ArchiveInvalid(
                f"{where}: seq {msg.seq} where {chat.last_seq + 1} was due (seq is gapless)"
            )
        sender = _need(users, msg.sender_id, "user", where)
        reply_to = _same_chat(messages, msg.reply_to, msg.chat_id, "reply_to", where)
        thread_id = _same_chat(messages, msg.thread_id, msg.chat_id, "thread_id", where)
        files = []
        for url in msg.files:
            if url not in file_urls:
                raise ArchiveInvalid(f"{where}: file {url} not in files.jsonl")
            files.append(file_urls[url])
        mentions = sorted(_need(users, uid, "user", where) for uid in msg.mentions)
        content = remap_mentions(msg.content, users)
        row = only(
            (
                yield q(
                    _INSERT_MESSAGE,
                    (
                        chat.new_id,
                        msg.seq,
                        sender,
                        content,
                        files,
                        reply_to,
                        msg.client_id,
                        msg.created_at,
                        msg.edited_at,
                        msg.deleted,
                        thread_id,
                        mentions,
                        msg.mentions_channel,
                    ),
                )
            )
        )
        new_id = int(row["id"])
        if dialect == "sqlite" and not msg.deleted:
            # The SQLite insert path indexes in Python (storage/messages.py); PostgreSQL's
            # trigger does it by itself.
            yield q(_INDEX_ONE, (new_id, search_text(content)))
        messages[msg.id] = (new_id, msg.chat_id)
        chat.last_seq = msg.seq
        result.messages += 1

    for r in source.reactions():
        where = f"reactions.jsonl message {r.message_id} user {r.user_id}"
        if r.message_id not in messages:
            raise ArchiveInvalid(f"{where}: unknown message id {r.message_id}")
        uid = _need(users, r.user_id, "user", where)
        added = yield q(_INSERT_REACTION, (messages[r.message_id][0], uid, r.emoji, r.created_at))
        # What is stored: a repeat of (message, emoji, user) is one reaction (Slack's "+1"
        # and "thumbsup" by one user are both 👍).
        result.reactions += added.rowcount

    for chat in chats.values():
        params = {"chat": chat.new_id, "seq": chat.last_seq, "no": False}
        yield q(_THREAD_COUNTERS, params)
        yield q(_CHAT_TAIL, {"chat": chat.new_id, "seq": chat.last_seq})
        yield q(_READ_MARKERS, {"chat": chat.new_id, "seq": chat.last_seq})
    return result


_CHANNELS = (ChatType.PUBLIC_CHANNEL, ChatType.PRIVATE_CHANNEL)


def _role(value: str, where: str) -> str:
    try:
        return Role(value).value
    except ValueError:
        raise ArchiveInvalid(f"{where}: unknown role {value!r}") from None


def _same_chat(
    messages: dict[int, tuple[int, int]], ref: int | None, chat_id: int, what: str, where: str
) -> int | None:
    if ref is None:
        return None
    found = messages.get(ref)
    if found is None or found[1] != chat_id:
        raise ArchiveInvalid(f"{where}: {what} names no earlier message of its chat ({ref})")
    return found[0]


def remap_mentions(content: str, users: dict[int, int]) -> str:
    """``content`` with each ``<@id>`` of a user in ``users`` renamed to its new id; a token
    naming a user absent from the archive becomes the plain text ``@id`` (it named no one
    before, and must not name a different user now)."""

    def swap(match: re.Match[str]) -> str:
        new = users.get(int(match.group(1)))
        return f"<@{new}>" if new is not None else f"@{match.group(1)}"

    return _USER_TOKEN.sub(swap, content)


def mentioned_ids(content: str) -> set[int]:
    """The user ids ``<@id>`` tokens in ``content`` name."""
    return {int(m.group(1)) for m in _USER_TOKEN.finditer(content)}


class ArchiveReads:
    """The export's reads, all in one ``ReadSnapshot`` (``ArchiveStore.snapshot``); every
    method raises ``Unavailable`` when the database does not answer."""

    def __init__(self, snapshot: ReadSnapshot) -> None:
        self._snapshot = snapshot

    async def workspace(self, workspace_id: int) -> ArchiveWorkspace | None:
        """The workspace's row, or None."""
        rows = await self._snapshot.read(_rows(_WORKSPACE, (workspace_id,)))
        if not rows:
            return None
        r = rows[0]
        return ArchiveWorkspace(
            id=r["id"],
            name=r["name"],
            description=r["description"],
            owner_id=r["owner_id"],
            created_at=as_time(r["created_at"]),
            updated_at=as_time(r["updated_at"]),
        )

    async def schema_version(self) -> int:
        """The newest migration applied to this database."""
        rows = await self._snapshot.read(_rows(_SCHEMA_VERSION, ()))
        return int(rows[0]["v"])

    async def workspace_members(self, workspace_id: int, after: int) -> list[ArchiveMember]:
        """Up to ``EXPORT_BATCH`` members with user ids above ``after``, by user id."""
        rows = await self._snapshot.read(
            _rows(_EXPORT_WORKSPACE_MEMBERS, (workspace_id, after, EXPORT_BATCH))
        )
        return [ArchiveMember(None, r["user_id"], r["role"], as_time(r["joined_at"])) for r in rows]

    async def chats(self, workspace_id: int, after: int) -> list[tuple[ArchiveChat, int]]:
        """Up to ``EXPORT_BATCH`` chats with ids above ``after``, each with its last seq."""
        rows = await self._snapshot.read(_rows(_EXPORT_CHATS, (workspace_id, after, EXPORT_BATCH)))
        return [_to_chat(r) for r in rows]

    async def chat_members(self, chat_id: int, after: int) -> list[ArchiveMember]:
        """Up to ``EXPORT_BATCH`` members of the chat with user ids above ``after``."""
        rows = await self._snapshot.read(
            _rows(_EXPORT_CHAT_MEMBERS, (chat_id, after, EXPORT_BATCH))
        )
        return [
            ArchiveMember(
                chat_id,
                r["user_id"],
                r["role"],
                as_time(r["joined_at"]),
                int(r["last_read_seq"]),
                bool(r["muted"]),
            )
            for r in rows
        ]

    async def messages(self, chat_id: int, after_seq: int, upto_seq: int) -> list[ArchiveMessage]:
        """Up to ``EXPORT_BATCH`` messages of the chat with ``after_seq < seq <= upto_seq``,
        by seq, tombstones included."""
        rows = await self._snapshot.read(
            _rows(_EXPORT_MESSAGES, (chat_id, after_seq, upto_seq, EXPORT_BATCH))
        )
        return [_to_message(r) for r in rows]

    async def reactions(
        self, chat_id: int, upto_seq: int, after: int
    ) -> list[tuple[int, ArchiveReaction]]:
        """Up to ``EXPORT_BATCH`` reactions (with their row ids, above ``after``) on messages
        of the chat up to ``upto_seq``, in the order they were added."""
        rows = await self._snapshot.read(
            _rows(_EXPORT_REACTIONS, (chat_id, upto_seq, after, EXPORT_BATCH))
        )
        return [
            (
                r["id"],
                ArchiveReaction(
                    r["message_id"], r["user_id"], r["emoji"], as_time(r["created_at"])
                ),
            )
            for r in rows
        ]

    async def users(self, user_ids: Sequence[int]) -> list[ArchiveUser]:
        """The users among ``user_ids``, by id."""
        rows = await self._snapshot.read(_rows(_EXPORT_USERS, (sorted(user_ids),)))
        return [
            ArchiveUser(
                r["id"],
                r["fullname"],
                r["email"],
                r["avatar"],
                r["status"],
                as_time(r["created_at"]),
            )
            for r in rows
        ]

    async def files(self, file_ids: Sequence[str]) -> list[ArchiveFile]:
        """The uploads among ``file_ids``, by id."""
        rows = await self._snapshot.read(_rows(_EXPORT_FILES, (sorted(file_ids),)))
        return [to_file_record(r) for r in rows]


class ArchiveStore:
    """Archive reads (one snapshot at a time) and the import write on a ``SqlStorage``
    (either backend).

    ``snapshot_limit``: seconds a snapshot may stay open (``math.inf``: no limit); the
    caller (the command line) chooses it, since an open snapshot holds the database back
    (``SqlStorage.open_read_snapshot``)."""

    def __init__(self, storage: SqlStorage, *, snapshot_limit: float = math.inf) -> None:
        self.storage = storage
        self.snapshot_limit = snapshot_limit

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[ArchiveReads]:
        """Reads that all see the database as it was when the block began (one read
        transaction, held until the block ends). ``Unavailable`` if it cannot be opened, or
        if the block outlives ``snapshot_limit`` (it is cancelled then)."""
        with trio.move_on_after(self.snapshot_limit) as limit:
            async with self.storage.open_read_snapshot(hold=self.snapshot_limit) as snap:
                yield ArchiveReads(snap)
        if limit.cancelled_caught:
            raise Unavailable(
                f"the export's snapshot was open longer than {self.snapshot_limit:g} s; nothing"
                " was written (raise --snapshot-limit, or export when the database is quieter)"
            )

    async def import_rows(self, source: ArchiveSource, workspace_name: str | None) -> ImportResult:
        """``import_rows`` in one write transaction: all of it, or (on any error) nothing."""
        return await self.storage._write_op(
            import_rows(source, workspace_name, self.storage.dialect)
        )
