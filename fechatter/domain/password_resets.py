"""Password-reset links (issue 17): made by ``fechatter admin reset-password``, used over HTTP.

A link is ``<public_url>/reset-password/<token>``; the token is ``secrets.token_urlsafe(32)``
and only its SHA-256 is stored (``domain.invites.token_hash``: the same reasoning — 256
random bits need no slow hash). A link is single-use and expires (default one day). Setting
the password through it revokes every session of the user and voids every access token (the
security version rises in the same transaction, ``storage.accounts.update_user``), so their
open streams close: here at once, elsewhere within ``security_poll_interval``. It also
activates an imported user that was never activated (``Pending``), never a suspended one.
The token is in a URL path, so it is never logged (the access log redacts it:
``fechatter.access_log``).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, datetime

from fechatter.auth import Authenticator
from fechatter.domain.invites import token_hash
from fechatter.errors import NotFound
from fechatter.models import format_time
from fechatter.security import TokenGuard
from fechatter.storage import Storage, accounts, activation
from fechatter.storage import admin as ops
from fechatter.storage.sql import Op
from fechatter.storage.workspace_writes import commit, read

Clock = Callable[[], datetime]
DEFAULT_EXPIRES_IN = 86_400  # seconds a reset link stays usable
PATH = "/reset-password/"


def _utc_now() -> datetime:
    return datetime.now(UTC)


def new_token() -> tuple[str, str]:
    """A fresh link token and the hash that is stored: ``(token, sha256 hex)``."""
    token = secrets.token_urlsafe(32)
    return token, token_hash(token)


def link(base_url: str, token: str) -> str:
    """The page that sets a new password: ``<base_url>/reset-password/<token>``."""
    return f"{base_url.rstrip('/')}{PATH}{token}"


def _gone() -> NotFound:
    return NotFound("reset link not found, used or expired", code="reset_link_not_found")


class PasswordResets:
    """Checking and using reset links (the HTTP side)."""

    def __init__(
        self,
        storage: Storage,
        auth: Authenticator,
        guard: TokenGuard | None,
        *,
        clock: Clock = _utc_now,
    ) -> None:
        """``guard``: this process's token guard (closes the user's streams here at once)."""
        self._storage = storage
        self._auth = auth
        self._guard = guard
        self._clock = clock

    async def check(self, token: str) -> None:
        """``NotFound(reset_link_not_found)`` unless the link is live."""
        now = format_time(self._clock())
        if await read(self._storage, ops.reset_user(token_hash(token), now)) is None:
            raise _gone()

    async def use(self, token: str, password: str) -> int:
        """Set the password of the link's user and spend the link; the user id.

        A dead link costs no hash (checked first) and is ``NotFound(reset_link_not_found)``,
        also when a concurrent use spent it meanwhile; ``Unavailable(auth_busy)`` when the
        hashing queue is full (nothing spent)."""
        await self.check(token)
        password_hash = await self._auth.hash_password(password)
        user_id = await commit(self._storage, _use(token_hash(token), password_hash, self._now()))
        if self._guard is not None:
            await self._guard.load(user_id)  # committed: close this process's streams now
        return user_id

    def _now(self) -> str:
        return format_time(self._clock())


def _use(hashed: str, password_hash: str, now: str) -> Op[int]:
    user_id = yield from ops.consume_reset(hashed, now)
    if user_id is None:
        raise _gone()
    # An imported, never-activated user is activated by its first password (an admin's
    # suspension is not lifted: docs/archive.md "Users"); before the version rises, so the
    # logged state every process reads is the new one.
    yield from activation.activate_pending(user_id)
    # Raises the security version (every session, every access token) in this transaction.
    yield from accounts.update_user(user_id, None, None, False, password_hash)
    return user_id
