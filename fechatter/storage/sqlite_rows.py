"""Row → record converters and shared SELECT fragments of the SQLite backend.

Pure functions over ``sqlite3.Row`` values; this module must never execute a statement.
"""

from __future__ import annotations

import json
import sqlite3

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
)
from fechatter.storage.columns import (
    CHAT_COLUMNS,
)

# One statement per chat list: members_count is the trigger-kept counter, the viewer's unread
# number a correlated subquery (an index range scan), the last message a join on
# chats.last_message_id.
# ``{join}`` is ``JOIN`` to keep only the viewer's chats, ``LEFT JOIN`` to keep all.
CHAT_VIEW_SELECT = f"""
SELECT {CHAT_COLUMNS},
    c.member_count AS members_count,
    CASE WHEN v.user_id IS NULL THEN 0 ELSE (
        SELECT COUNT(*) FROM messages x
        WHERE x.chat_id = c.id AND x.seq > v.last_read_seq AND x.sender_id <> v.user_id
    ) END AS unread_count,
    m.id AS m_id, m.chat_id AS m_chat_id, m.seq AS m_seq, m.sender_id AS m_sender_id,
    m.content AS m_content, m.files AS m_files, m.reply_to AS m_reply_to,
    m.client_id AS m_client_id, m.created_at AS m_created_at, m.edited_at AS m_edited_at
FROM chats c
{{join}} chat_members v ON v.chat_id = c.id AND v.user_id = :viewer
LEFT JOIN messages m ON m.id = c.last_message_id
"""

CHAT_ACTIVITY_ORDER = "ORDER BY COALESCE(c.last_activity_at, c.created_at) DESC, c.id DESC"


def encode_files(files: tuple[str, ...]) -> str:
    """Files as stored: a compact JSON array."""
    return json.dumps(list(files), separators=(",", ":"))


def to_user(row: sqlite3.Row) -> User:
    return User(
        id=row["id"],
        fullname=row["fullname"],
        email=row["email"],
        avatar=row["avatar"],
        status=UserStatus(row["status"]),
        created_at=row["created_at"],
    )


def to_workspace(row: sqlite3.Row) -> Workspace:
    return Workspace(
        id=row["id"],
        name=row["name"],
        description=row["description"],
        owner_id=row["owner_id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def to_workspace_member(row: sqlite3.Row) -> WorkspaceMember:
    """A row of users columns plus ``role`` and ``joined_at``."""
    return WorkspaceMember(user=to_user(row), role=Role(row["role"]), joined_at=row["joined_at"])


def to_chat_record(row: sqlite3.Row) -> ChatRecord:
    return ChatRecord(
        id=row["id"],
        workspace_id=row["workspace_id"],
        name=row["name"],
        type=ChatType(row["type"]),
        description=row["description"],
        owner_id=row["owner_id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def to_message(row: sqlite3.Row, prefix: str = "") -> Message:
    return Message(
        id=row[prefix + "id"],
        chat_id=row[prefix + "chat_id"],
        seq=row[prefix + "seq"],
        sender_id=row[prefix + "sender_id"],
        content=row[prefix + "content"],
        files=tuple(json.loads(row[prefix + "files"])),
        reply_to=row[prefix + "reply_to"],
        client_id=row[prefix + "client_id"],
        created_at=row[prefix + "created_at"],
        edited_at=row[prefix + "edited_at"],
    )


def to_chat_view(row: sqlite3.Row) -> Chat:
    """A row of ``CHAT_VIEW_SELECT``."""
    last = to_message(row, "m_") if row["m_id"] is not None else None
    return Chat(
        record=to_chat_record(row),
        members_count=row["members_count"],
        last_message=last,
        unread_count=row["unread_count"],
    )


def to_member(row: sqlite3.Row) -> Member:
    return Member(
        user_id=row["user_id"],
        chat_id=row["chat_id"],
        role=Role(row["role"]),
        joined_at=row["joined_at"],
        fullname=row["fullname"],
    )
