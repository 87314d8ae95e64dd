"""User status, profile visibility and per-chat mute in storage (issue 14 part B, SPEC §7).

``user_status(user_id, status, text, expires_at)`` (sqlite 0005, postgres 0012): the status
a user chose, ``expires_at`` in epoch seconds (NULL: until cleared); no row is automatic
presence. ``chat_members.muted``: the member's own mute of the chat.

``StatusStore`` runs these operations on either backend (``SqlStorage``'s seam, like
``presence.PresenceStore``), so they live beside the ``Storage`` protocol instead of in it.
Every method raises ``Unavailable`` when the database does not answer. Times are always
passed in (``now``): the database clock is never read, so an injected clock rules expiry.
"""

from __future__ import annotations

from collections.abc import Sequence

from fechatter.status import ChosenStatus
from fechatter.storage import Storage
from fechatter.storage.core import SqlStorage
from fechatter.storage.sql import Op, Sql, first, q

_SET = Sql(
    "INSERT INTO user_status (user_id, status, text, expires_at) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (user_id) DO UPDATE SET status = excluded.status, text = excluded.text,"
    " expires_at = excluded.expires_at"
)
_CLEAR = Sql("DELETE FROM user_status WHERE user_id = ?")
_CHOSEN = Sql(
    "SELECT user_id, status, text, expires_at FROM user_status"
    " WHERE user_id = ANY(?) AND (expires_at IS NULL OR expires_at > ?)"
)
# One statement: of nodes expiring at once, each row goes to one (it announces the lapse).
_EXPIRE = Sql("DELETE FROM user_status WHERE expires_at <= ? RETURNING user_id")
_NEXT = Sql("SELECT MIN(expires_at) AS next FROM user_status WHERE expires_at IS NOT NULL")
_SHARE = Sql(
    "SELECT 1 AS one FROM workspace_members a JOIN workspace_members b"
    " ON b.workspace_id = a.workspace_id AND b.user_id = ? WHERE a.user_id = ? LIMIT 1"
)
_MUTE = Sql("UPDATE chat_members SET muted = ? WHERE chat_id = ? AND user_id = ?")


def _set(user_id: int, status: str, text: str | None, expires_at: float | None) -> Op[None]:
    yield q(_SET, (user_id, status, text, expires_at))


def _clear(user_id: int) -> Op[None]:
    yield q(_CLEAR, (user_id,))


def _chosen(user_ids: list[int], now: float) -> Op[dict[int, ChosenStatus]]:
    rows = (yield q(_CHOSEN, (user_ids, now))).rows
    return {
        int(r["user_id"]): ChosenStatus(
            r["status"], r["text"], None if r["expires_at"] is None else float(r["expires_at"])
        )
        for r in rows
    }


def _expire(now: float) -> Op[list[int]]:
    return sorted(int(r["user_id"]) for r in (yield q(_EXPIRE, (now,))).rows)


def _next() -> Op[float | None]:
    row = first((yield q(_NEXT)))
    return None if row is None or row["next"] is None else float(row["next"])


def _share(a: int, b: int) -> Op[bool]:
    return first((yield q(_SHARE, (b, a)))) is not None


def _mute(chat_id: int, user_id: int, muted: bool) -> Op[bool]:
    return (yield q(_MUTE, (muted, chat_id, user_id))).rowcount > 0


class StatusStore:
    """User status and mute on a ``SqlStorage`` (SQLite or PostgreSQL)."""

    def __init__(self, storage: Storage) -> None:
        """``TypeError`` unless ``storage`` is one of the SQL backends."""
        if not isinstance(storage, SqlStorage):
            raise TypeError("StatusStore needs a SqlStorage backend")
        self._storage = storage

    async def set(
        self, user_id: int, status: str, text: str | None, expires_at: float | None
    ) -> None:
        """Record ``user_id``'s chosen ``status`` (``away``/``busy``), replacing any."""
        await self._storage._write_op(_set(user_id, status, text, expires_at), one_statement=True)

    async def clear(self, user_id: int) -> None:
        """Back to automatic presence (no row)."""
        await self._storage._write_op(_clear(user_id), one_statement=True)

    async def chosen(self, user_ids: Sequence[int], now: float) -> dict[int, ChosenStatus]:
        """The chosen statuses among ``user_ids`` that have not expired at ``now``."""
        ids = list(dict.fromkeys(user_ids))
        if not ids:
            return {}
        return await self._storage._read_op(_chosen(ids, now))

    async def expire(self, now: float) -> list[int]:
        """Delete the statuses expired at ``now``; the users whose row this call deleted,
        ascending (each row goes to one caller, whichever process asks first)."""
        return await self._storage._write_op(_expire(now), one_statement=True)

    async def next_expiry(self) -> float | None:
        """The earliest ``expires_at`` stored (epoch seconds), or None."""
        return await self._storage._read_op(_next())

    async def share_workspace(self, a: int, b: int) -> bool:
        """Whether users ``a`` and ``b`` are members of one workspace together."""
        return await self._storage._read_op(_share(a, b))

    async def set_muted(self, chat_id: int, user_id: int, muted: bool) -> bool:
        """Set the member's mute of the chat; False if they are not a member."""
        return await self._storage._write_op(_mute(chat_id, user_id, muted), one_statement=True)
