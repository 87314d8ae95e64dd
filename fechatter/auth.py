"""Passwords (Argon2id), access tokens (JWT, HS256) and opaque refresh tokens.

Argon2 is deliberately slow, so hashing and verifying run on worker threads bounded by a
``CapacityLimiter``: a burst of sign-ups queues there instead of stalling the event loop that
serves the realtime streams. The queue is bounded too: past ``hash_queue_max`` callers waiting
for a thread, the next one is refused at once (503 ``auth_busy``, Retry-After 1) rather than
waiting behind everyone else, so a flood of sign-ins fails fast instead of starving all.
Refresh tokens are random strings; only their SHA-256 is stored.
This module never touches storage: ``domain/accounts.py`` combines it with the ``Storage``
calls.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import argon2
import jwt
import trio

from fechatter.errors import Unauthorized, Unavailable
from fechatter.models import format_time

ISSUER = "fechatter"
AUDIENCE = "fechatter"
ALGORITHM = "HS256"
# Retry-After (seconds) of a request refused because the hashing queue is full.
HASH_BUSY_RETRY_AFTER = 1

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class HashStatistics:
    """Password hashing's queue: ``admitted`` = running + ``waiting``; ``shed`` since start."""

    admitted: int
    waiting: int
    shed: int


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """A verified access token: its user, expiry (Unix seconds), the user's security
    version it was issued under (``sv``; 0 for tokens from before versions existed) and the
    session — refresh-token family — it belongs to (``sid``)."""

    user_id: int
    expires_at: float
    security_version: int = 0
    session_id: str | None = None


class Authenticator:
    """Issues and checks credentials; one per server, built from settings."""

    def __init__(
        self,
        secret: str,
        *,
        access_ttl: int,
        refresh_ttl: int,
        time_cost: int,
        memory_cost: int,
        parallelism: int,
        hash_threads: int,
        hash_queue_max: int | None = None,
        password_hasher: argon2.PasswordHasher | None = None,
    ) -> None:
        """``hash_queue_max``: callers allowed to wait for one of the ``hash_threads``
        (default four per thread). ``password_hasher`` replaces the Argon2id hasher built from
        the three costs (tests pass one whose threads they can hold)."""
        if len(secret) < 32:
            raise ValueError("the JWT secret must be at least 32 characters")
        self._secret = secret
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        self._hasher = password_hasher or argon2.PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_cost,
            parallelism=parallelism,
            type=argon2.Type.ID,
        )
        self._limiter = trio.CapacityLimiter(hash_threads)
        queue = hash_queue_max if hash_queue_max is not None else 4 * hash_threads
        if queue < 0:
            raise ValueError("hash_queue_max must not be negative")
        self._hash_admit_max = hash_threads + queue  # running + waiting
        self._hash_admitted = 0
        self._hash_shed = 0  # callers refused because the queue was full, since start
        # A hash to verify against when the email is unknown, so both failures cost the same.
        self._dummy_hash = self._hasher.hash(secrets.token_hex(16))

    # -- passwords ---------------------------------------------------------------------
    def hash_statistics(self) -> HashStatistics:
        """How many callers hold or wait for a hashing thread, and how many were refused."""
        return HashStatistics(
            admitted=self._hash_admitted,
            waiting=self._limiter.statistics().tasks_waiting,
            shed=self._hash_shed,
        )

    async def _on_hash_thread(self, fn: Callable[[], T]) -> T:
        # The admission check and the increment happen with no await between them, so the
        # bound holds exactly; the count drops only once the thread has finished.
        if self._hash_admitted >= self._hash_admit_max:
            self._hash_shed += 1
            raise Unavailable(
                "the server is busy checking passwords; retry shortly",
                code="auth_busy",
                retry_after=HASH_BUSY_RETRY_AFTER,
            )
        self._hash_admitted += 1
        try:
            return await trio.to_thread.run_sync(fn, limiter=self._limiter)
        finally:
            self._hash_admitted -= 1

    async def hash_password(self, password: str) -> str:
        """Argon2id hash, computed on a worker thread.

        Raises ``Unavailable`` (503 ``auth_busy``) at once when the hashing queue is full.
        """
        return await self._on_hash_thread(lambda: self._hasher.hash(password))

    async def verify_password(self, password_hash: str | None, password: str) -> bool:
        """Check a password; ``None`` (unknown user) burns the same time and fails.

        Raises ``Unavailable`` (503 ``auth_busy``) at once when the hashing queue is full.
        """
        stored = password_hash if password_hash is not None else self._dummy_hash

        def check() -> bool:
            try:
                return self._hasher.verify(stored, password)
            except argon2.exceptions.VerificationError:
                return False
            except argon2.exceptions.InvalidHashError:
                return False

        ok = await self._on_hash_thread(check)
        return ok and password_hash is not None

    # -- access tokens -----------------------------------------------------------------
    def issue_access_token(
        self,
        user_id: int,
        *,
        security_version: int = 0,
        session_id: str | None = None,
        now: float | None = None,
    ) -> str:
        """A signed JWT for ``user_id``, valid ``access_ttl`` seconds from ``now``."""
        issued = int(now if now is not None else time.time())
        claims: dict[str, str | int] = {
            "sub": str(user_id),
            "iat": issued,
            "exp": issued + self.access_ttl,
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sv": security_version,
        }
        if session_id is not None:
            claims["sid"] = session_id
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def verify_access_token(self, token: str) -> AccessClaims:
        """Decode and check signature, expiry, issuer and audience, else ``Unauthorized``."""
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"require": ["sub", "exp", "iat", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired", code="token_expired") from None
        except jwt.PyJWTError:
            raise Unauthorized("invalid token", code="invalid_token") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not (sub.isascii() and sub.isdigit()) or len(sub) > 19:
            raise Unauthorized("invalid token", code="invalid_token")
        version = claims.get("sv", 0)
        session = claims.get("sid")
        if (
            int(sub) <= 0
            or type(version) is not int
            or not 0 <= version < 2**63
            or not (session is None or (isinstance(session, str) and len(session) <= 64))
        ):
            raise Unauthorized("invalid token", code="invalid_token")
        return AccessClaims(int(sub), float(claims["exp"]), version, session)

    # -- refresh tokens ----------------------------------------------------------------
    @staticmethod
    def new_refresh_token() -> tuple[str, str]:
        """A fresh opaque refresh token and the hash to store."""
        token = secrets.token_urlsafe(32)
        return token, hash_refresh_token(token)

    @staticmethod
    def new_family_id() -> str:
        return secrets.token_hex(16)

    def refresh_expiry(self) -> str:
        return format_time(datetime.now(UTC) + timedelta(seconds=self.refresh_ttl))


def hash_refresh_token(token: str) -> str:
    """What storage keeps of a refresh token."""
    return hashlib.sha256(token.encode()).hexdigest()


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if it is one."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
