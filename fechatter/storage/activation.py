"""Activating imported users (issue 17, docs/archive.md "Users") — both backends.

An import creates the users it does not find by email with status ``Pending`` and no usable
password. Two things activate such a user, each in one transaction with the password it sets
and a raised security version (logged, so every process re-reads the user as active):

- using a password-reset link (``activate_pending`` composed into the link's transaction,
  ``fechatter.domain.password_resets``; also the operator's ``reset-password
  --password-stdin``);
- signing up through a live invite bound to the user's email, made by an ``Active`` owner or
  admin of a workspace the user is in (``signup_or_claim``): the person claims the account —
  fullname and password from the sign-up — and joins the invite's workspace, spending one
  use of it.

A user an admin suspended is never ``Pending``, so neither path reactivates it: a reset link
only sets its password; an invite sign-up with its email stays 409 ``email_taken``, as does
any sign-up with a ``Pending`` email without such an invite (no account takeover).
Operations never open, commit or roll back anything.
"""

from __future__ import annotations

from fechatter.errors import NotFound
from fechatter.models import User, UserStatus
from fechatter.storage import accounts, workspace_writes
from fechatter.storage import admin as reset_links
from fechatter.storage import invites as invite_ops
from fechatter.storage.rows import USER_COLUMNS, to_user, unqualified
from fechatter.storage.sql import Op, Sql, first, q
from fechatter.storage.workspace_writes import WorkspaceEvent
from fechatter.text import normalize_email

_ACTIVATE = Sql("UPDATE users SET status = ? WHERE id = ? AND status = ?")
_STATUS_BY_EMAIL = Sql("SELECT id, status FROM users WHERE email = ?")
# Conditional on the status still being Pending: two concurrent claims, one wins (SQLite's
# one writer; PostgreSQL re-checks the row after the first commits, READ COMMITTED).
_CLAIM = Sql(
    "UPDATE users SET fullname = ?, password_hash = ?, status = ? WHERE id = ? AND status = ?"
    f" RETURNING {unqualified(USER_COLUMNS)}"
)
# The invite's creator vouches for the person: they must be Active and manage (owner/admin,
# now) a workspace the pending user is in — else anyone could make a workspace, bind an
# invite to an imported email and claim that account's history. A pending user's
# memberships only ever come from the import: nobody can add a user who is not Active to a
# workspace (``accounts.add_workspace_member``), so these are the imported workspaces.
_VOUCHED = Sql(
    "SELECT 1 AS ok FROM workspace_members a"
    " JOIN users c ON c.id = a.user_id AND c.status = ?"
    " JOIN workspace_members p ON p.workspace_id = a.workspace_id"
    " WHERE a.user_id = ? AND a.role IN ('owner', 'admin') AND p.user_id = ? LIMIT 1"
)
_USE_INVITE = Sql("UPDATE workspace_invites SET uses = uses + 1 WHERE id = ? AND uses < max_uses")

Claimed = tuple[User, int]
"""A user able to start a session, and the security version it starts under."""


def activate_pending(user_id: int) -> Op[bool]:
    """Make a ``Pending`` user ``Active`` (anything else is left alone); whether it was
    pending. Compose it before the password change that raises the security version."""
    params = (UserStatus.ACTIVE.value, user_id, UserStatus.PENDING.value)
    return (yield q(_ACTIVATE, params)).rowcount > 0


def _gone() -> NotFound:
    return NotFound("invite not found, used up or expired", code="invite_not_found")


def claim(
    fullname: str, email: str, password_hash: str, token_hash: str, now: str, *, outbox: bool
) -> Op[tuple[Claimed | None, list[WorkspaceEvent]]]:
    """Claim the ``Pending`` account of ``email`` through the invite of ``token_hash`` if
    that invite is bound to ``email`` and its creator is ``Active`` and manages (owner or
    admin) a workspace the pending user is a member of (they vouch for the person): fullname
    and password set, status ``Active``, security version raised, every live reset link of
    the user spent, the invite's workspace joined (an existing
    member keeps their role) and one use spent. ``(None, [])`` when this is not a claim (no
    such invite, not bound to this email, no such user, not ``Pending``, a creator who does
    not vouch). ``NotFound(invite_not_found)`` when it is one but the invite is used up or
    expired (the caller's transaction rolls back). Returns the user with its new version,
    and the join's events."""
    email = normalize_email(email)
    view = yield from invite_ops.by_token(token_hash)
    if view is None or view.invite.email is None or view.invite.email != email:
        return None, []
    row = first((yield q(_STATUS_BY_EMAIL, (email,))))
    if row is None or row["status"] != UserStatus.PENDING.value:
        return None, []
    invite = view.invite
    vouch = (UserStatus.ACTIVE.value, invite.created_by, int(row["id"]))
    if first((yield q(_VOUCHED, vouch))) is None:
        return None, []
    if not invite.usable(now):
        raise _gone()
    params = (
        fullname,
        password_hash,
        UserStatus.ACTIVE.value,
        int(row["id"]),
        UserStatus.PENDING.value,
    )
    updated = first((yield q(_CLAIM, params)))
    if updated is None:  # pragma: no cover - a concurrent claim won since the read above
        return None, []
    user = to_user(updated)
    state = yield from accounts.raise_security_version(user.id, None)
    # A password change: every live reset link of the user dies with it (as in
    # ``accounts.update_user``), so a link issued before the claim cannot take it back.
    yield from reset_links.revoke_resets(user.id, now)
    _, new = yield from workspace_writes.join(
        invite.workspace_id, user.id, invite.role, outbox=outbox
    )
    if (yield q(_USE_INVITE, (invite.id,))).rowcount == 0:
        raise _gone()  # used up by a concurrent use: everything rolls back
    return (user, state.version), new


def signup_or_claim(
    fullname: str, email: str, password_hash: str, token_hash: str, now: str, *, outbox: bool
) -> Op[tuple[Claimed, list[WorkspaceEvent]]]:
    """An invite's sign-up: ``claim`` if it is one, else a new account that accepts the
    invite (``storage.invites.signup``: ``Conflict(email_taken)`` for an existing email,
    ``NotFound(invite_not_found)`` for a bad invite). A new account starts at version 0."""
    claimed, new = yield from claim(fullname, email, password_hash, token_hash, now, outbox=outbox)
    if claimed is not None:
        return claimed, new
    user, new = yield from invite_ops.signup(
        fullname, email, password_hash, token_hash, now, outbox=outbox
    )
    return (user, 0), new
