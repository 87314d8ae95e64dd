"""SQLite statements for users, refresh tokens and workspaces.

Plain synchronous functions over a ``sqlite3.Connection``; ``sqlite.py`` runs each inside one
transaction on the right thread and translates driver errors. This module must never open,
commit or roll back anything itself.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

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
    utc_now,
)
from fechatter.storage.columns import USER_COLUMNS, WORKSPACE_COLUMNS
from fechatter.storage.sqlite_rows import (
    to_user,
    to_workspace,
    to_workspace_member,
)
from fechatter.text import name_key, normalize_email


def rowid(cursor: sqlite3.Cursor) -> int:
    """The id of the row an INSERT just created."""
    value = cursor.lastrowid
    if value is None:  # pragma: no cover - only after a statement that inserted nothing
        raise RuntimeError("INSERT produced no row id")
    return value


# -- users ---------------------------------------------------------------------------------
def create_user(
    conn: sqlite3.Connection,
    fullname: str,
    email: str,
    password_hash: str,
    workspace_name: str | None,
) -> tuple[User, Workspace | None]:
    now = utc_now()
    email = normalize_email(email)
    cur = conn.execute(
        "INSERT INTO users (fullname, email, password_hash, status, created_at)"
        " VALUES (?, ?, ?, ?, ?)",
        (fullname, email, password_hash, UserStatus.ACTIVE.value, now),
    )
    user = User(rowid(cur), fullname, email, None, UserStatus.ACTIVE, now)
    workspace = None
    if workspace_name is not None:
        workspace = insert_workspace(conn, workspace_name, None, user.id, now)
    return user, workspace


def get_user(conn: sqlite3.Connection, user_id: int) -> User | None:
    row = conn.execute(f"SELECT {USER_COLUMNS} FROM users u WHERE u.id = ?", (user_id,)).fetchone()
    return to_user(row) if row else None


def get_users(conn: sqlite3.Connection, user_ids: Sequence[int]) -> dict[int, User]:
    # One bound parameter whatever the number of ids (no SQLITE_MAX_VARIABLE_NUMBER limit).
    ids = "[" + ",".join(str(int(i)) for i in user_ids) + "]"
    rows = conn.execute(
        f"SELECT {USER_COLUMNS} FROM users u WHERE u.id IN (SELECT value FROM json_each(?))",
        (ids,),
    )
    return {row["id"]: to_user(row) for row in rows}


def get_credentials(conn: sqlite3.Connection, email: str) -> Credentials | None:
    row = conn.execute(
        f"SELECT {USER_COLUMNS}, u.password_hash FROM users u WHERE u.email = ?",
        (normalize_email(email),),
    ).fetchone()
    return Credentials(to_user(row), row["password_hash"]) if row else None


def get_user_by_email(conn: sqlite3.Connection, email: str) -> User | None:
    row = conn.execute(
        f"SELECT {USER_COLUMNS} FROM users u WHERE u.email = ?", (normalize_email(email),)
    ).fetchone()
    return to_user(row) if row else None


def update_user(
    conn: sqlite3.Connection,
    user_id: int,
    fullname: str | None,
    avatar: str | None,
    clear_avatar: bool,
    password_hash: str | None,
) -> User:
    sets: list[str] = []
    values: list[object] = []
    if fullname is not None:
        sets.append("fullname = ?")
        values.append(fullname)
    if clear_avatar:
        sets.append("avatar = NULL")
    elif avatar is not None:
        sets.append("avatar = ?")
        values.append(avatar)
    if password_hash is not None:
        sets.append("password_hash = ?")
        values.append(password_hash)
    if sets:
        conn.execute(f"UPDATE users SET {', '.join(sets)} WHERE id = ?", (*values, user_id))
    user = get_user(conn, user_id)
    if user is None:
        raise NotFound("user not found")
    return user


# -- refresh tokens ------------------------------------------------------------------------
def add_refresh_token(
    conn: sqlite3.Connection, user_id: int, token_hash: str, family_id: str, expires_at: str
) -> None:
    conn.execute(
        "INSERT INTO refresh_tokens (token_hash, user_id, family_id, expires_at, created_at)"
        " VALUES (?, ?, ?, ?, ?)",
        (token_hash, user_id, family_id, expires_at, utc_now()),
    )


def rotate_refresh_token(
    conn: sqlite3.Connection, token_hash: str, new_hash: str, new_expires_at: str, now: str
) -> RefreshGrant | None:
    row = conn.execute(
        "SELECT user_id, family_id, expires_at, used_at, revoked_at"
        " FROM refresh_tokens WHERE token_hash = ?",
        (token_hash,),
    ).fetchone()
    if row is None or row["revoked_at"] is not None:
        return None
    if row["used_at"] is not None:
        # A rotated token presented again: someone holds a copy. Revoke the whole family,
        # including the live successor, and commit that.
        revoke_family(conn, row["family_id"], now)
        return None
    if row["expires_at"] <= now:
        return None
    conn.execute("UPDATE refresh_tokens SET used_at = ? WHERE token_hash = ?", (now, token_hash))
    conn.execute(
        "INSERT INTO refresh_tokens (token_hash, user_id, family_id, expires_at, created_at)"
        " VALUES (?, ?, ?, ?, ?)",
        (new_hash, row["user_id"], row["family_id"], new_expires_at, now),
    )
    return RefreshGrant(user_id=row["user_id"], family_id=row["family_id"])


def revoke_family(conn: sqlite3.Connection, family_id: str, now: str) -> None:
    conn.execute(
        "UPDATE refresh_tokens SET revoked_at = ? WHERE family_id = ? AND revoked_at IS NULL",
        (now, family_id),
    )


def revoke_refresh_token(conn: sqlite3.Connection, token_hash: str, user_id: int) -> None:
    row = conn.execute(
        "SELECT family_id FROM refresh_tokens WHERE token_hash = ? AND user_id = ?",
        (token_hash, user_id),
    ).fetchone()
    if row is not None:
        revoke_family(conn, row["family_id"], utc_now())


def revoke_user_refresh_tokens(conn: sqlite3.Connection, user_id: int) -> None:
    conn.execute(
        "UPDATE refresh_tokens SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL",
        (utc_now(), user_id),
    )


def security_state(conn: sqlite3.Connection, user_id: int) -> SecurityState | None:
    row = conn.execute(
        "SELECT id, security_version, status FROM users WHERE id = ?", (user_id,)
    ).fetchone()
    return _security_state(row) if row else None


def _security_state(row: sqlite3.Row) -> SecurityState:
    return SecurityState(
        row["id"], row["security_version"], row["status"] == UserStatus.ACTIVE.value
    )


def raise_security_version(
    conn: sqlite3.Connection, user_id: int, keep_family: str | None
) -> SecurityState:
    now = utc_now()
    conn.execute(
        "UPDATE users SET security_version = security_version + 1 WHERE id = ?", (user_id,)
    )
    state = security_state(conn, user_id)
    if state is None:
        raise NotFound("no such user", code="user_not_found")
    conn.execute("INSERT INTO security_changes (user_id, created_at) VALUES (?, ?)", (user_id, now))
    conn.execute(
        "UPDATE refresh_tokens SET revoked_at = ?"
        " WHERE user_id = ? AND revoked_at IS NULL AND family_id IS NOT ?",
        (now, user_id, keep_family),
    )
    return state


def security_changes(conn: sqlite3.Connection, after: int, since: str) -> list[SecurityChange]:
    rows = conn.execute(
        "SELECT s.id AS change_id, u.id, u.security_version, u.status"
        " FROM security_changes s JOIN users u ON u.id = s.user_id"
        " WHERE s.id > ? OR s.created_at >= ? ORDER BY s.id",
        (after, since),
    ).fetchall()
    return [SecurityChange(row["change_id"], _security_state(row)) for row in rows]


def last_security_change(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT COALESCE(MAX(id), 0) FROM security_changes").fetchone()
    return int(row[0])


def set_user_status(conn: sqlite3.Connection, user_id: int, status: UserStatus) -> SecurityState:
    conn.execute("UPDATE users SET status = ? WHERE id = ?", (status.value, user_id))
    return raise_security_version(conn, user_id, None)


# -- workspaces ----------------------------------------------------------------------------
def insert_workspace(
    conn: sqlite3.Connection, name: str, description: str | None, owner_id: int, now: str
) -> Workspace:
    """Insert a workspace and its owner's membership."""
    cur = conn.execute(
        "INSERT INTO workspaces (name, name_key, description, owner_id, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (name, name_key(name), description, owner_id, now, now),
    )
    workspace = Workspace(rowid(cur), name, description, owner_id, now, now)
    conn.execute(
        "INSERT INTO workspace_members (workspace_id, user_id, role, joined_at)"
        " VALUES (?, ?, ?, ?)",
        (workspace.id, owner_id, Role.OWNER.value, now),
    )
    return workspace


def get_workspace(conn: sqlite3.Connection, workspace_id: int) -> Workspace | None:
    row = conn.execute(
        f"SELECT {WORKSPACE_COLUMNS} FROM workspaces w WHERE w.id = ?", (workspace_id,)
    ).fetchone()
    return to_workspace(row) if row else None


def list_workspaces(conn: sqlite3.Connection, user_id: int) -> list[Workspace]:
    rows = conn.execute(
        f"SELECT {WORKSPACE_COLUMNS} FROM workspaces w"
        " JOIN workspace_members wm ON wm.workspace_id = w.id"
        " WHERE wm.user_id = ? ORDER BY w.created_at, w.id",
        (user_id,),
    )
    return [to_workspace(row) for row in rows]


def update_workspace(
    conn: sqlite3.Connection, workspace_id: int, name: str | None, description: str | None
) -> Workspace:
    sets = ["updated_at = ?"]
    values: list[object] = [utc_now()]
    if name is not None:
        sets += ["name = ?", "name_key = ?"]
        values += [name, name_key(name)]
    if description is not None:
        sets.append("description = ?")
        values.append(description)
    conn.execute(f"UPDATE workspaces SET {', '.join(sets)} WHERE id = ?", (*values, workspace_id))
    workspace = get_workspace(conn, workspace_id)
    if workspace is None:
        raise NotFound("workspace not found")
    return workspace


def delete_workspace(conn: sqlite3.Connection, workspace_id: int) -> list[int]:
    chat_ids = [
        row[0]
        for row in conn.execute(
            "SELECT id FROM chats WHERE workspace_id = ? ORDER BY id", (workspace_id,)
        )
    ]
    # Chats, their members and messages, and the workspace's members go by ON DELETE CASCADE.
    conn.execute("DELETE FROM workspaces WHERE id = ?", (workspace_id,))
    return chat_ids


def workspace_role(conn: sqlite3.Connection, workspace_id: int, user_id: int) -> Role | None:
    row = conn.execute(
        "SELECT role FROM workspace_members WHERE workspace_id = ? AND user_id = ?",
        (workspace_id, user_id),
    ).fetchone()
    return Role(row[0]) if row else None


_WORKSPACE_MEMBER_SELECT = (
    f"SELECT {USER_COLUMNS}, wm.role, wm.joined_at FROM workspace_members wm"
    " JOIN users u ON u.id = wm.user_id"
)


def list_workspace_members(conn: sqlite3.Connection, workspace_id: int) -> list[WorkspaceMember]:
    rows = conn.execute(
        f"{_WORKSPACE_MEMBER_SELECT} WHERE wm.workspace_id = ? ORDER BY wm.joined_at, wm.rowid",
        (workspace_id,),
    )
    return [to_workspace_member(row) for row in rows]


def add_workspace_member(
    conn: sqlite3.Connection, workspace_id: int, user_id: int, role: Role
) -> WorkspaceMember:
    if get_workspace(conn, workspace_id) is None:
        raise NotFound("workspace not found")
    user = get_user(conn, user_id)
    if user is None:
        raise NotFound("user not found")
    if workspace_role(conn, workspace_id, user_id) is not None:
        raise Conflict("user is already a member of this workspace", code="already_member")
    now = utc_now()
    conn.execute(
        "INSERT INTO workspace_members (workspace_id, user_id, role, joined_at)"
        " VALUES (?, ?, ?, ?)",
        (workspace_id, user_id, role.value, now),
    )
    return WorkspaceMember(user=user, role=role, joined_at=now)


def workspace_member_ids(
    conn: sqlite3.Connection, workspace_id: int, user_ids: Sequence[int]
) -> set[int]:
    found: set[int] = set()
    ids = list(dict.fromkeys(user_ids))
    for start in range(0, len(ids), 500):  # stay well under SQLite's bound-parameter limit
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            "SELECT user_id FROM workspace_members"
            f" WHERE workspace_id = ? AND user_id IN ({marks})",
            (workspace_id, *chunk),
        )
        found.update(row[0] for row in rows)
    return found


def remove_workspace_member(conn: sqlite3.Connection, workspace_id: int, user_id: int) -> bool:
    cur = conn.execute(
        "DELETE FROM workspace_members WHERE workspace_id = ? AND user_id = ?",
        (workspace_id, user_id),
    )
    return cur.rowcount > 0


def list_user_chat_ids(conn: sqlite3.Connection, user_id: int, workspace_id: int) -> list[int]:
    rows = conn.execute(
        "SELECT c.id FROM chat_members cm JOIN chats c ON c.id = cm.chat_id"
        " WHERE cm.user_id = ? AND c.workspace_id = ? ORDER BY c.id",
        (user_id, workspace_id),
    )
    return [row[0] for row in rows]
