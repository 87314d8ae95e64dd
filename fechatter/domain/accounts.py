"""Accounts and sessions: sign-up, sign-in, refresh (rotation), sign-out, the profile.

A *session* is a refresh-token family: sign-up and sign-in start one, each refresh rotates its
token, sign-out ends it (``everywhere``: every session, and every access token through the
security version, ``fechatter.security``). Throttling by client address stays with the
transport that knows the address; this module knows only users and credentials.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fechatter.auth import Authenticator, hash_refresh_token
from fechatter.errors import Unauthorized
from fechatter.models import SecurityState, User, UserStatus, utc_now
from fechatter.security import TokenGuard
from fechatter.storage import Storage

BAD_CREDENTIALS = "email or password is incorrect"


@dataclass(frozen=True, slots=True)
class Session:
    """A token pair and its user, as sign-up, sign-in and refresh answer."""

    token: str
    refresh_token: str
    expires_in: int  # seconds the access token is valid
    user: User

    def to_json(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "refresh_token": self.refresh_token,
            "expires_in": self.expires_in,
            "user": self.user.to_json(),
        }


class Accounts:
    """Account use cases over storage, the password hasher and the token guard."""

    def __init__(self, storage: Storage, auth: Authenticator, guard: TokenGuard) -> None:
        self._storage = storage
        self._auth = auth
        self._guard = guard

    async def sign_up(
        self,
        fullname: str,
        email: str,
        password: str,
        workspace: str | None,
        *,
        create: Callable[[str], Awaitable[tuple[User, int]]] | None = None,
    ) -> Session:
        """A new user (and workspace, if named) with a first session.

        ``create``: makes the user from the password hash instead (an invite's sign-up:
        the account and the join in one transaction; or the claim of an imported account,
        whose security version it raised) and returns it with its security version. Raises
        ``Conflict`` (``email_taken``, ``workspace_name_taken``; nothing written) and
        ``Unavailable`` (``auth_busy``: the hashing queue is full; nothing hashed), and what
        ``create`` raises.
        """
        password_hash = await self._auth.hash_password(password)
        if create is not None:
            user, version = await create(password_hash)
            if version:  # a claimed account became active: this process knows it now
                await self._guard.load(user.id)
            return await self._start_session(user, version)
        user, _ = await self._storage.create_user(fullname, email, password_hash, workspace)
        return await self._start_session(user, 0)

    async def sign_in(self, email: str, password: str) -> Session:
        """A new session for the right email and password of an active user.

        Raises ``Unauthorized`` (``invalid_credentials``) alike for an unknown email, a wrong
        password and a suspended user (the unknown email costs the same hash), and
        ``Unavailable`` when no password could be checked.
        """
        creds = await self._storage.get_credentials(email)
        ok = await self._auth.verify_password(creds.password_hash if creds else None, password)
        if not ok or creds is None or creds.user.status is not UserStatus.ACTIVE:
            raise Unauthorized(BAD_CREDENTIALS, code="invalid_credentials")
        # Under the version read with the hash: if the password changed (or every session
        # was ended) while this one was checked, no session starts.
        session = await self._start_session(creds.user, creds.security_version)
        # The state just read is fresh: the guard takes it (versions only rise), so a user
        # reactivated since the last poll can use this token at once.
        self._guard.apply(SecurityState(creds.user.id, creds.security_version, True))
        return session

    async def refresh(self, refresh_token: str) -> Session:
        """Rotate a refresh token into a new pair of the same session.

        Raises ``Unauthorized`` (``invalid_refresh_token``) for an unknown, expired, revoked or
        already-rotated token (the latter revokes the whole session: someone holds a copy),
        and for a suspended user.
        """
        new_token, new_hash = self._auth.new_refresh_token()
        grant = await self._storage.rotate_refresh_token(
            hash_refresh_token(refresh_token), new_hash, self._auth.refresh_expiry(), utc_now()
        )
        dead = Unauthorized("refresh token is invalid or expired", code="invalid_refresh_token")
        if grant is None or grant.user is None or not grant.active:
            raise dead  # a suspended user's: the same answer as any dead refresh token
        # User, version and status come from the rotation's own transaction: nothing else
        # can fail after the old token was spent, and a revocation that commits after it
        # voids this access token too (and revoked the new refresh token with it).
        self._guard.apply(SecurityState(grant.user_id, grant.security_version, grant.active))
        return self._session(grant.user, new_token, grant.family_id, grant.security_version)

    async def sign_out(self, user_id: int, refresh_token: str, *, everywhere: bool) -> None:
        """End the session of ``refresh_token`` if it is the caller's (else nothing, and no
        sign of whose it is); ``everywhere`` ends every session and voids every token."""
        await self._storage.revoke_refresh_token(hash_refresh_token(refresh_token), user_id)
        if everywhere:
            await self._guard.revoke_all(user_id)

    async def get(self, user_id: int) -> User:
        """The user; ``Unauthorized`` if a validly signed token names no user of ours."""
        user = await self._storage.get_user(user_id)
        if user is None:
            raise Unauthorized("invalid token", code="invalid_token")
        return user

    async def check_password(self, user: User, password: str) -> bool:
        """Whether ``password`` is the user's (``Unavailable``: the hash queue is full)."""
        creds = await self._storage.get_credentials(user.email)
        return creds is not None and await self._auth.verify_password(creds.password_hash, password)

    async def update_profile(
        self,
        user_id: int,
        *,
        fullname: str | None,
        avatar: str | None,
        clear_avatar: bool,
        new_password: str | None,
        keep_session: str | None,
    ) -> User:
        """Change what is given. A new password (its current one already checked by the
        caller) signs every session but ``keep_session`` out and voids every access token,
        the caller's too: the caller's session goes on after one refresh."""
        password_hash = None
        if new_password is not None:
            password_hash = await self._auth.hash_password(new_password)
        user = await self._storage.update_user(
            user_id,
            fullname=fullname,
            avatar=avatar,
            clear_avatar=clear_avatar,
            password_hash=password_hash,
            keep_family=keep_session,
        )
        if password_hash is not None:
            # The revocation committed with the password; close this process's streams now
            # (other processes follow the change log).
            await self._guard.load(user_id)
        return user

    async def _start_session(self, user: User, version: int) -> Session:
        """A new session under security ``version``; ``Unauthorized`` if the version moved
        since it was read (the session would outlive a revocation)."""
        family_id = self._auth.new_family_id()
        refresh, refresh_hash = self._auth.new_refresh_token()
        started = await self._storage.add_refresh_token(
            user.id, refresh_hash, family_id, self._auth.refresh_expiry(), version
        )
        if not started:
            raise Unauthorized(BAD_CREDENTIALS, code="invalid_credentials")
        return self._session(user, refresh, family_id, version)

    def _session(self, user: User, refresh: str, family_id: str, version: int) -> Session:
        token = self._auth.issue_access_token(
            user.id, security_version=version, session_id=family_id
        )
        return Session(token, refresh, self._auth.access_ttl, user)
