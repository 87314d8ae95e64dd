"""Column lists, shared SELECT fragments and row → record converters of both backends.

Pure functions over rows as mappings by column name (``sqlite3.Row`` or psycopg's
``dict_row``). SQLite returns timestamps as the RFC 3339 text it stores and ``files`` as JSON
text; PostgreSQL returns ``timestamptz`` as aware datetimes and ``files`` as ``text[]``:
``as_time`` and ``as_files`` take either. This module must never execute a statement (it
may build one: ``chat_view_sql``).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from fechatter.models import (
    Chat,
    ChatRecord,
    ChatType,
    Member,
    Message,
    Role,
    User,
    UserStatus,
    Workspace,
    WorkspaceMember,
    format_time,
)
from fechatter.storage.sql import Row, Sql

USER_COLUMNS = "u.id, u.fullname, u.email, u.avatar, u.status, u.created_at"
WORKSPACE_COLUMNS = "w.id, w.name, w.description, w.owner_id, w.created_at, w.updated_at"
CHAT_COLUMNS = (
    "c.id, c.workspace_id, c.name, c.type, c.description, c.owner_id, c.created_at, c.updated_at"
)
MESSAGE_COLUMNS = (
    "m.id, m.chat_id, m.seq, m.sender_id, m.content, m.files, m.reply_to, m.client_id,"
    " m.created_at, m.edited_at, m.deleted, m.thread_id, m.reply_count, m.last_reply_at,"
    " m.mentions, m.mentions_channel"
)


def unqualified(columns: str) -> str:
    """A column list without its table alias, for ``RETURNING`` (``"u.id, u.x"`` → ``"id, x"``)."""
    return ", ".join(c.strip().split(".", 1)[-1] for c in columns.split(","))


# One statement per chat list: members_count is the trigger-kept counter, the viewer's unread
# and mention numbers correlated subqueries (index range scans over messages (chat_id, seq);
# tombstones and the viewer's own messages do not count), the last message a join on
# chats.last_message_id. Neutral placeholders (``sql.py``); ``{join}`` is ``JOIN`` to keep
# only the viewer's chats, ``LEFT JOIN`` to keep all; ``{mentioned}`` whether ``x.mentions``
# names the viewer, in each dialect (``chat_view_sql``). The two counts walk the same unread
# range twice; one pass (a LATERAL on PostgreSQL, SUM(CASE …) in a grouped LEFT JOIN on
# SQLite, which has no LATERAL) is left for later: it would split this statement per dialect
# and regroup the chat-list query; the range is the viewer's unread messages only.
CHAT_VIEW_SELECT = f"""
SELECT {CHAT_COLUMNS},
    c.member_count AS members_count,
    CASE WHEN v.user_id IS NULL THEN 0 ELSE (
        SELECT COUNT(*) FROM messages x
        WHERE x.chat_id = c.id AND x.seq > v.last_read_seq AND x.sender_id <> v.user_id
            AND NOT x.deleted
    ) END AS unread_count,
    CASE WHEN v.user_id IS NULL THEN 0 ELSE (
        SELECT COUNT(*) FROM messages x
        WHERE x.chat_id = c.id AND x.seq > v.last_read_seq AND x.sender_id <> v.user_id
            AND NOT x.deleted AND (x.mentions_channel OR {{mentioned}})
    ) END AS mention_count,
    CASE WHEN v.muted THEN 1 ELSE 0 END AS muted,
    m.id AS m_id, m.chat_id AS m_chat_id, m.seq AS m_seq, m.sender_id AS m_sender_id,
    m.content AS m_content, m.files AS m_files, m.reply_to AS m_reply_to,
    m.client_id AS m_client_id, m.created_at AS m_created_at, m.edited_at AS m_edited_at,
    m.deleted AS m_deleted, m.thread_id AS m_thread_id, m.reply_count AS m_reply_count,
    m.last_reply_at AS m_last_reply_at, m.mentions AS m_mentions,
    m.mentions_channel AS m_mentions_channel
FROM chats c
{{join}} chat_members v ON v.chat_id = c.id AND v.user_id = :viewer
LEFT JOIN messages m ON m.id = c.last_message_id
"""
# ``mentions``: a JSON array (SQLite), a ``bigint[]`` (PostgreSQL).
_MENTIONED = {
    "sqlite": "EXISTS (SELECT 1 FROM json_each(x.mentions) WHERE value = v.user_id)",
    "postgres": "v.user_id = ANY(x.mentions)",
}


def chat_view_sql(join: str, tail: str) -> Sql:
    """``CHAT_VIEW_SELECT`` with ``join`` (``JOIN`` / ``LEFT JOIN``) and ``tail`` (``WHERE …
    ORDER BY …``, neutral placeholders) as a statement of both dialects."""
    sqlite, postgres = (
        CHAT_VIEW_SELECT.format(join=join, mentioned=_MENTIONED[d]) + " " + tail
        for d in ("sqlite", "postgres")
    )
    return Sql.split(sqlite=sqlite, postgres=postgres)


CHAT_ACTIVITY_ORDER = "ORDER BY COALESCE(c.last_activity_at, c.created_at) DESC, c.id DESC"


def as_time(value: str | datetime) -> str:
    """A stored timestamp as the RFC 3339 UTC text every record carries."""
    return value if isinstance(value, str) else format_time(value)


def time_or_none(value: str | datetime | None) -> str | None:
    return None if value is None else as_time(value)


def as_ids(value: Any) -> tuple[int, ...]:
    """Stored ids (``mentions``): SQLite's JSON text or PostgreSQL's ``bigint[]``."""
    return tuple(json.loads(value) if isinstance(value, str) else value)


def as_files(value: Any) -> tuple[str, ...]:
    """Stored ``files``: SQLite's JSON text or PostgreSQL's ``text[]``."""
    return tuple(json.loads(value) if isinstance(value, str) else value)


def to_user(row: Row) -> User:
    return User(
        id=row["id"],
        fullname=row["fullname"],
        email=row["email"],
        avatar=row["avatar"],
        status=UserStatus(row["status"]),
        created_at=as_time(row["created_at"]),
    )


def to_workspace(row: Row) -> Workspace:
    return Workspace(
        id=row["id"],
        name=row["name"],
        description=row["description"],
        owner_id=row["owner_id"],
        created_at=as_time(row["created_at"]),
        updated_at=as_time(row["updated_at"]),
    )


def to_workspace_member(row: Row) -> WorkspaceMember:
    """A row of users columns plus ``role`` and ``joined_at``."""
    return WorkspaceMember(
        user=to_user(row), role=Role(row["role"]), joined_at=as_time(row["joined_at"])
    )


def to_chat_record(row: Row) -> ChatRecord:
    return ChatRecord(
        id=row["id"],
        workspace_id=row["workspace_id"],
        name=row["name"],
        type=ChatType(row["type"]),
        description=row["description"],
        owner_id=row["owner_id"],
        created_at=as_time(row["created_at"]),
        updated_at=as_time(row["updated_at"]),
    )


def to_message(row: Row, prefix: str = "") -> Message:
    return Message(
        id=row[prefix + "id"],
        chat_id=row[prefix + "chat_id"],
        seq=row[prefix + "seq"],
        sender_id=row[prefix + "sender_id"],
        content=row[prefix + "content"],
        files=as_files(row[prefix + "files"]),
        reply_to=row[prefix + "reply_to"],
        client_id=row[prefix + "client_id"],
        created_at=as_time(row[prefix + "created_at"]),
        edited_at=time_or_none(row[prefix + "edited_at"]),
        deleted=bool(row[prefix + "deleted"]),
        thread_id=row[prefix + "thread_id"],
        reply_count=row[prefix + "reply_count"],
        last_reply_at=time_or_none(row[prefix + "last_reply_at"]),
        mentions=as_ids(row[prefix + "mentions"]),
        mentions_channel=bool(row[prefix + "mentions_channel"]),
    )


def to_chat_view(row: Row) -> Chat:
    """A row of ``CHAT_VIEW_SELECT``."""
    last = to_message(row, "m_") if row["m_id"] is not None else None
    return Chat(
        record=to_chat_record(row),
        members_count=row["members_count"],
        last_message=last,
        unread_count=row["unread_count"],
        mention_count=row["mention_count"],
        muted=bool(row["muted"]),
    )


def to_member(row: Row) -> Member:
    return Member(
        user_id=row["user_id"],
        chat_id=row["chat_id"],
        role=Role(row["role"]),
        joined_at=as_time(row["joined_at"]),
        fullname=row["fullname"],
    )
