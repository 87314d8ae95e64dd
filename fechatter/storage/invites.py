"""Invitation operations (issue 14, SPEC §7) — both backends.

An invite is found by the SHA-256 of its token (``token_hash``; the token itself is never
stored). Accepting is one transaction: the membership insert (with its
``workspace.member_added`` event, ``workspace_writes.join``), then the conditional
``UPDATE … SET uses = uses + 1 WHERE id = ? AND uses < max_uses``; no row updated → the
invite is used up and ``NotFound`` rolls the membership back. Two concurrent accepts of a
single-use invite therefore cannot both commit: on SQLite the one writer serialises them, on
PostgreSQL the second UPDATE waits for the first's row lock and re-checks ``uses`` after it
commits (READ COMMITTED). Operations never open, commit or roll back anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fechatter.errors import NotFound
from fechatter.models import Role, User, Workspace
from fechatter.storage import accounts, workspace_writes
from fechatter.storage.rows import as_time
from fechatter.storage.sql import Op, Row, Sql, first, q
from fechatter.storage.workspace_writes import WorkspaceEvent

_COLUMNS = "i.id, i.workspace_id, i.email, i.role, i.uses, i.max_uses, i.expires_at, i.created_by"
_INSERT = Sql(
    "INSERT INTO workspace_invites (workspace_id, token_hash, email, role, max_uses,"
    " expires_at, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    " RETURNING id, workspace_id, email, role, uses, max_uses, expires_at, created_by"
)
_LIST = Sql(f"SELECT {_COLUMNS} FROM workspace_invites i WHERE i.workspace_id = ? ORDER BY i.id")
_BY_TOKEN = Sql(
    f"SELECT {_COLUMNS}, w.name AS workspace_name, u.fullname AS inviter_name"
    " FROM workspace_invites i JOIN workspaces w ON w.id = i.workspace_id"
    " JOIN users u ON u.id = i.created_by WHERE i.token_hash = ?"
)
_DELETE = Sql("DELETE FROM workspace_invites WHERE workspace_id = ? AND id = ?")
_USE = Sql("UPDATE workspace_invites SET uses = uses + 1 WHERE id = ? AND uses < max_uses")


@dataclass(frozen=True, slots=True)
class Invite:
    """An invitation as listed (never its token): ``email`` lower-cased or None, ``role``
    the role it grants, ``expires_at`` RFC 3339 UTC."""

    id: int
    workspace_id: int
    email: str | None
    role: Role
    uses: int
    max_uses: int
    expires_at: str
    created_by: int

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "email": self.email,
            "role": self.role.value,
            "uses": self.uses,
            "max_uses": self.max_uses,
            "expires_at": self.expires_at,
            "created_by": self.created_by,
        }

    def usable(self, now: str) -> bool:
        """Not used up and not expired at ``now`` (RFC 3339 UTC, the same format)."""
        return self.uses < self.max_uses and now < self.expires_at


@dataclass(frozen=True, slots=True)
class InviteView:
    """An invite found by its token, with what the public preview shows."""

    invite: Invite
    workspace_name: str
    inviter_name: str


@dataclass(frozen=True, slots=True)
class Accepted:
    """The outcome of an accept: the workspace, the caller's role in it, and whether this
    accept made them a member (False: they already were; nothing was used up)."""

    workspace: Workspace
    role: Role
    joined: bool


def _to_invite(row: Row) -> Invite:
    return Invite(
        id=int(row["id"]),
        workspace_id=int(row["workspace_id"]),
        email=row["email"],
        role=Role(row["role"]),
        uses=int(row["uses"]),
        max_uses=int(row["max_uses"]),
        expires_at=as_time(row["expires_at"]),
        created_by=int(row["created_by"]),
    )


def create(
    workspace_id: int,
    token_hash: str,
    email: str | None,
    role: Role,
    max_uses: int,
    expires_at: str,
    created_by: int,
    now: str,
) -> Op[Invite]:
    """Insert an invite (``email`` already normalised)."""
    result = yield q(
        _INSERT,
        (workspace_id, token_hash, email, role.value, max_uses, expires_at, created_by, now),
    )
    return _to_invite(result.rows[0])


def list_for(workspace_id: int) -> Op[list[Invite]]:
    """The workspace's invites, oldest first (used-up and expired ones included)."""
    result = yield q(_LIST, (workspace_id,))
    return [_to_invite(r) for r in result.rows]


def by_token(token_hash: str) -> Op[InviteView | None]:
    """The invite with this token hash, with its workspace's name and inviter's name."""
    row = first((yield q(_BY_TOKEN, (token_hash,))))
    if row is None:
        return None
    return InviteView(_to_invite(row), row["workspace_name"], row["inviter_name"])


def revoke(workspace_id: int, invite_id: int) -> Op[bool]:
    """Delete the invite; False if the workspace has no such invite."""
    result = yield q(_DELETE, (workspace_id, invite_id))
    return result.rowcount > 0


def _gone() -> NotFound:
    return NotFound("invite not found, used up or expired", code="invite_not_found")


def accept(
    token_hash: str, user: User, now: str, *, outbox: bool
) -> Op[tuple[Accepted, list[WorkspaceEvent]]]:
    """``user`` accepts the invite: see the module doc. ``NotFound(invite_not_found)`` for
    an unknown, used-up or expired invite, or one bound to another email; an existing member
    gets ``joined=False`` and uses nothing. Returns the events of the join."""
    view = yield from by_token(token_hash)
    if view is None:
        raise _gone()
    invite = view.invite
    if invite.email is not None and invite.email != user.email:
        raise _gone()
    current = yield from accounts.workspace_role(invite.workspace_id, user.id)
    if current is None and not invite.usable(now):
        raise _gone()
    member, new = yield from workspace_writes.join(
        invite.workspace_id, user.id, invite.role, outbox=outbox
    )
    workspace = yield from accounts.get_workspace(invite.workspace_id)
    if workspace is None:  # pragma: no cover - the invite's row cascades with it
        raise _gone()
    if member is None:
        return Accepted(workspace, current or invite.role, False), []
    if (yield q(_USE, (invite.id,))).rowcount == 0:
        raise _gone()  # used up by a concurrent accept: the join rolls back
    return Accepted(workspace, member.role, True), new


def signup(
    fullname: str, email: str, password_hash: str, token_hash: str, now: str, *, outbox: bool
) -> Op[tuple[User, list[WorkspaceEvent]]]:
    """Create the user and accept the invite in one transaction: a bad invite (see
    ``accept``) creates no account; ``Conflict(email_taken)`` as ``create_user``. Returns
    the user and the join's events."""
    user, _ = yield from accounts.create_user(fullname, email, password_hash, None)
    _, new = yield from accept(token_hash, user, now, outbox=outbox)
    return user, new
