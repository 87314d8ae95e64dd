"""Operations on users, refresh tokens, security versions and workspaces — both backends.

Each function returns an ``Op`` (``sql.py``): a generator that yields its statements and
returns the record, run by either backend inside one transaction. Operations never open,
commit or roll back anything, and never touch a connection.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

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
from fechatter.storage import admin as reset_links
from fechatter.storage import outbox as outbox_ops
from fechatter.storage.rows import (
    USER_COLUMNS,
    WORKSPACE_COLUMNS,
    as_time,
    to_user,
    to_workspace,
    to_workspace_member,
    unqualified,
)
from fechatter.storage.sql import Dialect, Op, Row, Sql, dynamic, first, only, q
from fechatter.text import name_key, normalize_email

# -- users ---------------------------------------------------------------------------------
_INSERT_USER = Sql(
    "INSERT INTO users (fullname, email, password_hash, status, created_at)"
    f" VALUES (?, ?, ?, ?, ?) RETURNING {unqualified(USER_COLUMNS)}"
)
_GET_USER = Sql(f"SELECT {USER_COLUMNS} FROM users u WHERE u.id = ?")
_USER_WITH_VERSION = Sql(f"SELECT {USER_COLUMNS}, u.security_version FROM users u WHERE u.id = ?")
_GET_USERS = Sql(f"SELECT {USER_COLUMNS} FROM users u WHERE u.id = ANY(?)")
_USER_BY_EMAIL = Sql(
    f"SELECT {USER_COLUMNS}, u.password_hash, u.security_version FROM users u WHERE u.email = ?"
)


def create_user(
    fullname: str, email: str, password_hash: str, workspace_name: str | None
) -> Op[tuple[User, Workspace | None]]:
    now = utc_now()
    params = (fullname, normalize_email(email), password_hash, UserStatus.ACTIVE.value, now)
    user = to_user(only((yield q(_INSERT_USER, params))))
    workspace = None
    if workspace_name is not None:
        workspace = yield from insert_workspace(workspace_name, None, user.id, now)
    return user, workspace


def get_user(user_id: int) -> Op[User | None]:
    row = first((yield q(_GET_USER, (user_id,))))
    return to_user(row) if row else None


def get_users(user_ids: Sequence[int]) -> Op[dict[int, User]]:
    # One array parameter whatever the number of ids (no bound-parameter limit).
    result = yield q(_GET_USERS, ([int(i) for i in user_ids],))
    return {row["id"]: to_user(row) for row in result.rows}


def get_credentials(email: str) -> Op[Credentials | None]:
    row = first((yield q(_USER_BY_EMAIL, (normalize_email(email),))))
    if row is None:
        return None
    return Credentials(to_user(row), row["password_hash"], row["security_version"])


def get_user_by_email(email: str) -> Op[User | None]:
    row = first((yield q(_USER_BY_EMAIL, (normalize_email(email),))))
    return to_user(row) if row else None


def update_user(
    user_id: int,
    fullname: str | None,
    avatar: str | None,
    clear_avatar: bool,
    password_hash: str | None,
    keep_family: str | None = None,
) -> Op[User]:
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
    if not sets:
        user = yield from get_user(user_id)
    else:
        sql = dynamic(
            f"UPDATE users SET {', '.join(sets)} WHERE id = ? RETURNING {unqualified(USER_COLUMNS)}"
        )
        row = first((yield q(sql, (*values, user_id))))
        user = to_user(row) if row else None
    if user is None:
        raise NotFound("user not found")
    if password_hash is not None:
        # In the same transaction: a new password and the end of every other session are
        # one change, never half of it; every reset link still live is spent with them.
        yield from raise_security_version(user_id, keep_family)
        yield from reset_links.revoke_resets(user_id, utc_now())
    return user


# -- refresh tokens ------------------------------------------------------------------------
_INSERT_TOKEN = Sql(
    "INSERT INTO refresh_tokens (token_hash, user_id, family_id, expires_at, created_at)"
    " VALUES (?, ?, ?, ?, ?)"
)
# FOR UPDATE (PostgreSQL): two concurrent rotations of one token are serialised; the second
# one sees used_at set and treats it as the reuse it is. SQLite's one writer does the same.
_TOKEN_FOR_ROTATION = Sql(
    "SELECT user_id, family_id, expires_at, used_at, revoked_at"
    " FROM refresh_tokens WHERE token_hash = ? FOR UPDATE"
)
# The insert happens only while the user's security version is still the one the session
# was started under: a sign-in that raced a password change or a logout everywhere gets
# no session.
_INSERT_TOKEN_AT_VERSION = Sql(
    "INSERT INTO refresh_tokens (token_hash, user_id, family_id, expires_at, created_at)"
    " SELECT ?, ?, ?, ?, ? WHERE EXISTS"
    " (SELECT 1 FROM users WHERE id = ? AND security_version = ?)"
)
_MARK_TOKEN_USED = Sql("UPDATE refresh_tokens SET used_at = ? WHERE token_hash = ?")
_REVOKE_FAMILY = Sql(
    "UPDATE refresh_tokens SET revoked_at = ? WHERE family_id = ? AND revoked_at IS NULL"
)
_TOKEN_FAMILY = Sql("SELECT family_id FROM refresh_tokens WHERE token_hash = ? AND user_id = ?")
_REVOKE_USER_TOKENS = Sql(
    "UPDATE refresh_tokens SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL"
)


def add_refresh_token(
    user_id: int,
    token_hash: str,
    family_id: str,
    expires_at: str,
    security_version: int | None = None,
) -> Op[bool]:
    if security_version is None:
        yield q(_INSERT_TOKEN, (token_hash, user_id, family_id, expires_at, utc_now()))
        return True
    result = yield q(
        _INSERT_TOKEN_AT_VERSION,
        (token_hash, user_id, family_id, expires_at, utc_now(), user_id, security_version),
    )
    return result.rowcount > 0


def rotate_refresh_token(
    token_hash: str, new_hash: str, new_expires_at: str, now: str
) -> Op[RefreshGrant | None]:
    row = first((yield q(_TOKEN_FOR_ROTATION, (token_hash,))))
    if row is None or row["revoked_at"] is not None:
        return None
    if row["used_at"] is not None:
        # A rotated token presented again: someone holds a copy. Revoke the whole family,
        # including the live successor, and commit that.
        yield q(_REVOKE_FAMILY, (now, row["family_id"]))
        return None
    if as_time(row["expires_at"]) <= now:
        return None
    owner = first((yield q(_USER_WITH_VERSION, (row["user_id"],))))
    if owner is None:
        return None
    user, state = to_user(owner), _security_state(owner)
    yield q(_MARK_TOKEN_USED, (now, token_hash))
    yield q(_INSERT_TOKEN, (new_hash, row["user_id"], row["family_id"], new_expires_at, now))
    return RefreshGrant(row["user_id"], row["family_id"], state.version, state.active, user)


def revoke_refresh_token(token_hash: str, user_id: int) -> Op[None]:
    row = first((yield q(_TOKEN_FAMILY, (token_hash, user_id))))
    if row is not None:
        yield q(_REVOKE_FAMILY, (utc_now(), row["family_id"]))


def revoke_user_refresh_tokens(user_id: int) -> Op[None]:
    yield q(_REVOKE_USER_TOKENS, (utc_now(), user_id))


# -- security versions ---------------------------------------------------------------------
_SECURITY_STATE = Sql("SELECT id, security_version, status FROM users WHERE id = ?")
_RAISE_VERSION = Sql(
    "UPDATE users SET security_version = security_version + 1 WHERE id = ?"
    " RETURNING id, security_version, status"
)
_LOG_CHANGE = Sql("INSERT INTO security_changes (user_id, created_at) VALUES (?, ?)")
# The log only has to outlive the followers' look-back (30 s) and a follower's outage: a day.
LOG_RETENTION = timedelta(days=1)
_PRUNE_CHANGES = Sql("DELETE FROM security_changes WHERE created_at < ?")
_REVOKE_OTHER_FAMILIES = Sql(
    "UPDATE refresh_tokens SET revoked_at = ?"
    " WHERE user_id = ? AND revoked_at IS NULL AND family_id IS DISTINCT FROM CAST(? AS TEXT)"
)
_SECURITY_CHANGES = Sql(
    "SELECT s.id AS change_id, u.id, u.security_version, u.status"
    " FROM security_changes s JOIN users u ON u.id = s.user_id"
    " WHERE s.id > ? OR s.created_at >= ? ORDER BY s.id"
)
_LAST_CHANGE = Sql("SELECT COALESCE(MAX(id), 0) AS last FROM security_changes")
_SET_STATUS = Sql("UPDATE users SET status = ? WHERE id = ?")


def _security_state(row: Row) -> SecurityState:
    return SecurityState(
        row["id"], row["security_version"], row["status"] == UserStatus.ACTIVE.value
    )


def security_state(user_id: int) -> Op[SecurityState | None]:
    row = first((yield q(_SECURITY_STATE, (user_id,))))
    return _security_state(row) if row else None


def raise_security_version(user_id: int, keep_family: str | None) -> Op[SecurityState]:
    now = utc_now()
    row = first((yield q(_RAISE_VERSION, (user_id,))))
    if row is None:
        raise NotFound("no such user", code="user_not_found")
    yield q(_LOG_CHANGE, (user_id, now))
    yield q(_PRUNE_CHANGES, (format_time(datetime.now(UTC) - LOG_RETENTION),))
    yield q(_REVOKE_OTHER_FAMILIES, (now, user_id, keep_family))
    return _security_state(row)


def security_changes(after: int, since: str) -> Op[list[SecurityChange]]:
    result = yield q(_SECURITY_CHANGES, (after, since))
    return [SecurityChange(row["change_id"], _security_state(row)) for row in result.rows]


def last_security_change() -> Op[int]:
    row = first((yield q(_LAST_CHANGE)))
    return int(row["last"]) if row else 0


def set_user_status(user_id: int, status: UserStatus) -> Op[SecurityState]:
    yield q(_SET_STATUS, (status.value, user_id))
    state = yield from raise_security_version(user_id, None)
    yield from reset_links.revoke_resets(user_id, utc_now())  # a link made before is void
    return state


# -- workspaces ----------------------------------------------------------------------------
_INSERT_WORKSPACE = Sql(
    "INSERT INTO workspaces (name, name_key, description, owner_id, created_at, updated_at)"
    f" VALUES (?, ?, ?, ?, ?, ?) RETURNING {unqualified(WORKSPACE_COLUMNS)}"
)
_INSERT_WORKSPACE_MEMBER = Sql(
    "INSERT INTO workspace_members (workspace_id, user_id, role, joined_at) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (workspace_id, user_id) DO NOTHING RETURNING joined_at"
)
_GET_WORKSPACE = Sql(f"SELECT {WORKSPACE_COLUMNS} FROM workspaces w WHERE w.id = ?")
_LIST_WORKSPACES = Sql(
    f"SELECT {WORKSPACE_COLUMNS} FROM workspaces w"
    " JOIN workspace_members wm ON wm.workspace_id = w.id"
    " WHERE wm.user_id = ? ORDER BY w.created_at, w.id"
)
_WORKSPACE_CHAT_IDS = Sql("SELECT id FROM chats WHERE workspace_id = ? ORDER BY id")
_DELETE_WORKSPACE = Sql("DELETE FROM workspaces WHERE id = ?")
# Never run on SQLite: it has no chat_leases (PostgreSQL only, 0008). First the lease rows
# FOR UPDATE in ascending chat id (LockRows above the Sort), the order in which a cross-chat
# round and every fenced writer take them; then the DELETE, which finds them locked already.
_LOCK_WORKSPACE_LEASES = Sql.split(
    sqlite="SELECT NULL",
    postgres="SELECT chat_id FROM chat_leases WHERE chat_id IN"
    " (SELECT id FROM chats WHERE workspace_id = ?) ORDER BY chat_id FOR UPDATE",
)
_DELETE_WORKSPACE_LEASES = Sql.split(
    sqlite="SELECT NULL",
    postgres="DELETE FROM chat_leases WHERE chat_id IN"
    " (SELECT id FROM chats WHERE workspace_id = ?)",
)
_WORKSPACE_ROLE = Sql("SELECT role FROM workspace_members WHERE workspace_id = ? AND user_id = ?")
_WORKSPACE_MEMBERS = (
    f"SELECT {USER_COLUMNS}, wm.role, wm.joined_at FROM workspace_members wm"
    " JOIN users u ON u.id = wm.user_id WHERE wm.workspace_id = ? ORDER BY wm.joined_at, "
)
# Insertion order breaks ties: SQLite's rowid, PostgreSQL's ord column.
_LIST_WORKSPACE_MEMBERS = Sql.split(
    sqlite=_WORKSPACE_MEMBERS + "wm.rowid", postgres=_WORKSPACE_MEMBERS + "wm.ord"
)
_WORKSPACE_MEMBER_IDS = Sql(
    "SELECT user_id FROM workspace_members WHERE workspace_id = ? AND user_id = ANY(?)"
)
_REMOVE_WORKSPACE_MEMBER = Sql(
    "DELETE FROM workspace_members WHERE workspace_id = ? AND user_id = ?"
)
_USER_CHAT_IDS = Sql(
    "SELECT c.id FROM chat_members cm JOIN chats c ON c.id = cm.chat_id"
    " WHERE cm.user_id = ? AND c.workspace_id = ? ORDER BY c.id"
)


def insert_workspace(name: str, description: str | None, owner_id: int, now: str) -> Op[Workspace]:
    """Insert a workspace and its owner's membership."""
    row = only(
        (yield q(_INSERT_WORKSPACE, (name, name_key(name), description, owner_id, now, now)))
    )
    workspace = to_workspace(row)
    yield q(_INSERT_WORKSPACE_MEMBER, (workspace.id, owner_id, Role.OWNER.value, now))
    return workspace


def get_workspace(workspace_id: int) -> Op[Workspace | None]:
    row = first((yield q(_GET_WORKSPACE, (workspace_id,))))
    return to_workspace(row) if row else None


def list_workspaces(user_id: int) -> Op[list[Workspace]]:
    result = yield q(_LIST_WORKSPACES, (user_id,))
    return [to_workspace(row) for row in result.rows]


def update_workspace(workspace_id: int, name: str | None, description: str | None) -> Op[Workspace]:
    sets = ["updated_at = ?"]
    values: list[object] = [utc_now()]
    if name is not None:
        sets += ["name = ?", "name_key = ?"]
        values += [name, name_key(name)]
    if description is not None:
        sets.append("description = ?")
        values.append(description)
    sql = dynamic(
        f"UPDATE workspaces SET {', '.join(sets)} WHERE id = ?"
        f" RETURNING {unqualified(WORKSPACE_COLUMNS)}"
    )
    row = first((yield q(sql, (*values, workspace_id))))
    if row is None:
        raise NotFound("workspace not found")
    return to_workspace(row)


def delete_workspace(
    workspace_id: int,
    dialect: Dialect,
    *,
    outbox: bool = False,
    before_delete: Callable[[], Op[None]] | None = None,
) -> Op[list[int]]:
    """Delete the workspace with its chats; returns the chat ids. ``outbox`` (PostgreSQL,
    cluster mode): each chat's ``chat.deleted`` goes into the outbox in this transaction.
    ``before_delete``: run right before the workspace row goes (its own event's row)."""
    result = yield q(_WORKSPACE_CHAT_IDS, (workspace_id,))
    if dialect == "postgres":
        # Lease rows before chat rows, the lock order of fenced writes (docs/cluster.md §2):
        # the cascade from chats would lock them after the chat rows, and a fenced write of
        # one of these chats (lease FOR SHARE, then the chat row) could deadlock with it.
        # Locked in chat id order first: a DELETE locks them in the order its scan meets
        # them (heap order), which a writer of several chats (ascending) could cross.
        yield q(_LOCK_WORKSPACE_LEASES, (workspace_id,))
        if outbox:
            yield from outbox_ops.append_workspace_deleted(workspace_id)
        yield q(_DELETE_WORKSPACE_LEASES, (workspace_id,))
    if before_delete is not None:
        yield from before_delete()
    # Chats, their members and messages, and the workspace's members go by ON DELETE CASCADE.
    yield q(_DELETE_WORKSPACE, (workspace_id,))
    return [row["id"] for row in result.rows]


def workspace_role(workspace_id: int, user_id: int) -> Op[Role | None]:
    row = first((yield q(_WORKSPACE_ROLE, (workspace_id, user_id))))
    return Role(row["role"]) if row else None


def list_workspace_members(workspace_id: int) -> Op[list[WorkspaceMember]]:
    result = yield q(_LIST_WORKSPACE_MEMBERS, (workspace_id,))
    return [to_workspace_member(row) for row in result.rows]


def add_workspace_member(workspace_id: int, user_id: int, role: Role) -> Op[WorkspaceMember]:
    """Add an ``Active`` user (``NotFound`` for no workspace or user, ``Conflict`` for a
    member already, ``Conflict(user_not_active)`` for a ``Pending`` or ``Suspended`` one:
    a pending user's memberships come only from the import, which is what lets a
    workspace's managers vouch for them — ``storage.activation``)."""
    if (yield from get_workspace(workspace_id)) is None:
        raise NotFound("workspace not found")
    user = yield from get_user(user_id)
    if user is None:
        raise NotFound("user not found")
    if user.status is not UserStatus.ACTIVE:
        raise Conflict("only an active user can join a workspace", code="user_not_active")
    row = first((yield q(_INSERT_WORKSPACE_MEMBER, (workspace_id, user_id, role.value, utc_now()))))
    if row is None:
        raise Conflict("user is already a member of this workspace", code="already_member")
    return WorkspaceMember(user=user, role=role, joined_at=as_time(row["joined_at"]))


def workspace_member_ids(workspace_id: int, user_ids: Sequence[int]) -> Op[set[int]]:
    result = yield q(_WORKSPACE_MEMBER_IDS, (workspace_id, [int(i) for i in user_ids]))
    return {row["user_id"] for row in result.rows}


def remove_workspace_member(workspace_id: int, user_id: int) -> Op[bool]:
    result = yield q(_REMOVE_WORKSPACE_MEMBER, (workspace_id, user_id))
    return result.rowcount > 0


def list_user_chat_ids(user_id: int, workspace_id: int) -> Op[list[int]]:
    result = yield q(_USER_CHAT_IDS, (user_id, workspace_id))
    return [row["id"] for row in result.rows]
