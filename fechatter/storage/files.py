"""Uploaded files' metadata — both backends (``Op``s, see ``sql.py``), issue 15, SPEC §8.

Rows of ``files`` (migrations sqlite ``0006`` / postgres ``0013``): one per upload, named by
a random id (its URL is ``/files/<id>``), the bytes in the blob store under their SHA-256
(``fechatter.storage.blobs``). ``message_files`` (kept by a trigger on message inserts) says
which messages reference which URL. This module answers the access question of SPEC §8 in
one statement and finds what the garbage collector may remove; it never touches a blob.
Authorisation decisions are the caller's (``fechatter.domain.files``); these are questions.

``FileStore`` runs the operations on a ``SqlStorage`` (either backend) through its seam.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fechatter.storage.rows import as_time
from fechatter.storage.sql import Op, Row, Sql, first, q

if TYPE_CHECKING:
    from fechatter.storage.core import SqlStorage

URL_PREFIX = "/files/"


@dataclass(frozen=True, slots=True)
class FileRecord:
    """One upload: ``id`` is the URL's token; ``sha256`` names its blob (hex); sizes in
    bytes; ``width``/``height`` in pixels and the thumbnail only for images."""

    id: str
    uploader_id: int
    name: str
    size: int
    content_type: str
    sha256: str
    width: int | None
    height: int | None
    thumb_sha256: str | None
    thumb_type: str | None
    thumb_size: int | None
    created_at: str

    @property
    def url(self) -> str:
        return f"{URL_PREFIX}{self.id}"

    @property
    def thumbnail_url(self) -> str | None:
        return f"{self.url}/thumbnail" if self.thumb_sha256 else None

    def to_json(self) -> dict[str, Any]:
        """The upload route's answer (SPEC §8)."""
        return {
            "url": self.url,
            "name": self.name,
            "size": self.size,
            "content_type": self.content_type,
            "width": self.width,
            "height": self.height,
            "thumbnail_url": self.thumbnail_url,
        }


_COLUMNS = (
    "id, uploader_id, name, size, content_type, sha256, width, height, thumb_sha256,"
    " thumb_type, thumb_size, created_at"
)
_INSERT = Sql(f"INSERT INTO files ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_GET = Sql(f"SELECT {_COLUMNS} FROM files WHERE id = ?")
_USAGE = Sql(
    "SELECT COALESCE(SUM(size + COALESCE(thumb_size, 0)), 0) AS used FROM files"
    " WHERE uploader_id = ?"
)
# The check a reference passes (a message's files, an avatar) is also a claim: it marks the
# uploads used now, so the collector (_EXPIRE, which keeps anything used within the grace)
# cannot delete one between the check and the write that references it. One statement: in
# PostgreSQL the row lock orders it against a concurrent DELETE (which then re-reads used_at,
# or, first, leaves no row to claim), in SQLite the one writer does.
_CLAIM = Sql(
    "UPDATE files SET used_at = ? WHERE uploader_id = ? AND id = ANY(?) RETURNING id, width"
)
# SPEC §8: anyone who may read a non-deleted message referencing the URL (a member of its
# chat, or of its workspace for a PublicChannel) ...
_VIA_MESSAGE = Sql(
    "SELECT 1 AS ok FROM message_files r"
    " JOIN messages m ON m.id = r.message_id AND m.deleted = :no"
    " JOIN chats c ON c.id = m.chat_id"
    " WHERE r.url = :url AND (EXISTS (SELECT 1 FROM chat_members cm"
    "   WHERE cm.chat_id = c.id AND cm.user_id = :user)"
    " OR (c.type = 'PublicChannel' AND EXISTS (SELECT 1 FROM workspace_members wm"
    "   WHERE wm.workspace_id = c.workspace_id AND wm.user_id = :user)))"
    " LIMIT 1"
)
# ... or, for an avatar, anyone sharing a workspace with its user.
_VIA_AVATAR = Sql(
    "SELECT 1 AS ok FROM users u"
    " JOIN workspace_members a ON a.user_id = u.id"
    " JOIN workspace_members b ON b.workspace_id = a.workspace_id AND b.user_id = :user"
    " WHERE u.avatar = :url LIMIT 1"
)
# The garbage collector: uploads older than the cutoff that no non-deleted message and no
# avatar references go (their blobs are then unreferenced unless shared by content).
_EXPIRE = Sql(
    "DELETE FROM files WHERE created_at < :cutoff"
    " AND (used_at IS NULL OR used_at < :cutoff)"
    " AND NOT EXISTS (SELECT 1 FROM message_files r"
    "   JOIN messages m ON m.id = r.message_id AND m.deleted = :no"
    "   WHERE r.url = '/files/' || files.id)"
    " AND NOT EXISTS (SELECT 1 FROM users u WHERE u.avatar = '/files/' || files.id)"
    " RETURNING id"
)
_REFERENCED = Sql(
    "SELECT sha256 AS key FROM files WHERE sha256 = ANY(?)"
    " UNION SELECT thumb_sha256 AS key FROM files WHERE thumb_sha256 = ANY(?)"
)


def to_file_record(row: Row) -> FileRecord:
    """A ``files`` row as a ``FileRecord`` (also the archive's file rows)."""
    return FileRecord(
        id=row["id"],
        uploader_id=row["uploader_id"],
        name=row["name"],
        size=row["size"],
        content_type=row["content_type"],
        sha256=row["sha256"],
        width=row["width"],
        height=row["height"],
        thumb_sha256=row["thumb_sha256"],
        thumb_type=row["thumb_type"],
        thumb_size=row["thumb_size"],
        created_at=as_time(row["created_at"]),
    )


def insert_file(f: FileRecord) -> Op[None]:
    """Store one upload's row (the blob is already in place)."""
    yield q(
        _INSERT,
        (
            f.id,
            f.uploader_id,
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


def get_file(file_id: str) -> Op[FileRecord | None]:
    """The upload named ``file_id`` (its URL's token), or None."""
    row = first((yield q(_GET, (file_id,))))
    return to_file_record(row) if row else None


def usage(user_id: int) -> Op[int]:
    """Bytes stored for ``user_id``'s uploads: their sizes plus their thumbnails'."""
    row = first((yield q(_USAGE, (user_id,))))
    return int(row["used"]) if row else 0


def claim(user_id: int, file_ids: Sequence[str], now: str) -> Op[dict[str, bool]]:
    """The ids among ``file_ids`` uploaded by ``user_id``, each with whether it is an image;
    those uploads are marked used at ``now`` (RFC 3339): ``expire`` keeps an upload used
    after its cutoff, so a reference checked now is written before the collector may take
    the upload (``_CLAIM``)."""
    if not file_ids:
        return {}
    rows = (yield q(_CLAIM, (now, user_id, list(file_ids)))).rows
    return {row["id"]: row["width"] is not None for row in rows}


def readable(url: str, user_id: int) -> Op[bool]:
    """Whether ``user_id`` may read ``url`` through a message or an avatar (the uploader is
    checked by the caller, who has the row)."""
    if first((yield q(_VIA_MESSAGE, {"url": url, "user": user_id, "no": False}))):
        return True
    return first((yield q(_VIA_AVATAR, {"url": url, "user": user_id}))) is not None


def expire(cutoff: str) -> Op[list[str]]:
    """Delete the unreferenced uploads created, and last claimed (``claim``), before
    ``cutoff``; their ids."""
    rows = (yield q(_EXPIRE, {"cutoff": cutoff, "no": False})).rows
    return [row["id"] for row in rows]


def referenced(keys: Sequence[str]) -> Op[set[str]]:
    """The blob keys among ``keys`` that some upload (or its thumbnail) names."""
    if not keys:
        return set()
    rows = (yield q(_REFERENCED, (list(keys), list(keys)))).rows
    return {row["key"] for row in rows}


class FileStore:
    """The file operations on a ``SqlStorage`` (SQLite or PostgreSQL). Every method raises
    ``Unavailable`` when the database does not answer."""

    def __init__(self, storage: SqlStorage) -> None:
        self.storage = storage

    async def insert(self, record: FileRecord) -> None:
        await self.storage._write_op(insert_file(record), one_statement=True)

    async def get(self, file_id: str) -> FileRecord | None:
        return await self.storage._read_op(get_file(file_id))

    async def usage(self, user_id: int) -> int:
        """Bytes stored for ``user_id``'s uploads (files and thumbnails)."""
        return await self.storage._read_op(usage(user_id))

    async def claim(self, user_id: int, file_ids: Sequence[str], now: str) -> dict[str, bool]:
        """``{id: is_image}`` for the ids among ``file_ids`` that ``user_id`` uploaded, marked
        used at ``now`` (``claim``): a write."""
        return await self.storage._write_op(claim(user_id, file_ids, now), one_statement=True)

    async def readable(self, url: str, user_id: int) -> bool:
        """Whether a non-deleted message or an avatar lets ``user_id`` read ``url``."""
        return await self.storage._read_op(readable(url, user_id), snapshot=True)

    async def expire(self, cutoff: str) -> list[str]:
        """Delete unreferenced uploads older than ``cutoff`` (RFC 3339); their ids."""
        return await self.storage._write_op(expire(cutoff), one_statement=True)

    async def referenced(self, keys: Sequence[str]) -> set[str]:
        """The blob keys among ``keys`` still named by an upload row."""
        return await self.storage._read_op(referenced(keys))
