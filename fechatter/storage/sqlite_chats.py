"""SQLite statements for chats, chat members and messages.

Plain synchronous functions over a ``sqlite3.Connection``; ``sqlite.py`` runs each inside one
transaction on the right thread and translates driver errors. This module must never open,
commit or roll back anything itself.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from fechatter.errors import Invalid, NotFound
from fechatter.models import (
    Chat,
    ChatRecord,
    ChatState,
    ChatType,
    Inserted,
    Member,
    Message,
    MessagePage,
    NewMessage,
    Role,
    utc_now,
)
from fechatter.storage.columns import CHAT_COLUMNS, MESSAGE_COLUMNS
from fechatter.storage.sqlite_accounts import rowid
from fechatter.storage.sqlite_rows import (
    CHAT_ACTIVITY_ORDER,
    CHAT_VIEW_SELECT,
    encode_files,
    to_chat_record,
    to_chat_view,
    to_member,
    to_message,
)
from fechatter.text import name_key

_CHANNELS = (ChatType.PUBLIC_CHANNEL, ChatType.PRIVATE_CHANNEL)
REPLY_TO_ERROR = "reply_to must be a message of this chat"


def _name_key(type: ChatType, name: str | None) -> str | None:
    """Channel names are unique per workspace, case-insensitively; other names are not."""
    return name_key(name) if type in _CHANNELS and name is not None else None


def _pair_key(type: ChatType, member_ids: Sequence[int]) -> str | None:
    """Single chats are unique per pair of users and workspace."""
    if type is not ChatType.SINGLE:
        return None
    ids = sorted(set(member_ids))
    return ":".join(str(i) for i in ids)


# -- chats ---------------------------------------------------------------------------------
def create_chat(
    conn: sqlite3.Connection,
    workspace_id: int,
    type: ChatType,
    name: str | None,
    description: str | None,
    owner_id: int,
    member_ids: Sequence[int],
) -> ChatRecord:
    now = utc_now()
    cur = conn.execute(
        "INSERT INTO chats (workspace_id, type, name, name_key, pair_key, description, owner_id,"
        " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            workspace_id,
            type.value,
            name,
            _name_key(type, name),
            _pair_key(type, member_ids),
            description,
            owner_id,
            now,
            now,
        ),
    )
    chat = ChatRecord(rowid(cur), workspace_id, name, type, description, owner_id, now, now)
    others = [uid for uid in dict.fromkeys(member_ids) if uid != owner_id]
    conn.executemany(
        "INSERT INTO chat_members (chat_id, user_id, role, joined_at) VALUES (?, ?, ?, ?)",
        [(chat.id, owner_id, Role.OWNER.value, now)]
        + [(chat.id, uid, Role.MEMBER.value, now) for uid in others],
    )
    return chat


def find_single_chat(
    conn: sqlite3.Connection, workspace_id: int, user_a: int, user_b: int
) -> int | None:
    """The Single chat of the pair in the workspace, whoever of them is still a member."""
    row = conn.execute(
        "SELECT id FROM chats WHERE workspace_id = ? AND pair_key = ?",
        (workspace_id, _pair_key(ChatType.SINGLE, (user_a, user_b))),
    ).fetchone()
    return row[0] if row else None


def chat_member_role(conn: sqlite3.Connection, chat_id: int, user_id: int) -> Role | None:
    row = conn.execute(
        "SELECT role FROM chat_members WHERE chat_id = ? AND user_id = ?", (chat_id, user_id)
    ).fetchone()
    return Role(row[0]) if row else None


def get_chat(conn: sqlite3.Connection, chat_id: int) -> ChatRecord | None:
    row = conn.execute(f"SELECT {CHAT_COLUMNS} FROM chats c WHERE c.id = ?", (chat_id,)).fetchone()
    return to_chat_record(row) if row else None


def get_chat_view(conn: sqlite3.Connection, chat_id: int, viewer_id: int) -> Chat | None:
    sql = CHAT_VIEW_SELECT.format(join="LEFT JOIN") + " WHERE c.id = :chat"
    row = conn.execute(sql, {"viewer": viewer_id, "chat": chat_id}).fetchone()
    return to_chat_view(row) if row else None


def list_chats(conn: sqlite3.Connection, user_id: int, workspace_id: int | None) -> list[Chat]:
    sql = CHAT_VIEW_SELECT.format(join="JOIN")
    if workspace_id is not None:
        sql += " WHERE c.workspace_id = :workspace"
    rows = conn.execute(
        f"{sql} {CHAT_ACTIVITY_ORDER}", {"viewer": user_id, "workspace": workspace_id}
    )
    return [to_chat_view(row) for row in rows]


def list_public_channels(conn: sqlite3.Connection, workspace_id: int, viewer_id: int) -> list[Chat]:
    sql = (
        CHAT_VIEW_SELECT.format(join="LEFT JOIN")
        + " WHERE c.workspace_id = :workspace AND c.type = :type ORDER BY c.name_key, c.id"
    )
    rows = conn.execute(
        sql,
        {"viewer": viewer_id, "workspace": workspace_id, "type": ChatType.PUBLIC_CHANNEL.value},
    )
    return [to_chat_view(row) for row in rows]


def update_chat(
    conn: sqlite3.Connection, chat_id: int, name: str | None, description: str | None
) -> ChatRecord:
    chat = get_chat(conn, chat_id)
    if chat is None:
        raise NotFound("chat not found")
    sets = ["updated_at = ?"]
    values: list[object] = [utc_now()]
    if name is not None:
        sets += ["name = ?", "name_key = ?"]
        values += [name, _name_key(chat.type, name)]
    if description is not None:
        sets.append("description = ?")
        values.append(description)
    conn.execute(f"UPDATE chats SET {', '.join(sets)} WHERE id = ?", (*values, chat_id))
    updated = get_chat(conn, chat_id)
    assert updated is not None
    return updated


def delete_chat(conn: sqlite3.Connection, chat_id: int) -> None:
    conn.execute("DELETE FROM chats WHERE id = ?", (chat_id,))


def load_chat_state(conn: sqlite3.Connection, chat_id: int) -> ChatState | None:
    chat = get_chat(conn, chat_id)
    if chat is None:
        return None
    members: dict[int, Role] = {}
    joined: dict[int, str] = {}
    for row in conn.execute(
        "SELECT user_id, role, joined_at FROM chat_members WHERE chat_id = ?"
        " ORDER BY joined_at, rowid",
        (chat_id,),
    ):
        members[row["user_id"]] = Role(row["role"])
        joined[row["user_id"]] = row["joined_at"]
    return ChatState(chat=chat, members=members, joined=joined)


# -- chat members --------------------------------------------------------------------------
_MEMBER_SELECT = (
    "SELECT cm.user_id, cm.chat_id, cm.role, cm.joined_at, u.fullname"
    " FROM chat_members cm JOIN users u ON u.id = cm.user_id"
)


def presence_peer_ids(conn: sqlite3.Connection, user_id: int, max_chat_size: int) -> list[int]:
    rows = conn.execute(
        "SELECT DISTINCT other.user_id FROM chat_members mine"
        " JOIN chats c ON c.id = mine.chat_id AND c.member_count <= ?"
        " JOIN chat_members other ON other.chat_id = mine.chat_id"
        " WHERE mine.user_id = ? AND other.user_id != ?",
        (max_chat_size, user_id, user_id),
    )
    return [row[0] for row in rows]


def list_chat_members(conn: sqlite3.Connection, chat_id: int) -> list[Member]:
    rows = conn.execute(
        f"{_MEMBER_SELECT} WHERE cm.chat_id = ? ORDER BY cm.joined_at, cm.rowid", (chat_id,)
    )
    return [to_member(row) for row in rows]


def add_chat_members(
    conn: sqlite3.Connection, chat_id: int, user_ids: Sequence[int], role: Role
) -> list[Member]:
    if get_chat(conn, chat_id) is None:
        raise NotFound("chat not found")
    now = utc_now()
    added: list[int] = []
    for uid in dict.fromkeys(user_ids):
        cur = conn.execute(
            "INSERT INTO chat_members (chat_id, user_id, role, joined_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (chat_id, user_id) DO NOTHING",
            (chat_id, uid, role.value, now),
        )
        if cur.rowcount > 0:
            added.append(uid)
    if not added:
        return []
    rows = conn.execute(
        f"{_MEMBER_SELECT} WHERE cm.chat_id = ?"
        " AND cm.user_id IN (SELECT value FROM json_each(?)) ORDER BY cm.rowid",
        (chat_id, "[" + ",".join(map(str, added)) + "]"),
    )
    return [to_member(row) for row in rows]


def _promote(conn: sqlite3.Connection, chat_id: int, user_id: int) -> None:
    cur = conn.execute(
        "UPDATE chat_members SET role = ? WHERE chat_id = ? AND user_id = ?",
        (Role.OWNER.value, chat_id, user_id),
    )
    if cur.rowcount == 0:
        raise Invalid.field("new_owner_id", "must be a member of this chat")
    conn.execute(
        "UPDATE chats SET owner_id = ?, updated_at = ? WHERE id = ?", (user_id, utc_now(), chat_id)
    )


def remove_chat_member(
    conn: sqlite3.Connection, chat_id: int, user_id: int, new_owner_id: int | None
) -> None:
    conn.execute("DELETE FROM chat_members WHERE chat_id = ? AND user_id = ?", (chat_id, user_id))
    if new_owner_id is not None:
        _promote(conn, chat_id, new_owner_id)


def set_chat_owner(conn: sqlite3.Connection, chat_id: int, user_id: int) -> None:
    # One owner per chat: the previous owner stays on as an admin.
    conn.execute(
        "UPDATE chat_members SET role = ? WHERE chat_id = ? AND role = ? AND user_id <> ?",
        (Role.ADMIN.value, chat_id, Role.OWNER.value, user_id),
    )
    _promote(conn, chat_id, user_id)


# -- messages ------------------------------------------------------------------------------
def insert_messages(
    conn: sqlite3.Connection, chat_id: int, batch: Sequence[NewMessage]
) -> tuple[list[Inserted], int]:
    """The outcome of each item, and how many messages were inserted."""
    if conn.execute("SELECT 1 FROM chats WHERE id = ?", (chat_id,)).fetchone() is None:
        raise NotFound("chat not found")
    (seq,) = conn.execute(
        "SELECT COALESCE(MAX(seq), 0) FROM messages WHERE chat_id = ?", (chat_id,)
    ).fetchone()
    now = utc_now()
    results: list[Inserted] = []
    read_up_to: dict[int, Message] = {}
    for item in batch:
        if item.client_id is not None:
            # Also finds a duplicate inserted earlier in this batch: same transaction.
            row = conn.execute(
                f"SELECT {MESSAGE_COLUMNS} FROM messages m"
                " WHERE m.chat_id = ? AND m.sender_id = ? AND m.client_id = ?",
                (chat_id, item.sender_id, item.client_id),
            ).fetchone()
            if row is not None:
                results.append(Inserted(to_message(row), created=False))
                continue
        if (
            item.reply_to is not None
            and conn.execute(
                "SELECT 1 FROM messages WHERE id = ? AND chat_id = ?", (item.reply_to, chat_id)
            ).fetchone()
            is None
        ):
            results.append(Inserted(None, created=False, error=REPLY_TO_ERROR))
            continue
        seq += 1
        cur = conn.execute(
            "INSERT INTO messages (chat_id, seq, sender_id, content, files, reply_to, client_id,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                chat_id,
                seq,
                item.sender_id,
                item.content,
                encode_files(item.files),
                item.reply_to,
                item.client_id,
                now,
            ),
        )
        message = Message(
            id=rowid(cur),
            chat_id=chat_id,
            seq=seq,
            sender_id=item.sender_id,
            content=item.content,
            files=item.files,
            reply_to=item.reply_to,
            client_id=item.client_id,
            created_at=now,
            edited_at=None,
        )
        results.append(Inserted(message, created=True))
        read_up_to[item.sender_id] = message
    if read_up_to:
        conn.executemany(
            "UPDATE chat_members SET last_read_seq = ?, last_read_message_id = ?"
            " WHERE chat_id = ? AND user_id = ? AND last_read_seq < ?",
            [(m.seq, m.id, chat_id, uid, m.seq) for uid, m in read_up_to.items()],
        )
        last = max(read_up_to.values(), key=lambda m: m.seq)
        conn.execute(
            "UPDATE chats SET last_message_id = ?, last_activity_at = ? WHERE id = ?",
            (last.id, now, chat_id),
        )
    return results, sum(1 for r in results if r.created)


def list_messages(
    conn: sqlite3.Connection, chat_id: int, limit: int, before: int | None, after: int | None
) -> MessagePage:
    where = ["m.chat_id = ?"]
    values: list[object] = [chat_id]
    if before is not None:
        where.append("m.id < ?")
        values.append(before)
    if after is not None:
        where.append("m.id > ?")
        values.append(after)
    # ``after`` pages forward (oldest first); otherwise pages go backward (newest first).
    order = "ASC" if after is not None else "DESC"
    rows = conn.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM messages m WHERE {' AND '.join(where)}"
        f" ORDER BY m.id {order} LIMIT ?",
        (*values, limit + 1),
    ).fetchall()
    return MessagePage(items=[to_message(r) for r in rows[:limit]], has_more=len(rows) > limit)


def get_message(conn: sqlite3.Connection, message_id: int) -> Message | None:
    row = conn.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.id = ?", (message_id,)
    ).fetchone()
    return to_message(row) if row else None


def mark_read(conn: sqlite3.Connection, chat_id: int, user_id: int, message_id: int) -> bool:
    row = conn.execute(
        "SELECT seq FROM messages WHERE id = ? AND chat_id = ?", (message_id, chat_id)
    ).fetchone()
    if row is None:
        raise Invalid.field("message_id", "must be a message of this chat")
    cur = conn.execute(
        "UPDATE chat_members SET last_read_seq = ?, last_read_message_id = ?"
        " WHERE chat_id = ? AND user_id = ? AND last_read_seq < ?",
        (row[0], message_id, chat_id, user_id, row[0]),
    )
    return cur.rowcount > 0
