"""The API's own rules applied to every archive row before the import writes it (docs/archive.md
"Validation").

``CheckedSource`` wraps any ``ArchiveSource`` (an archive zip, a Slack export) and hands on each
row checked and normalised exactly as the API would store it: names and emails by the request
schemas (``Name``, ``FullName``, ``Email``, ``Description``), message content by the send rules
(``fechatter.schemas`` trimming, at most ``max_content_chars``, empty only beside files or in a
tombstone), reactions by ``canonical_emoji``, times parsed as RFC 3339 and written in the
server's format, every integer within 1..2^63-1 (or 0.. for counters), file types as the upload
path cleans them (no CR/LF can reach a response header), and the cross-row rules: the workspace
owner (and only they) has role ``owner``, a chat's owner (and only they) has the chat role
``owner`` and is one of its members, a chat's owner and members are workspace members (each
listed once), a Single chat has no name and two people at most (members, senders and reactors
together: a pair, one of whom may have left), and a ``thread_id`` names an earlier thread root
(a top-level message) of the same chat. Senders and reactors of other chats need not be members
now: the server keeps no membership history, and a former member's messages stay. A row that
breaks one raises ``ArchiveInvalid`` naming the file, the row and the field; the import's one
transaction then writes nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import datetime
from typing import Any, TypeVar

import pydantic

from fechatter.config import Settings
from fechatter.domain.files import clean_name, clean_type, file_id_of
from fechatter.errors import Invalid
from fechatter.images import SAFE_IMAGE_TYPES
from fechatter.models import ChatType, Role, format_time
from fechatter.reaction_emoji import canonical_emoji
from fechatter.schemas import MAX_ID, Description, Email, FileUrl, FullName, Name, _content
from fechatter.storage.archive import (
    ArchiveChat,
    ArchiveFile,
    ArchiveInvalid,
    ArchiveMember,
    ArchiveMessage,
    ArchiveReaction,
    ArchiveSource,
    ArchiveUser,
    ArchiveWorkspace,
)
from fechatter.storage.blobs import KEY
from fechatter.storage.files import URL_PREFIX
from fechatter.text import check_well_formed


def is_well_formed(value: str) -> bool:
    """True if ``value`` is well-formed Unicode without NUL (``check_well_formed``)."""
    try:
        check_well_formed(value)
    except ValueError:
        return False
    return True


__all__ = ["CheckedSource", "ImportLimits", "check_file", "check_name"]

MAX_MENTIONS = 1000  # user ids in one message's ``mentions``
MAX_CLIENT_ID = 64  # characters, as the send schema
MAX_DIMENSION = 1 << 31  # pixels of an image side
_IMAGE_TYPES = frozenset(SAFE_IMAGE_TYPES.values())
_CHANNELS = (ChatType.PUBLIC_CHANNEL, ChatType.PRIVATE_CHANNEL)

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class ImportLimits:
    """The server's limits an imported row must meet (``Settings`` of the target server)."""

    max_content_chars: int = 4000
    max_files: int = 10
    max_file_bytes: int = 20 * 1024 * 1024

    @classmethod
    def of(cls, settings: Settings) -> ImportLimits:
        """The limits of ``settings``."""
        return cls(settings.max_content_chars, settings.max_files, settings.max_file_bytes)


_ADAPTERS: dict[str, pydantic.TypeAdapter[Any]] = {
    "name": pydantic.TypeAdapter(Name),
    "fullname": pydantic.TypeAdapter(FullName),
    "description": pydantic.TypeAdapter(Description),
    "email": pydantic.TypeAdapter(Email),
    "file_url": pydantic.TypeAdapter(FileUrl),
}


def _typed(kind: str, value: object, where: str, fld: str) -> Any:
    try:
        return _ADAPTERS[kind].validate_python(value)
    except pydantic.ValidationError as exc:
        msg = str(exc.errors(include_url=False)[0]["msg"]).removeprefix("Value error, ")
        raise ArchiveInvalid(f"{where}: {fld}: {msg}") from None


def check_name(value: str, where: str, fld: str = "name") -> str:
    """A workspace or channel name by the API's rule (1-128 characters, trimmed, NFC, no
    control characters), normalised; ``ArchiveInvalid`` naming ``where`` and ``fld``."""
    return str(_typed("name", value, where, fld))


def _int(value: object, where: str, fld: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_ID:
        raise ArchiveInvalid(f"{where}: {fld}: must be an integer from {low} to {MAX_ID}")
    return value


def _opt_int(value: int | None, where: str, fld: str, low: int = 1) -> int | None:
    return None if value is None else _int(value, where, fld, low)


def _time(value: object, where: str, fld: str) -> str:
    # The conversion to UTC is inside the try: an offset can carry a time past year 1 or
    # 9999 (``0001-01-01T00:00:00+01:00`` is in year 0), which ``astimezone`` cannot hold.
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else None
        if moment is not None and moment.tzinfo is not None:
            return format_time(moment)
    except (ValueError, OverflowError):
        pass
    raise ArchiveInvalid(
        f"{where}: {fld}: must be an RFC 3339 time with an offset, in years 1 to 9999 (UTC)"
    )


def _opt_time(value: str | None, where: str, fld: str) -> str | None:
    return None if value is None else _time(value, where, fld)


def _text(value: str, where: str, fld: str) -> str:
    try:
        return _content(value)
    except ValueError as exc:
        raise ArchiveInvalid(f"{where}: {fld}: {exc}") from None


def _role(value: str, where: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise ArchiveInvalid(f"{where}: role: must be owner, admin or member") from None


def _dimension(value: int | None, where: str, fld: str) -> int | None:
    if value is not None and _int(value, where, fld) > MAX_DIMENSION:
        raise ArchiveInvalid(f"{where}: {fld}: must be at most {MAX_DIMENSION} pixels")
    return value


def _blob_key(value: str | None, where: str, fld: str) -> str | None:
    if value is not None and KEY.fullmatch(value) is None:
        raise ArchiveInvalid(f"{where}: {fld}: must be a SHA-256 in lower-case hex")
    return value


def check_file(f: ArchiveFile, limits: ImportLimits) -> ArchiveFile:
    """A ``files.jsonl`` row as an upload would have stored it; ``ArchiveInvalid`` otherwise
    (sizes 0..``max_file_bytes`` bytes, a type without CR/LF or parameters, ...)."""
    where = f"files.jsonl file {f.id}"
    if not isinstance(f.id, str) or file_id_of(URL_PREFIX + f.id) != f.id:
        raise ArchiveInvalid(f"{where}: id: must be 1-64 of A-Z a-z 0-9 - _")
    if clean_name(f.name) != f.name:
        raise ArchiveInvalid(f"{where}: name: must be a file name without control characters")
    if f.content_type not in _IMAGE_TYPES and clean_type(f.content_type) != f.content_type:
        raise ArchiveInvalid(f"{where}: content_type: must be a plain type/subtype")
    thumb = (f.thumb_sha256, f.thumb_type, f.thumb_size)
    if any(v is None for v in thumb) and any(v is not None for v in thumb):
        raise ArchiveInvalid(f"{where}: thumb_sha256, thumb_type, thumb_size: all or none")
    if f.thumb_type is not None and f.thumb_type not in _IMAGE_TYPES:
        raise ArchiveInvalid(f"{where}: thumb_type: must be one of {sorted(_IMAGE_TYPES)}")
    for fld, size in (("size", f.size), ("thumb_size", f.thumb_size)):
        if size is not None and (_int(size, where, fld, 0) > limits.max_file_bytes):
            raise ArchiveInvalid(
                f"{where}: {fld}: {size} bytes is over this server's max_file_bytes"
                f" ({limits.max_file_bytes})"
            )
    return dataclasses.replace(
        f,
        uploader_id=_int(f.uploader_id, where, "uploader_id"),
        sha256=_blob_key(f.sha256, where, "sha256") or "",
        thumb_sha256=_blob_key(f.thumb_sha256, where, "thumb_sha256"),
        width=_dimension(f.width, where, "width"),
        height=_dimension(f.height, where, "height"),
        created_at=_time(f.created_at, where, "created_at"),
    )


class CheckedSource:
    """``source`` with every row checked by the API's rules (see the module docstring);
    sections must be iterated in the ``ArchiveSource`` order, once each."""

    def __init__(self, source: ArchiveSource, limits: ImportLimits) -> None:
        self._source = source
        self._limits = limits
        self._owner = 0
        self._ws_members: set[int] = set()
        self._chat_owners: dict[int, int] = {}
        self._singles: set[int] = set()  # ids of Single chats
        self._chat_members: dict[int, set[int]] = {}
        # Single chat → its people: its members, and at most one former member (the other of
        # the pair, who left the workspace) seen as a sender or reactor.
        self._pairs: dict[int, set[int]] = {}
        self._roots: dict[int, tuple[int, bool]] = {}  # message id → (chat id, is a root)

    def users(self) -> Iterator[ArchiveUser]:
        for u in self._source.users():
            where = f"users.jsonl user {u.id}"
            yield dataclasses.replace(
                u,
                id=_int(u.id, where, "id"),
                fullname=_typed("fullname", u.fullname, where, "fullname"),
                email=_typed("email", u.email, where, "email"),
                avatar=None if u.avatar is None else _typed("file_url", u.avatar, where, "avatar"),
                created_at=_time(u.created_at, where, "created_at"),
            )

    def files(self) -> Iterator[ArchiveFile]:
        for f in self._source.files():
            yield check_file(f, self._limits)

    def workspace(self) -> ArchiveWorkspace:
        ws = self._source.workspace()
        where = "workspace.json"
        self._owner = _int(ws.owner_id, where, "owner_id")
        return dataclasses.replace(
            ws,
            id=_int(ws.id, where, "id"),
            name=check_name(ws.name, where),
            description=(
                None
                if ws.description is None
                else _typed("description", ws.description, where, "description")
            ),
            created_at=_time(ws.created_at, where, "created_at"),
            updated_at=_time(ws.updated_at, where, "updated_at"),
        )

    def _member(self, m: ArchiveMember, where: str, owner: int) -> ArchiveMember:
        uid = _int(m.user_id, where, "user_id")
        role = _role(m.role, where)
        if (role is Role.OWNER) != (uid == owner):
            raise ArchiveInvalid(
                f"{where}: role: {role.value!r}, but the owner is user {owner}"
                " (the owner, and only the owner, has role 'owner')"
            )
        if not isinstance(m.muted, bool):
            raise ArchiveInvalid(f"{where}: muted: must be true or false")
        return dataclasses.replace(
            m,
            user_id=uid,
            role=role.value,
            joined_at=_time(m.joined_at, where, "joined_at"),
            last_read_seq=_int(m.last_read_seq, where, "last_read_seq", 0),
        )

    def workspace_members(self) -> Iterator[ArchiveMember]:
        for m in self._source.workspace_members():
            where = f"workspace_members.jsonl user {m.user_id}"
            if m.chat_id is not None:
                raise ArchiveInvalid(f"{where}: chat_id: must be null")
            row = self._member(m, where, self._owner)
            if row.user_id in self._ws_members:
                raise ArchiveInvalid(f"{where}: user_id: listed twice")
            self._ws_members.add(row.user_id)
            yield row
        self._ws_members.add(self._owner)  # the importer adds an unlisted owner

    def chats(self) -> Iterator[ArchiveChat]:
        for c in self._source.chats():
            where = f"chats.jsonl chat {c.id}"
            try:
                kind = ChatType(c.type)
            except ValueError:
                raise ArchiveInvalid(f"{where}: type: unknown type {c.type!r}") from None
            if kind in _CHANNELS and c.name is None:
                raise ArchiveInvalid(f"{where}: name: a channel needs a name")
            if kind is ChatType.SINGLE and c.name is not None:
                raise ArchiveInvalid(f"{where}: name: must be null: a Single chat has no name")
            row = dataclasses.replace(
                c,
                id=_int(c.id, where, "id"),
                name=None if c.name is None else check_name(c.name, where),
                description=(
                    None
                    if c.description is None
                    else _typed("description", c.description, where, "description")
                ),
                owner_id=_int(c.owner_id, where, "owner_id"),
                created_at=_time(c.created_at, where, "created_at"),
                updated_at=_time(c.updated_at, where, "updated_at"),
                last_activity_at=_opt_time(c.last_activity_at, where, "last_activity_at"),
            )
            if row.owner_id not in self._ws_members:
                raise ArchiveInvalid(
                    f"{where}: owner_id: user {row.owner_id} is not a member of the workspace"
                )
            if row.id in self._chat_owners:
                raise ArchiveInvalid(f"{where}: id: listed twice")
            self._chat_owners[row.id] = row.owner_id
            self._chat_members[row.id] = set()
            if kind is ChatType.SINGLE:
                self._singles.add(row.id)
            yield row

    def members(self) -> Iterator[ArchiveMember]:
        for m in self._source.members():
            where = f"members.jsonl chat {m.chat_id} user {m.user_id}"
            if m.chat_id not in self._chat_owners:
                raise ArchiveInvalid(f"{where}: chat_id: unknown chat id {m.chat_id}")
            row = self._member(m, where, self._chat_owners[m.chat_id])
            if row.user_id not in self._ws_members:
                raise ArchiveInvalid(f"{where}: user_id: not a member of the workspace")
            members = self._chat_members[m.chat_id]
            if row.user_id in members:
                raise ArchiveInvalid(f"{where}: user_id: listed twice in the chat")
            if m.chat_id in self._singles and len(members) == 2:
                raise ArchiveInvalid(
                    f"{where}: user_id: a third member of a Single chat (it has two people)"
                )
            members.add(row.user_id)
            yield row
        # Every chat the server keeps has its owner among its members (an owner who leaves
        # hands the chat on; a chat whose last member leaves is deleted).
        for chat_id, owner in self._chat_owners.items():
            if owner not in self._chat_members[chat_id]:
                raise ArchiveInvalid(
                    f"chats.jsonl chat {chat_id}: owner_id: user {owner} is not a member of the"
                    " chat (members.jsonl)"
                )
        self._pairs = {c: set(self._chat_members[c]) for c in self._singles}
        self._chat_members = {}  # only the Single chats' people are needed from here on

    def _person(self, chat_id: int, user_id: int, where: str, fld: str) -> None:
        """A sender or reactor of a Single chat is one of its two people: its members, or
        the other of the pair when they left (the workspace) and only one member is left."""
        people = self._pairs.get(chat_id)
        if people is None or user_id in people:
            return
        if len(people) >= 2:
            raise ArchiveInvalid(
                f"{where}: {fld}: user {user_id} is not one of the Single chat's two people"
                f" ({', '.join(map(str, sorted(people)))})"
            )
        people.add(user_id)

    def messages(self) -> Iterator[ArchiveMessage]:
        limits = self._limits
        for msg in self._source.messages():
            where = f"messages.jsonl message {msg.id}"
            mid, chat_id = _int(msg.id, where, "id"), _int(msg.chat_id, where, "chat_id")
            if not isinstance(msg.deleted, bool) or not isinstance(msg.mentions_channel, bool):
                raise ArchiveInvalid(f"{where}: deleted, mentions_channel: must be true or false")
            content = _text(msg.content, where, "content")
            if len(content) > limits.max_content_chars:
                raise ArchiveInvalid(
                    f"{where}: content: {len(content)} characters, over this server's"
                    f" max_content_chars ({limits.max_content_chars})"
                )
            if len(msg.files) > limits.max_files:
                raise ArchiveInvalid(f"{where}: files: at most {limits.max_files} files")
            files = tuple(_typed("file_url", u, where, "files") for u in msg.files)
            if msg.deleted and (content or files):
                raise ArchiveInvalid(f"{where}: content: a deleted message has no content")
            if not msg.deleted and not content and not files:
                raise ArchiveInvalid(f"{where}: content: must not be empty")
            if len(msg.mentions) > MAX_MENTIONS:
                raise ArchiveInvalid(f"{where}: mentions: at most {MAX_MENTIONS}")
            if msg.client_id is not None and not (
                isinstance(msg.client_id, str)
                and 1 <= len(msg.client_id) <= MAX_CLIENT_ID
                and is_well_formed(msg.client_id)
            ):
                raise ArchiveInvalid(f"{where}: client_id: must be 1 to {MAX_CLIENT_ID} characters")
            thread_id = _opt_int(msg.thread_id, where, "thread_id")
            if thread_id is not None and self._roots.get(thread_id) != (chat_id, True):
                raise ArchiveInvalid(
                    f"{where}: thread_id: must name an earlier top-level message of its chat"
                    f" ({thread_id})"
                )
            sender = _int(msg.sender_id, where, "sender_id")
            self._person(chat_id, sender, where, "sender_id")
            self._roots[mid] = (chat_id, thread_id is None)
            yield dataclasses.replace(
                msg,
                id=mid,
                chat_id=chat_id,
                seq=_int(msg.seq, where, "seq"),
                sender_id=sender,
                content=content,
                files=files,
                reply_to=_opt_int(msg.reply_to, where, "reply_to"),
                created_at=_time(msg.created_at, where, "created_at"),
                edited_at=_opt_time(msg.edited_at, where, "edited_at"),
                thread_id=thread_id,
                reply_count=_int(msg.reply_count, where, "reply_count", 0),
                last_reply_at=_opt_time(msg.last_reply_at, where, "last_reply_at"),
                mentions=tuple(_int(u, where, "mentions") for u in msg.mentions),
            )

    def reactions(self) -> Iterator[ArchiveReaction]:
        for r in self._source.reactions():
            where = f"reactions.jsonl message {r.message_id} user {r.user_id}"
            try:
                emoji = canonical_emoji(r.emoji) if isinstance(r.emoji, str) else None
            except Invalid:
                emoji = None
            if emoji is None:
                raise ArchiveInvalid(f"{where}: emoji: must be one emoji or a :shortcode:")
            mid, uid = _int(r.message_id, where, "message_id"), _int(r.user_id, where, "user_id")
            if mid in self._roots:  # an unknown id is the importer's error
                self._person(self._roots[mid][0], uid, where, "user_id")
            yield dataclasses.replace(
                r,
                message_id=mid,
                user_id=uid,
                emoji=emoji,
                created_at=_time(r.created_at, where, "created_at"),
            )
