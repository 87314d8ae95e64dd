"""Invitations to a workspace (SPEC §7): create, list, preview, accept, revoke, sign up.

Tokens are ``secrets.token_urlsafe(32)`` (256 random bits); only their SHA-256 is stored. A
plain, unsalted hash is enough for a token that long: nobody can guess an input that hashes
to a stored value, and a fast hash keeps the lookup one indexed query (a password hash's
slowness protects *low*-entropy secrets, which these are not). The token appears in URL
paths, so it is never logged (the access log records ``/api/invites/…`` and ``/invite/…``
paths redacted: ``fechatter.logs``). Expiry is judged by ``clock`` (injected: tests move it).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fechatter.domain.workspaces import Workspaces
from fechatter.errors import Conflict, Forbidden, NotFound
from fechatter.models import Role, User, format_time
from fechatter.storage import Storage, activation
from fechatter.storage import invites as ops
from fechatter.storage.invites import Accepted, Invite, InviteView
from fechatter.storage.workspace_writes import commit, read

Clock = Callable[[], datetime]


def token_hash(token: str) -> str:
    """The stored form of an invite token: SHA-256, hex."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class CreatedInvite:
    """A new invite with its token (shown once) and link."""

    invite: Invite
    token: str
    url: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.invite.id,
            "token": self.token,
            "url": self.url,
            "expires_at": self.invite.expires_at,
        }


class Invites:
    """Invitation use cases over storage and the workspaces (whose event sink commits the
    joins, so a join is a ``workspace.member_added`` like any other)."""

    def __init__(
        self,
        storage: Storage,
        workspaces: Workspaces,
        public_url: str | None,
        *,
        clock: Clock = _utc_now,
    ) -> None:
        """``public_url``: where links point (setting ``public_url``, e.g.
        ``https://chat.example.com``; None: the origin the creating request reached);
        ``clock``: now, as an aware datetime."""
        self._storage = storage
        self._workspaces = workspaces
        self.public_url = public_url.rstrip("/") if public_url else None
        self._clock = clock

    def _now(self) -> str:
        return format_time(self._clock())

    def link(self, token: str, origin: str) -> str:
        """The invite's landing page: ``<public_url or origin>/invite/<token>``."""
        return f"{self.public_url or origin.rstrip('/')}/invite/{token}"

    async def create(
        self,
        caller: int,
        workspace_id: int,
        *,
        email: str | None,
        role: Role,
        max_uses: int,
        expires_in: int,
        origin: str,
    ) -> CreatedInvite:
        """Owner or admin (only the owner invites as admin: ``Forbidden``); ``email``
        normalised, ``expires_in`` seconds (bounds checked at the edge); ``origin`` the
        request's, for the link when no ``public_url`` is set."""
        caller_role = await self._workspaces.role(workspace_id, caller)
        if not caller_role.manages:
            raise Forbidden("only the owner or an admin may invite", code="not_workspace_admin")
        if role is Role.ADMIN and caller_role is not Role.OWNER:
            raise Forbidden("only the owner may invite as admin", code="not_workspace_owner")
        token = secrets.token_urlsafe(32)
        now = self._clock()
        expires = format_time(now + timedelta(seconds=expires_in))
        invite = await commit(
            self._storage,
            ops.create(
                workspace_id,
                token_hash(token),
                email,
                role,
                max_uses,
                expires,
                caller,
                format_time(now),
            ),
        )
        return CreatedInvite(invite, token, self.link(token, origin))

    async def list(self, caller: int, workspace_id: int) -> list[Invite]:
        """Owner or admin: the workspace's invites (never their tokens)."""
        await self._manager(caller, workspace_id)
        return await read(self._storage, ops.list_for(workspace_id))

    async def revoke(self, caller: int, workspace_id: int, invite_id: int) -> None:
        """Owner or admin; ``NotFound(invite_not_found)`` for an invite not of this
        workspace."""
        await self._manager(caller, workspace_id)
        if not await commit(self._storage, ops.revoke(workspace_id, invite_id)):
            raise NotFound("invite not found", code="invite_not_found")

    async def preview(self, token: str) -> InviteView:
        """The public preview; ``NotFound`` for an unknown, used-up or expired invite."""
        view = await self._find(token)
        if not view.invite.usable(self._now()):
            raise NotFound("invite not found, used up or expired", code="invite_not_found")
        return view

    async def accept(self, token: str, user: User) -> Accepted:
        """``user`` joins (see ``storage.invites.accept``); an existing member gets the
        workspace and their role and uses nothing."""
        view = await self._find(token)
        workspace_id = view.invite.workspace_id
        events = self._workspaces.events
        op = ops.accept(token_hash(token), user, self._now(), outbox=events.outbox)
        try:
            return await events.write(workspace_id, op)
        except Conflict as exc:
            if exc.code != "already_member":
                raise
        # A concurrent accept by the same user joined first: they are a member now.
        role = await self._workspaces.role(workspace_id, user.id)
        workspace = await self._workspaces.get(user.id, workspace_id)
        return Accepted(workspace, role, False)

    async def create_user(
        self, fullname: str, email: str, password_hash: str, token: str
    ) -> tuple[User, int]:
        """Sign-up's user creation with an ``invite_token``: the account and the join in one
        transaction (a bad invite creates no account: ``NotFound``). An invite bound to the
        email of an imported, never-activated (``Pending``) user claims that account instead
        (``storage.activation.claim``). Returns the user and the security version its
        session starts under."""
        view = await self._find(token)
        events = self._workspaces.events
        op = activation.signup_or_claim(
            fullname, email, password_hash, token_hash(token), self._now(), outbox=events.outbox
        )
        return await events.write(view.invite.workspace_id, op)

    async def _find(self, token: str) -> InviteView:
        view = await read(self._storage, ops.by_token(token_hash(token)))
        if view is None:
            raise NotFound("invite not found, used up or expired", code="invite_not_found")
        return view

    async def _manager(self, caller: int, workspace_id: int) -> None:
        if not (await self._workspaces.role(workspace_id, caller)).manages:
            raise Forbidden(
                "only the owner or an admin may manage invites", code="not_workspace_admin"
            )
