"""Admin use cases (issue 17): what ``fechatter admin …`` does, on the configured database.

Each action is one write transaction that also appends its ``admin_audit`` row (the action
and its record commit together or not at all), built from the same storage operations the
API uses. Users are named by email. What reaches a running server:

- suspend / reactivate / password changes raise the user's security version and log it in
  ``security_changes``: every server process follows that log, so the user's streams close
  and their tokens stop working within ``security_poll_interval`` (``fechatter.security``);
- a role change commits like the API's; with ``outbox`` (a cluster's PostgreSQL, where the
  config names NATS) its ``workspace.member_updated`` goes through the outbox to every node;
  otherwise no running process is told, so members see the new role on their next read
  (docs/api.md "Admin command line").

This module never prints: the command line (``fechatter.cli_admin``) renders results.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fechatter.domain import password_resets
from fechatter.errors import Conflict, Invalid, NotFound
from fechatter.models import Role, User, UserStatus, WorkspaceMember, format_time
from fechatter.storage import Storage, accounts, activation
from fechatter.storage import admin as ops
from fechatter.storage import workspace_writes as writes
from fechatter.storage.admin import AuditEntry, WorkspaceSummary
from fechatter.storage.sql import Op

Clock = Callable[[], datetime]
Hasher = Callable[[str], Awaitable[str]]


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class ResetLink:
    """A password-reset link (shown once) and when it stops working (RFC 3339 UTC)."""

    url: str
    expires_at: str


def _user_target(user: User) -> str:
    return f"user:{user.email}"


def _no_user(email: str) -> NotFound:
    return NotFound(f"no user with email {email!r}", code="user_not_found")


class Admin:
    """The admin actions, each audited as ``actor``."""

    def __init__(
        self,
        storage: Storage,
        hash_password: Hasher,
        *,
        actor: str,
        base_url: str,
        outbox: bool,
        clock: Clock = _utc_now,
    ) -> None:
        """``hash_password``: the server's Argon2id hasher; ``actor``: ``cli:<os user>``;
        ``base_url``: where reset links point (``public_url``); ``outbox``: workspace
        events go to the cluster's outbox."""
        self._storage = storage
        self._hash = hash_password
        self.actor = actor
        self._base_url = base_url
        self._outbox = outbox
        self._clock = clock

    def _now(self) -> str:
        return format_time(self._clock())

    def _audit(self, action: str, target: str, details: dict[str, Any]) -> Op[int]:
        return ops.audit(self.actor, action, target, details, self._now())

    async def _find(self, email: str) -> User:
        user = await writes.read(self._storage, accounts.get_user_by_email(email))
        if user is None:
            raise _no_user(email)
        return user

    async def create_user(
        self, fullname: str, email: str, password: str | None, *, expires_in: int
    ) -> tuple[User, ResetLink | None]:
        """A new active user (no workspace). Without ``password`` the account gets a random
        one nobody knows and a reset link (``expires_in`` seconds) to set theirs.
        ``Conflict(email_taken)``; fields already validated by the caller."""
        random = password is None
        password_hash = await self._hash(password or password_resets.new_token()[0])
        link: ResetLink | None = None

        def op() -> Op[User]:
            nonlocal link
            user, _ = yield from accounts.create_user(fullname, email, password_hash, None)
            if random:
                link = yield from self._new_link(user, expires_in)
            details = {"user_id": user.id, "fullname": fullname, "reset_link": random}
            yield from self._audit("create-user", _user_target(user), details)
            return user

        user = await writes.commit(self._storage, op())
        return user, link

    def _new_link(self, user: User, expires_in: int) -> Op[ResetLink]:
        token, hashed = password_resets.new_token()
        now = self._clock()
        expires_at = format_time(now + timedelta(seconds=expires_in))
        yield from ops.revoke_resets(user.id, format_time(now))  # only the newest link works
        yield from ops.create_reset(user.id, hashed, expires_at, format_time(now))
        return ResetLink(password_resets.link(self._base_url, token), expires_at)

    async def reset_link(self, email: str, *, expires_in: int) -> ResetLink:
        """A one-time link for the user to set a new password (sessions end when it is
        used); every older unused link of the user stops working. ``NotFound(user_not_found)``."""
        user = await self._find(email)

        def op() -> Op[ResetLink]:
            made = yield from self._new_link(user, expires_in)
            details = {"user_id": user.id, "expires_at": made.expires_at}
            yield from self._audit("reset-password-link", _user_target(user), details)
            return made

        return await writes.commit(self._storage, op())

    async def set_password(self, email: str, password: str) -> User:
        """Set the password now: every session revoked, every access token void (streams
        close); an imported user never activated (``Pending``) becomes active, a suspended
        one stays suspended. ``NotFound(user_not_found)``."""
        user = await self._find(email)
        password_hash = await self._hash(password)

        def op() -> Op[User]:
            activated = yield from activation.activate_pending(user.id)
            updated = yield from accounts.update_user(user.id, None, None, False, password_hash)
            details = {"user_id": user.id, **({"activated": True} if activated else {})}
            yield from self._audit("set-password", _user_target(user), details)
            return updated

        return await writes.commit(self._storage, op())

    async def set_status(self, email: str, status: UserStatus) -> bool:
        """Suspend or reactivate; False (nothing written, nothing audited) if the user
        already has that status. A change raises the security version: every session and
        token ends, streams close within the poll interval. ``NotFound(user_not_found)``;
        ``Conflict(user_pending)`` to reactivate an imported user never activated (it has
        no password: a reset link activates it). Suspending a ``Pending`` user makes it
        ``Suspended``: then neither a link nor an invite activates it."""
        user = await self._find(email)
        if user.status is status:
            return False
        if status is UserStatus.ACTIVE and user.status is UserStatus.PENDING:
            # No password yet: active, it still could not sign in. The link sets one and
            # activates it in one step.
            raise Conflict(
                f"{user.email} was imported and has no password yet; activate it with"
                f" `fechatter admin reset-password {user.email}` (or an invite bound to"
                " that email)",
                code="user_pending",
            )
        action = "suspend" if status is UserStatus.SUSPENDED else "reactivate"

        def op() -> Op[bool]:
            yield from accounts.set_user_status(user.id, status)
            yield from self._audit(action, _user_target(user), {"user_id": user.id})
            return True

        return await writes.commit(self._storage, op())

    async def workspaces(self) -> list[WorkspaceSummary]:
        """Every workspace, by id."""
        return await writes.read(self._storage, ops.all_workspaces())

    async def members(self, workspace_id: int) -> list[WorkspaceMember]:
        """A workspace's members, oldest first; ``NotFound(workspace_not_found)``."""
        if await writes.read(self._storage, accounts.get_workspace(workspace_id)) is None:
            raise NotFound(f"no workspace with id {workspace_id}", code="workspace_not_found")
        return await writes.read(self._storage, accounts.list_workspace_members(workspace_id))

    async def set_role(self, workspace_id: int, email: str, role: Role) -> bool:
        """Make a member an admin or a member; False if it already was. ``Invalid`` on
        ``role`` for owner (ownership does not move here), ``NotFound`` (user, workspace,
        member), ``Conflict(owner_role)`` for the owner."""
        if role is Role.OWNER:
            raise Invalid.field("role", "must be admin or member")
        user = await self._find(email)
        if await writes.read(self._storage, accounts.get_workspace(workspace_id)) is None:
            raise NotFound(f"no workspace with id {workspace_id}", code="workspace_not_found")

        def op() -> Op[bool]:
            changed, _ = yield from writes.set_member_role(
                workspace_id, user.id, role, outbox=self._outbox
            )
            if changed:
                details = {"user": email, "user_id": user.id, "role": role.value}
                yield from self._audit("set-role", f"workspace:{workspace_id}", details)
            return changed

        return await writes.commit(self._storage, op())

    async def audit_log(self, limit: int) -> list[AuditEntry]:
        """The newest ``limit`` audit rows, newest first."""
        return await writes.read(self._storage, ops.list_audit(limit))
