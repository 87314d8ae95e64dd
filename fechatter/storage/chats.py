"""Operations on chats and chat members — both backends (``Op``s, see ``sql.py``).

Also the domain keys both backends store: ``name_key`` for channels and ``pair_key`` for the
one direct chat of a pair. Operations never open, commit or roll back anything.
"""

from __future__ import annotations

from collections.abc import Sequence

from fechatter.errors import Invalid, NotFound
from fechatter.models import Chat, ChatRecord, ChatState, ChatType, Member, Role, utc_now
from fechatter.storage.rows import (
    CHAT_ACTIVITY_ORDER,
    CHAT_COLUMNS,
    as_time,
    chat_view_sql,
    to_chat_record,
    to_chat_view,
    to_member,
    unqualified,
)
from fechatter.storage.sql import Op, Sql, dynamic, first, only, q
from fechatter.text import name_key

_CHANNELS = (ChatType.PUBLIC_CHANNEL, ChatType.PRIVATE_CHANNEL)


def channel_name_key(type: ChatType, name: str | None) -> str | None:
    """Channel names are unique per workspace, case-insensitively; other names are not."""
    return name_key(name) if type in _CHANNELS and name is not None else None


def pair_key(type: ChatType, member_ids: Sequence[int]) -> str | None:
    """Single chats are unique per pair of users and workspace: ``'lo:hi'``."""
    if type is not ChatType.SINGLE:
        return None
    return ":".join(str(i) for i in sorted(set(member_ids)))


# -- chats ---------------------------------------------------------------------------------
_INSERT_CHAT = Sql(
    "INSERT INTO chats (workspace_id, type, name, name_key, pair_key, description, owner_id,"
    f" created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    f" RETURNING {unqualified(CHAT_COLUMNS)}"
)
# The owner first, then the others in the order given (insertion order breaks joined_at ties).
_INSERT_CHAT_MEMBERS = Sql.each(
    "INSERT INTO chat_members (chat_id, user_id, role, joined_at)"
    " SELECT ?, j.value, CASE WHEN j.value = ? THEN ? ELSE ? END, ? FROM {ids}"
    " WHERE true ORDER BY j.key"
)
_FIND_SINGLE = Sql("SELECT id FROM chats WHERE workspace_id = ? AND pair_key = ?")
_CHAT_ROLE = Sql("SELECT role FROM chat_members WHERE chat_id = ? AND user_id = ?")
_GET_CHAT = Sql(f"SELECT {CHAT_COLUMNS} FROM chats c WHERE c.id = ?")
_CHAT_VIEW = chat_view_sql("LEFT JOIN", "WHERE c.id = :chat")
_LIST_CHATS = chat_view_sql("JOIN", CHAT_ACTIVITY_ORDER)
_LIST_WORKSPACE_CHATS = chat_view_sql(
    "JOIN", f"WHERE c.workspace_id = :workspace {CHAT_ACTIVITY_ORDER}"
)
_LIST_PUBLIC = chat_view_sql(
    "LEFT JOIN", "WHERE c.workspace_id = :workspace AND c.type = :type ORDER BY c.name_key, c.id"
)
_DELETE_CHAT = Sql("DELETE FROM chats WHERE id = ?")
# Insertion order breaks ties: SQLite's rowid, PostgreSQL's ord column.
_STATE_MEMBERS = (
    "SELECT user_id, role, joined_at FROM chat_members WHERE chat_id = ? ORDER BY joined_at, "
)
_CHAT_STATE_MEMBERS = Sql.split(sqlite=_STATE_MEMBERS + "rowid", postgres=_STATE_MEMBERS + "ord")


def create_chat(
    workspace_id: int,
    type: ChatType,
    name: str | None,
    description: str | None,
    owner_id: int,
    member_ids: Sequence[int],
) -> Op[ChatRecord]:
    now = utc_now()
    row = only(
        (
            yield q(
                _INSERT_CHAT,
                (
                    workspace_id,
                    type.value,
                    name,
                    channel_name_key(type, name),
                    pair_key(type, member_ids),
                    description,
                    owner_id,
                    now,
                    now,
                ),
            )
        )
    )
    chat = to_chat_record(row)
    ids = [owner_id, *(uid for uid in dict.fromkeys(member_ids) if uid != owner_id)]
    params = (chat.id, owner_id, Role.OWNER.value, Role.MEMBER.value, now, ids)
    yield q(_INSERT_CHAT_MEMBERS, params)
    return chat


def find_single_chat(workspace_id: int, user_a: int, user_b: int) -> Op[int | None]:
    """The Single chat of the pair in the workspace, whoever of them is still a member."""
    key = pair_key(ChatType.SINGLE, (user_a, user_b))
    row = first((yield q(_FIND_SINGLE, (workspace_id, key))))
    return row["id"] if row else None


def chat_member_role(chat_id: int, user_id: int) -> Op[Role | None]:
    row = first((yield q(_CHAT_ROLE, (chat_id, user_id))))
    return Role(row["role"]) if row else None


def get_chat(chat_id: int) -> Op[ChatRecord | None]:
    row = first((yield q(_GET_CHAT, (chat_id,))))
    return to_chat_record(row) if row else None


def get_chat_view(chat_id: int, viewer_id: int) -> Op[Chat | None]:
    row = first((yield q(_CHAT_VIEW, {"viewer": viewer_id, "chat": chat_id})))
    return to_chat_view(row) if row else None


def list_chats(user_id: int, workspace_id: int | None) -> Op[list[Chat]]:
    if workspace_id is None:
        result = yield q(_LIST_CHATS, {"viewer": user_id})
    else:
        result = yield q(_LIST_WORKSPACE_CHATS, {"viewer": user_id, "workspace": workspace_id})
    return [to_chat_view(row) for row in result.rows]


def list_public_channels(workspace_id: int, viewer_id: int) -> Op[list[Chat]]:
    params = {"viewer": viewer_id, "workspace": workspace_id, "type": ChatType.PUBLIC_CHANNEL.value}
    result = yield q(_LIST_PUBLIC, params)
    return [to_chat_view(row) for row in result.rows]


def update_chat(chat_id: int, name: str | None, description: str | None) -> Op[ChatRecord]:
    chat = yield from get_chat(chat_id)
    if chat is None:
        raise NotFound("chat not found")
    sets = ["updated_at = ?"]
    values: list[object] = [utc_now()]
    if name is not None:
        sets += ["name = ?", "name_key = ?"]
        values += [name, channel_name_key(chat.type, name)]
    if description is not None:
        sets.append("description = ?")
        values.append(description)
    sql = dynamic(
        f"UPDATE chats SET {', '.join(sets)} WHERE id = ? RETURNING {unqualified(CHAT_COLUMNS)}"
    )
    return to_chat_record(only((yield q(sql, (*values, chat_id)))))


def delete_chat(chat_id: int) -> Op[None]:
    yield q(_DELETE_CHAT, (chat_id,))


def load_chat_state(chat_id: int) -> Op[ChatState | None]:
    chat = yield from get_chat(chat_id)
    if chat is None:
        return None
    members: dict[int, Role] = {}
    joined: dict[int, str] = {}
    for row in (yield q(_CHAT_STATE_MEMBERS, (chat_id,))).rows:
        members[row["user_id"]] = Role(row["role"])
        joined[row["user_id"]] = as_time(row["joined_at"])
    return ChatState(chat=chat, members=members, joined=joined)


# -- chat members --------------------------------------------------------------------------
_MEMBER_SELECT = (
    "SELECT cm.user_id, cm.chat_id, cm.role, cm.joined_at, u.fullname"
    " FROM chat_members cm JOIN users u ON u.id = cm.user_id"
)
_PRESENCE_PEERS = Sql(
    "SELECT DISTINCT other.user_id FROM chat_members mine"
    " JOIN chats c ON c.id = mine.chat_id AND c.member_count <= ?"
    " JOIN chat_members other ON other.chat_id = mine.chat_id"
    " WHERE mine.user_id = ? AND other.user_id <> ?"
)
_MEMBERS = f"{_MEMBER_SELECT} WHERE cm.chat_id = ? ORDER BY cm.joined_at, "
_LIST_MEMBERS = Sql.split(sqlite=_MEMBERS + "cm.rowid", postgres=_MEMBERS + "cm.ord")
_ADD_MEMBERS = Sql.each(
    "INSERT INTO chat_members (chat_id, user_id, role, joined_at)"
    " SELECT ?, j.value, ?, ? FROM {ids} WHERE true ORDER BY j.key"
    " ON CONFLICT (chat_id, user_id) DO NOTHING RETURNING user_id"
)
_ADDED = f"{_MEMBER_SELECT} WHERE cm.chat_id = ? AND cm.user_id = ANY(?) ORDER BY "
_LIST_ADDED = Sql.split(sqlite=_ADDED + "cm.rowid", postgres=_ADDED + "cm.ord")
_MEMBER = Sql(f"{_MEMBER_SELECT} WHERE cm.chat_id = ? AND cm.user_id = ?")
_REMOVE_MEMBER = Sql("DELETE FROM chat_members WHERE chat_id = ? AND user_id = ?")
_SET_ROLE = Sql("UPDATE chat_members SET role = ? WHERE chat_id = ? AND user_id = ?")
_SET_OWNER = Sql("UPDATE chats SET owner_id = ?, updated_at = ? WHERE id = ?")
_DEMOTE_OWNER = Sql(
    "UPDATE chat_members SET role = ? WHERE chat_id = ? AND role = ? AND user_id <> ?"
)


def presence_peer_ids(user_id: int, max_chat_size: int) -> Op[list[int]]:
    result = yield q(_PRESENCE_PEERS, (max_chat_size, user_id, user_id))
    return [row["user_id"] for row in result.rows]


def list_chat_members(chat_id: int) -> Op[list[Member]]:
    result = yield q(_LIST_MEMBERS, (chat_id,))
    return [to_member(row) for row in result.rows]


def add_chat_members(chat_id: int, user_ids: Sequence[int], role: Role) -> Op[list[Member]]:
    if (yield from get_chat(chat_id)) is None:
        raise NotFound("chat not found")
    ids = list(dict.fromkeys(user_ids))
    if not ids:
        return []
    added = yield q(_ADD_MEMBERS, (chat_id, role.value, utc_now(), ids))
    if not added.rows:
        return []
    result = yield q(_LIST_ADDED, (chat_id, [row["user_id"] for row in added.rows]))
    return [to_member(row) for row in result.rows]


def _promote(chat_id: int, user_id: int) -> Op[None]:
    result = yield q(_SET_ROLE, (Role.OWNER.value, chat_id, user_id))
    if result.rowcount == 0:
        raise Invalid.field("new_owner_id", "must be a member of this chat")
    yield q(_SET_OWNER, (user_id, utc_now(), chat_id))


def remove_chat_member(chat_id: int, user_id: int, new_owner_id: int | None) -> Op[None]:
    yield q(_REMOVE_MEMBER, (chat_id, user_id))
    if new_owner_id is not None:
        yield from _promote(chat_id, new_owner_id)


def set_chat_owner(chat_id: int, user_id: int) -> Op[None]:
    # One owner per chat: the previous owner stays on as an admin.
    yield q(_DEMOTE_OWNER, (Role.ADMIN.value, chat_id, Role.OWNER.value, user_id))
    yield from _promote(chat_id, user_id)


def set_chat_member_role(chat_id: int, user_id: int, role: Role) -> Op[Member]:
    result = yield q(_SET_ROLE, (role.value, chat_id, user_id))
    if result.rowcount == 0:
        raise NotFound("not a member of this chat", code="member_not_found")
    row = first((yield q(_MEMBER, (chat_id, user_id))))
    if row is None:  # pragma: no cover - updated just above, in the same transaction
        raise NotFound("not a member of this chat", code="member_not_found")
    return to_member(row)
