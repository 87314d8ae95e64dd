"""PostgreSQL statements for chats, chat members and messages.

Async functions over a pooled psycopg ``Connection`` (``postgres_pool.py``); ``postgres.py``
awaits each inside one transaction and translates driver errors. This module must never open,
commit or roll back anything itself.
"""

from __future__ import annotations

from collections.abc import Sequence

from psycopg.types.json import Jsonb

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
    format_time,
    utc_now,
)
from fechatter.storage.columns import CHAT_COLUMNS, MESSAGE_COLUMNS
from fechatter.storage.postgres_accounts import all_rows, one, returned
from fechatter.storage.postgres_pool import Connection
from fechatter.storage.postgres_rows import (
    CHAT_ACTIVITY_ORDER,
    CHAT_VIEW_SELECT,
    to_chat_record,
    to_chat_view,
    to_member,
    to_message,
)
from fechatter.text import name_key

_CHANNELS = (ChatType.PUBLIC_CHANNEL, ChatType.PRIVATE_CHANNEL)
REPLY_TO_ERROR = "reply_to must be a message of this chat"
_CHAT_RETURNING = CHAT_COLUMNS.replace("c.", "")


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
async def create_chat(
    conn: Connection,
    workspace_id: int,
    type: ChatType,
    name: str | None,
    description: str | None,
    owner_id: int,
    member_ids: Sequence[int],
) -> ChatRecord:
    now = utc_now()
    others = [uid for uid in dict.fromkeys(member_ids) if uid != owner_id]
    # The chat and all its members in one round trip; unnest keeps the owner first.
    row = await returned(
        conn,
        "WITH c AS (INSERT INTO chats (workspace_id, type, name, name_key, pair_key,"
        " description, owner_id, created_at, updated_at)"
        f" VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING {_CHAT_RETURNING}),"
        " cm AS (INSERT INTO chat_members (chat_id, user_id, role, joined_at)"
        " SELECT c.id, m.user_id, m.role, c.created_at"
        " FROM c, unnest(%s::bigint[], %s::text[]) WITH ORDINALITY AS m (user_id, role, n)"
        " ORDER BY m.n)"
        " SELECT * FROM c",
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
            [owner_id, *others],
            [Role.OWNER.value] + [Role.MEMBER.value] * len(others),
        ),
    )
    return to_chat_record(row)


async def find_single_chat(
    conn: Connection, workspace_id: int, user_a: int, user_b: int
) -> int | None:
    """The Single chat of the pair in the workspace, whoever of them is still a member."""
    row = await one(
        conn,
        "SELECT id FROM chats WHERE workspace_id = %s AND pair_key = %s",
        (workspace_id, _pair_key(ChatType.SINGLE, (user_a, user_b))),
    )
    return row["id"] if row else None


async def chat_member_role(conn: Connection, chat_id: int, user_id: int) -> Role | None:
    row = await one(
        conn,
        "SELECT role FROM chat_members WHERE chat_id = %s AND user_id = %s",
        (chat_id, user_id),
    )
    return Role(row["role"]) if row else None


async def get_chat(conn: Connection, chat_id: int) -> ChatRecord | None:
    row = await one(conn, f"SELECT {CHAT_COLUMNS} FROM chats c WHERE c.id = %s", (chat_id,))
    return to_chat_record(row) if row else None


async def get_chat_view(conn: Connection, chat_id: int, viewer_id: int) -> Chat | None:
    sql = CHAT_VIEW_SELECT.format(join="LEFT JOIN") + " WHERE c.id = %(chat)s"
    row = await one(conn, sql, {"viewer": viewer_id, "chat": chat_id})
    return to_chat_view(row) if row else None


async def list_chats(conn: Connection, user_id: int, workspace_id: int | None) -> list[Chat]:
    sql = CHAT_VIEW_SELECT.format(join="JOIN")
    if workspace_id is not None:
        sql += " WHERE c.workspace_id = %(workspace)s"
    rows = await all_rows(
        conn, f"{sql} {CHAT_ACTIVITY_ORDER}", {"viewer": user_id, "workspace": workspace_id}
    )
    return [to_chat_view(row) for row in rows]


async def list_public_channels(conn: Connection, workspace_id: int, viewer_id: int) -> list[Chat]:
    sql = (
        CHAT_VIEW_SELECT.format(join="LEFT JOIN")
        + " WHERE c.workspace_id = %(workspace)s AND c.type = %(type)s"
        " ORDER BY c.name_key, c.id"
    )
    rows = await all_rows(
        conn,
        sql,
        {"viewer": viewer_id, "workspace": workspace_id, "type": ChatType.PUBLIC_CHANNEL.value},
    )
    return [to_chat_view(row) for row in rows]


async def update_chat(
    conn: Connection, chat_id: int, name: str | None, description: str | None
) -> ChatRecord:
    chat = await get_chat(conn, chat_id)
    if chat is None:
        raise NotFound("chat not found")
    sets = ["updated_at = %s"]
    values: list[object] = [utc_now()]
    if name is not None:
        sets += ["name = %s", "name_key = %s"]
        values += [name, _name_key(chat.type, name)]
    if description is not None:
        sets.append("description = %s")
        values.append(description)
    row = await returned(
        conn,
        f"UPDATE chats c SET {', '.join(sets)} WHERE c.id = %s RETURNING {CHAT_COLUMNS}",
        (*values, chat_id),
    )
    return to_chat_record(row)


async def delete_chat(conn: Connection, chat_id: int) -> None:
    await conn.execute("DELETE FROM chats WHERE id = %s", (chat_id,))


async def load_chat_state(conn: Connection, chat_id: int) -> ChatState | None:
    chat = await get_chat(conn, chat_id)
    if chat is None:
        return None
    members: dict[int, Role] = {}
    joined: dict[int, str] = {}
    for row in await all_rows(
        conn,
        "SELECT user_id, role, joined_at FROM chat_members WHERE chat_id = %s"
        " ORDER BY joined_at, ord",
        (chat_id,),
    ):
        members[row["user_id"]] = Role(row["role"])
        joined[row["user_id"]] = format_time(row["joined_at"])
    return ChatState(chat=chat, members=members, joined=joined)


# -- chat members --------------------------------------------------------------------------
_MEMBER_SELECT = (
    "SELECT cm.user_id, cm.chat_id, cm.role, cm.joined_at, u.fullname"
    " FROM chat_members cm JOIN users u ON u.id = cm.user_id"
)


async def presence_peer_ids(conn: Connection, user_id: int, max_chat_size: int) -> list[int]:
    rows = await all_rows(
        conn,
        "SELECT DISTINCT other.user_id FROM chat_members mine"
        " JOIN chats c ON c.id = mine.chat_id AND c.member_count <= %s"
        " JOIN chat_members other ON other.chat_id = mine.chat_id"
        " WHERE mine.user_id = %s AND other.user_id <> %s",
        (max_chat_size, user_id, user_id),
    )
    return [row["user_id"] for row in rows]


async def list_chat_members(conn: Connection, chat_id: int) -> list[Member]:
    rows = await all_rows(
        conn, f"{_MEMBER_SELECT} WHERE cm.chat_id = %s ORDER BY cm.joined_at, cm.ord", (chat_id,)
    )
    return [to_member(row) for row in rows]


async def add_chat_members(
    conn: Connection, chat_id: int, user_ids: Sequence[int], role: Role
) -> list[Member]:
    if await get_chat(conn, chat_id) is None:
        raise NotFound("chat not found")
    ids = list(dict.fromkeys(user_ids))
    if not ids:
        return []
    rows = await all_rows(
        conn,
        "WITH added AS (INSERT INTO chat_members (chat_id, user_id, role, joined_at)"
        " SELECT %s, m.user_id, %s, %s FROM unnest(%s::bigint[]) WITH ORDINALITY AS m (user_id, n)"
        " ORDER BY m.n ON CONFLICT (chat_id, user_id) DO NOTHING"
        " RETURNING user_id, chat_id, role, joined_at, ord)"
        " SELECT a.user_id, a.chat_id, a.role, a.joined_at, u.fullname"
        " FROM added a JOIN users u ON u.id = a.user_id ORDER BY a.ord",
        (chat_id, role.value, utc_now(), ids),
    )
    return [to_member(row) for row in rows]


async def _promote(conn: Connection, chat_id: int, user_id: int) -> None:
    cur = await conn.execute(
        "UPDATE chat_members SET role = %s WHERE chat_id = %s AND user_id = %s",
        (Role.OWNER.value, chat_id, user_id),
    )
    if cur.rowcount == 0:
        raise Invalid.field("new_owner_id", "must be a member of this chat")
    await conn.execute(
        "UPDATE chats SET owner_id = %s, updated_at = %s WHERE id = %s",
        (user_id, utc_now(), chat_id),
    )


async def remove_chat_member(
    conn: Connection, chat_id: int, user_id: int, new_owner_id: int | None
) -> None:
    await conn.execute(
        "DELETE FROM chat_members WHERE chat_id = %s AND user_id = %s", (chat_id, user_id)
    )
    if new_owner_id is not None:
        await _promote(conn, chat_id, new_owner_id)


async def set_chat_owner(conn: Connection, chat_id: int, user_id: int) -> None:
    # One owner per chat: the previous owner stays on as an admin.
    await conn.execute(
        "UPDATE chat_members SET role = %s WHERE chat_id = %s AND role = %s AND user_id <> %s",
        (Role.ADMIN.value, chat_id, Role.OWNER.value, user_id),
    )
    await _promote(conn, chat_id, user_id)


# -- messages ------------------------------------------------------------------------------
async def _existing_by_client_id(
    conn: Connection, chat_id: int, batch: Sequence[NewMessage]
) -> dict[tuple[int, str], Message]:
    keys = {(m.sender_id, m.client_id) for m in batch if m.client_id is not None}
    if not keys:
        return {}
    senders, client_ids = zip(*keys, strict=True)
    rows = await all_rows(
        conn,
        f"SELECT {MESSAGE_COLUMNS} FROM messages m"
        " JOIN unnest(%s::bigint[], %s::text[]) AS k (sender_id, client_id)"
        " ON m.sender_id = k.sender_id AND m.client_id = k.client_id"
        " WHERE m.chat_id = %s",
        (list(senders), list(client_ids), chat_id),
    )
    found: dict[tuple[int, str], Message] = {}
    for row in rows:
        message = to_message(row)
        assert message.client_id is not None
        found[(message.sender_id, message.client_id)] = message
    return found


async def _known_reply_targets(
    conn: Connection, chat_id: int, batch: Sequence[NewMessage]
) -> set[int]:
    targets = list({m.reply_to for m in batch if m.reply_to is not None})
    if not targets:
        return set()
    rows = await all_rows(
        conn, "SELECT id FROM messages WHERE chat_id = %s AND id = ANY(%s)", (chat_id, targets)
    )
    return {row["id"] for row in rows}


async def insert_messages(
    conn: Connection, chat_id: int, batch: Sequence[NewMessage]
) -> tuple[list[Inserted], int]:
    """The outcome of each item, and how many messages were inserted.

    The chat row is locked first (``FOR UPDATE``): every writer of this chat, in any process,
    waits here, so numbering from ``last_seq`` is gapless; UNIQUE (chat_id, seq) backs it up.
    """
    row = await one(conn, "SELECT last_seq FROM chats WHERE id = %s FOR UPDATE", (chat_id,))
    if row is None:
        raise NotFound("chat not found")
    seq: int = row["last_seq"]
    existing = await _existing_by_client_id(conn, chat_id, batch)
    reply_targets = await _known_reply_targets(conn, chat_id, batch)
    now = utc_now()
    # Plan: each item is an existing message, an error, a new row, or a duplicate of a new
    # row earlier in this batch (an index into ``new``).
    plan: list[Message | str | int] = []
    new: list[tuple[int, NewMessage]] = []
    in_batch: dict[tuple[int, str], int] = {}
    for item in batch:
        key = (item.sender_id, item.client_id) if item.client_id is not None else None
        if key is not None and key in existing:
            plan.append(existing[key])
        elif key is not None and key in in_batch:
            plan.append(in_batch[key])
        elif item.reply_to is not None and item.reply_to not in reply_targets:
            plan.append(REPLY_TO_ERROR)
        else:
            seq += 1
            if key is not None:
                in_batch[key] = len(new)
            plan.append(len(new))
            new.append((seq, item))
    created: list[Message] = []
    if new:
        ids = await _insert_rows(conn, chat_id, new, now)
        created = [
            Message(
                id=ids[s],
                chat_id=chat_id,
                seq=s,
                sender_id=item.sender_id,
                content=item.content,
                files=item.files,
                reply_to=item.reply_to,
                client_id=item.client_id,
                created_at=now,
                edited_at=None,
            )
            for s, item in new
        ]
        await _after_insert(conn, chat_id, created, now)
    results: list[Inserted] = []
    reported: set[int] = set()
    for step in plan:
        if isinstance(step, Message):
            results.append(Inserted(step, created=False))
        elif isinstance(step, str):
            results.append(Inserted(None, created=False, error=step))
        else:
            # A later duplicate in the batch gets the message made by the first one.
            results.append(Inserted(created[step], created=step not in reported))
            reported.add(step)
    return results, len(created)


async def _insert_rows(
    conn: Connection, chat_id: int, new: list[tuple[int, NewMessage]], now: str
) -> dict[int, int]:
    """Insert the new rows in one statement; their ids by seq."""
    rows = await all_rows(
        conn,
        "INSERT INTO messages (chat_id, seq, sender_id, content, files, reply_to, client_id,"
        " created_at)"
        " SELECT %s, r.seq, r.sender_id, r.content,"
        " ARRAY(SELECT jsonb_array_elements_text(r.files)), r.reply_to, r.client_id, %s"
        " FROM unnest(%s::bigint[], %s::bigint[], %s::text[], %s::jsonb[], %s::bigint[],"
        " %s::text[]) AS r (seq, sender_id, content, files, reply_to, client_id)"
        " ORDER BY r.seq RETURNING id, seq",
        (
            chat_id,
            now,
            [s for s, _ in new],
            [m.sender_id for _, m in new],
            [m.content for _, m in new],
            [Jsonb(list(m.files)) for _, m in new],
            [m.reply_to for _, m in new],
            [m.client_id for _, m in new],
        ),
    )
    return {row["seq"]: row["id"] for row in rows}


async def _after_insert(conn: Connection, chat_id: int, created: list[Message], now: str) -> None:
    """Senders' read markers move to their own newest message; the chat records its last."""
    newest: dict[int, Message] = {}
    for message in created:
        newest[message.sender_id] = message  # ``created`` is in seq order
    await conn.execute(
        "UPDATE chat_members cm SET last_read_seq = r.seq, last_read_message_id = r.id"
        " FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[]) AS r (user_id, seq, id)"
        " WHERE cm.chat_id = %s AND cm.user_id = r.user_id AND cm.last_read_seq < r.seq",
        (
            list(newest),
            [m.seq for m in newest.values()],
            [m.id for m in newest.values()],
            chat_id,
        ),
    )
    last = created[-1]
    await conn.execute(
        "UPDATE chats SET last_seq = %s, last_message_id = %s, last_activity_at = %s WHERE id = %s",
        (last.seq, last.id, now, chat_id),
    )


async def list_messages(
    conn: Connection, chat_id: int, limit: int, before: int | None, after: int | None
) -> MessagePage:
    where = ["m.chat_id = %s"]
    values: list[object] = [chat_id]
    if before is not None:
        where.append("m.id < %s")
        values.append(before)
    if after is not None:
        where.append("m.id > %s")
        values.append(after)
    # ``after`` pages forward (oldest first); otherwise pages go backward (newest first).
    order = "ASC" if after is not None else "DESC"
    rows = await all_rows(
        conn,
        f"SELECT {MESSAGE_COLUMNS} FROM messages m WHERE {' AND '.join(where)}"
        f" ORDER BY m.id {order} LIMIT %s",
        (*values, limit + 1),
    )
    return MessagePage(items=[to_message(r) for r in rows[:limit]], has_more=len(rows) > limit)


async def get_message(conn: Connection, message_id: int) -> Message | None:
    row = await one(
        conn, f"SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.id = %s", (message_id,)
    )
    return to_message(row) if row else None


async def mark_read(conn: Connection, chat_id: int, user_id: int, message_id: int) -> bool:
    row = await one(
        conn, "SELECT seq FROM messages WHERE id = %s AND chat_id = %s", (message_id, chat_id)
    )
    if row is None:
        raise Invalid.field("message_id", "must be a message of this chat")
    # Only forward: the condition makes a late, older marker a no-op, in any process.
    cur = await conn.execute(
        "UPDATE chat_members SET last_read_seq = %s, last_read_message_id = %s"
        " WHERE chat_id = %s AND user_id = %s AND last_read_seq < %s",
        (row["seq"], message_id, chat_id, user_id, row["seq"]),
    )
    return cur.rowcount > 0
