"""PostgreSQL statements for users, refresh tokens and workspaces.

Async functions over a pooled psycopg ``Connection`` (``postgres_pool.py``); ``postgres.py``
awaits each inside one transaction and translates driver errors. This module must never open,
commit or roll back anything itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fechatter.errors import Conflict, NotFound
from fechatter.models import (
    Credentials,
    RefreshGrant,
    Role,
    SecurityChange,
    SecurityState,
    User,
    UserStatus,
    Workspace,
    WorkspaceMember,
    format_time,
    utc_now,
)
from fechatter.storage.columns import USER_COLUMNS, WORKSPACE_COLUMNS
from fechatter.storage.postgres_pool import Connection
from fechatter.storage.postgres_rows import (
    Row,
    to_user,
    to_workspace,
    to_workspace_member,
)
from fechatter.text import name_key, normalize_email

Params = Sequence[Any] | dict[str, Any]


async def one(conn: Connection, sql: str, params: Params = ()) -> Row | None:
    """The first row of a statement, or None."""
    cur = await conn.execute(sql, params)
    return await cur.fetchone()


async def all_rows(conn: Connection, sql: str, params: Params = ()) -> list[Row]:
    """Every row of a statement."""
    cur = await conn.execute(sql, params)
    return await cur.fetchall()


async def returned(conn: Connection, sql: str, params: Sequence[Any]) -> Row:
    """The row an ``INSERT … RETURNING`` produced."""
    row = await one(conn, sql, params)
    if row is None:  # pragma: no cover - only if the statement inserted nothing
        raise RuntimeError("INSERT … RETURNING produced no row")
    return row


# -- users ---------------------------------------------------------------------------------
async def create_user(
    conn: Connection, fullname: str, email: str, password_hash: str, workspace_name: str | None
) -> tuple[User, Workspace | None]:
    now = utc_now()
    email = normalize_email(email)
    row = await returned(
        conn,
        "INSERT INTO users (fullname, email, password_hash, status, created_at)"
        f" VALUES (%s, %s, %s, %s, %s) RETURNING {USER_COLUMNS.replace('u.', '')}",
        (fullname, email, password_hash, UserStatus.ACTIVE.value, now),
    )
    user = to_user(row)
    workspace = None
    if workspace_name is not None:
        workspace = await insert_workspace(conn, workspace_name, None, user.id, now)
    return user, workspace


async def get_user(conn: Connection, user_id: int) -> User | None:
    row = await one(conn, f"SELECT {USER_COLUMNS} FROM users u WHERE u.id = %s", (user_id,))
    return to_user(row) if row else None


async def get_users(conn: Connection, user_ids: Sequence[int]) -> dict[int, User]:
    rows = await all_rows(
        conn, f"SELECT {USER_COLUMNS} FROM users u WHERE u.id = ANY(%s)", (list(user_ids),)
    )
    return {row["id"]: to_user(row) for row in rows}


async def get_credentials(conn: Connection, email: str) -> Credentials | None:
    row = await one(
        conn,
        f"SELECT {USER_COLUMNS}, u.password_hash FROM users u WHERE u.email = %s",
        (normalize_email(email),),
    )
    return Credentials(to_user(row), row["password_hash"]) if row else None


async def get_user_by_email(conn: Connection, email: str) -> User | None:
    row = await one(
        conn, f"SELECT {USER_COLUMNS} FROM users u WHERE u.email = %s", (normalize_email(email),)
    )
    return to_user(row) if row else None


async def update_user(
    conn: Connection,
    user_id: int,
    fullname: str | None,
    avatar: str | None,
    clear_avatar: bool,
    password_hash: str | None,
) -> User:
    sets: list[str] = []
    values: list[object] = []
    if fullname is not None:
        sets.append("fullname = %s")
        values.append(fullname)
    if clear_avatar:
        sets.append("avatar = NULL")
    elif avatar is not None:
        sets.append("avatar = %s")
        values.append(avatar)
    if password_hash is not None:
        sets.append("password_hash = %s")
        values.append(password_hash)
    if not sets:
        user = await get_user(conn, user_id)
    else:
        row = await one(
            conn,
            f"UPDATE users u SET {', '.join(sets)} WHERE u.id = %s RETURNING {USER_COLUMNS}",
            (*values, user_id),
        )
        user = to_user(row) if row else None
    if user is None:
        raise NotFound("user not found")
    return user


# -- refresh tokens ------------------------------------------------------------------------
async def add_refresh_token(
    conn: Connection, user_id: int, token_hash: str, family_id: str, expires_at: str
) -> None:
    await conn.execute(
        "INSERT INTO refresh_tokens (token_hash, user_id, family_id, expires_at, created_at)"
        " VALUES (%s, %s, %s, %s, %s)",
        (token_hash, user_id, family_id, expires_at, utc_now()),
    )


async def rotate_refresh_token(
    conn: Connection, token_hash: str, new_hash: str, new_expires_at: str, now: str
) -> RefreshGrant | None:
    # FOR UPDATE: two concurrent rotations of one token are serialised; the second one sees
    # used_at set and treats it as the reuse it is.
    row = await one(
        conn,
        "SELECT user_id, family_id, expires_at, used_at, revoked_at"
        " FROM refresh_tokens WHERE token_hash = %s FOR UPDATE",
        (token_hash,),
    )
    if row is None or row["revoked_at"] is not None:
        return None
    if row["used_at"] is not None:
        # A rotated token presented again: someone holds a copy. Revoke the whole family,
        # including the live successor, and commit that.
        await revoke_family(conn, row["family_id"], now)
        return None
    if format_time(row["expires_at"]) <= now:
        return None
    await conn.execute(
        "UPDATE refresh_tokens SET used_at = %s WHERE token_hash = %s", (now, token_hash)
    )
    await conn.execute(
        "INSERT INTO refresh_tokens (token_hash, user_id, family_id, expires_at, created_at)"
        " VALUES (%s, %s, %s, %s, %s)",
        (new_hash, row["user_id"], row["family_id"], new_expires_at, now),
    )
    return RefreshGrant(user_id=row["user_id"], family_id=row["family_id"])


async def revoke_family(conn: Connection, family_id: str, now: str) -> None:
    await conn.execute(
        "UPDATE refresh_tokens SET revoked_at = %s WHERE family_id = %s AND revoked_at IS NULL",
        (now, family_id),
    )


async def revoke_refresh_token(conn: Connection, token_hash: str, user_id: int) -> None:
    row = await one(
        conn,
        "SELECT family_id FROM refresh_tokens WHERE token_hash = %s AND user_id = %s",
        (token_hash, user_id),
    )
    if row is not None:
        await revoke_family(conn, row["family_id"], utc_now())


async def revoke_user_refresh_tokens(conn: Connection, user_id: int) -> None:
    await conn.execute(
        "UPDATE refresh_tokens SET revoked_at = %s WHERE user_id = %s AND revoked_at IS NULL",
        (utc_now(), user_id),
    )


async def security_state(conn: Connection, user_id: int) -> SecurityState | None:
    row = await one(
        conn, "SELECT id, security_version, status FROM users WHERE id = %s", (user_id,)
    )
    return _security_state(row) if row else None


def _security_state(row: Row) -> SecurityState:
    return SecurityState(
        row["id"], row["security_version"], row["status"] == UserStatus.ACTIVE.value
    )


async def raise_security_version(
    conn: Connection, user_id: int, keep_family: str | None
) -> SecurityState:
    now = utc_now()
    row = await one(
        conn,
        "UPDATE users SET security_version = security_version + 1 WHERE id = %s"
        " RETURNING id, security_version, status",
        (user_id,),
    )
    if row is None:
        raise NotFound("no such user", code="user_not_found")
    await conn.execute(
        "INSERT INTO security_changes (user_id, created_at) VALUES (%s, %s)", (user_id, now)
    )
    await conn.execute(
        "UPDATE refresh_tokens SET revoked_at = %s"
        " WHERE user_id = %s AND revoked_at IS NULL AND family_id IS DISTINCT FROM %s::text",
        (now, user_id, keep_family),
    )
    return _security_state(row)


async def security_changes(conn: Connection, after: int, since: str) -> list[SecurityChange]:
    rows = await all_rows(
        conn,
        "SELECT s.id AS change_id, u.id, u.security_version, u.status"
        " FROM security_changes s JOIN users u ON u.id = s.user_id"
        " WHERE s.id > %s OR s.created_at >= %s ORDER BY s.id",
        (after, since),
    )
    return [SecurityChange(row["change_id"], _security_state(row)) for row in rows]


async def last_security_change(conn: Connection) -> int:
    row = await one(conn, "SELECT COALESCE(MAX(id), 0) AS last FROM security_changes", ())
    return int(row["last"]) if row else 0


async def set_user_status(conn: Connection, user_id: int, status: UserStatus) -> SecurityState:
    await conn.execute("UPDATE users SET status = %s WHERE id = %s", (status.value, user_id))
    return await raise_security_version(conn, user_id, None)


# -- workspaces ----------------------------------------------------------------------------
async def insert_workspace(
    conn: Connection, name: str, description: str | None, owner_id: int, now: str
) -> Workspace:
    """Insert a workspace and its owner's membership (one round trip)."""
    row = await returned(
        conn,
        "WITH w AS (INSERT INTO workspaces"
        " (name, name_key, description, owner_id, created_at, updated_at)"
        " VALUES (%s, %s, %s, %s, %s, %s)"
        f" RETURNING {WORKSPACE_COLUMNS.replace('w.', '')}),"
        " wm AS (INSERT INTO workspace_members (workspace_id, user_id, role, joined_at)"
        " SELECT id, owner_id, %s, created_at FROM w)"
        " SELECT * FROM w",
        (name, name_key(name), description, owner_id, now, now, Role.OWNER.value),
    )
    return to_workspace(row)


async def get_workspace(conn: Connection, workspace_id: int) -> Workspace | None:
    row = await one(
        conn, f"SELECT {WORKSPACE_COLUMNS} FROM workspaces w WHERE w.id = %s", (workspace_id,)
    )
    return to_workspace(row) if row else None


async def list_workspaces(conn: Connection, user_id: int) -> list[Workspace]:
    rows = await all_rows(
        conn,
        f"SELECT {WORKSPACE_COLUMNS} FROM workspaces w"
        " JOIN workspace_members wm ON wm.workspace_id = w.id"
        " WHERE wm.user_id = %s ORDER BY w.created_at, w.id",
        (user_id,),
    )
    return [to_workspace(row) for row in rows]


async def update_workspace(
    conn: Connection, workspace_id: int, name: str | None, description: str | None
) -> Workspace:
    sets = ["updated_at = %s"]
    values: list[object] = [utc_now()]
    if name is not None:
        sets += ["name = %s", "name_key = %s"]
        values += [name, name_key(name)]
    if description is not None:
        sets.append("description = %s")
        values.append(description)
    row = await one(
        conn,
        f"UPDATE workspaces w SET {', '.join(sets)} WHERE w.id = %s RETURNING {WORKSPACE_COLUMNS}",
        (*values, workspace_id),
    )
    if row is None:
        raise NotFound("workspace not found")
    return to_workspace(row)


async def delete_workspace(conn: Connection, workspace_id: int) -> list[int]:
    chat_ids = [
        row["id"]
        for row in await all_rows(
            conn, "SELECT id FROM chats WHERE workspace_id = %s ORDER BY id", (workspace_id,)
        )
    ]
    # Chats, their members and messages, and the workspace's members go by ON DELETE CASCADE.
    await conn.execute("DELETE FROM workspaces WHERE id = %s", (workspace_id,))
    return chat_ids


async def workspace_role(conn: Connection, workspace_id: int, user_id: int) -> Role | None:
    row = await one(
        conn,
        "SELECT role FROM workspace_members WHERE workspace_id = %s AND user_id = %s",
        (workspace_id, user_id),
    )
    return Role(row["role"]) if row else None


_WORKSPACE_MEMBER_SELECT = (
    f"SELECT {USER_COLUMNS}, wm.role, wm.joined_at FROM workspace_members wm"
    " JOIN users u ON u.id = wm.user_id"
)


async def list_workspace_members(conn: Connection, workspace_id: int) -> list[WorkspaceMember]:
    rows = await all_rows(
        conn,
        f"{_WORKSPACE_MEMBER_SELECT} WHERE wm.workspace_id = %s ORDER BY wm.joined_at, wm.ord",
        (workspace_id,),
    )
    return [to_workspace_member(row) for row in rows]


async def add_workspace_member(
    conn: Connection, workspace_id: int, user_id: int, role: Role
) -> WorkspaceMember:
    if await get_workspace(conn, workspace_id) is None:
        raise NotFound("workspace not found")
    user = await get_user(conn, user_id)
    if user is None:
        raise NotFound("user not found")
    row = await one(
        conn,
        "INSERT INTO workspace_members (workspace_id, user_id, role, joined_at)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT (workspace_id, user_id) DO NOTHING"
        " RETURNING joined_at",
        (workspace_id, user_id, role.value, utc_now()),
    )
    if row is None:
        raise Conflict("user is already a member of this workspace", code="already_member")
    return WorkspaceMember(user=user, role=role, joined_at=format_time(row["joined_at"]))


async def workspace_member_ids(
    conn: Connection, workspace_id: int, user_ids: Sequence[int]
) -> set[int]:
    rows = await all_rows(
        conn,
        "SELECT user_id FROM workspace_members WHERE workspace_id = %s AND user_id = ANY(%s)",
        (workspace_id, list(user_ids)),
    )
    return {row["user_id"] for row in rows}


async def remove_workspace_member(conn: Connection, workspace_id: int, user_id: int) -> bool:
    cur = await conn.execute(
        "DELETE FROM workspace_members WHERE workspace_id = %s AND user_id = %s",
        (workspace_id, user_id),
    )
    return cur.rowcount > 0


async def list_user_chat_ids(conn: Connection, user_id: int, workspace_id: int) -> list[int]:
    rows = await all_rows(
        conn,
        "SELECT c.id FROM chat_members cm JOIN chats c ON c.id = cm.chat_id"
        " WHERE cm.user_id = %s AND c.workspace_id = %s ORDER BY c.id",
        (user_id, workspace_id),
    )
    return [row["id"] for row in rows]
