"""Throttles on the credential routes: guesses per account, failures and sign-ups per address.

Three token-bucket tables (``RateLimiter``), each bounded by ``throttle_max_keys``:

- **per account**: failed sign-ins (and wrong ``current_password`` on a password change) per
  normalised email, counted whether or not an account has that email, so a 429 is the same
  for every email and reveals nothing. Keys are a 16-byte BLAKE2b digest of the email: the
  table's memory does not depend on what clients type, and it holds no emails in clear.
  A successful sign-in empties the account's record (only the password's owner can do that).
- **per client address**: failed sign-ins and failed refreshes. A success gives its own token
  back but does not reset the address (an attacker could otherwise reset it between guesses by
  signing in to an account of their own).
- **sign-ups per client address**: every sign-up that reaches password hashing, successful or
  not, since each costs an Argon2 hash.

A token is taken *before* any hashing or storage work, so a throttled request costs neither.
It is given back when the attempt ended before a password was checked (hash queue full,
storage unavailable), never because the client went away mid-check.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from fechatter.config import Settings
from fechatter.errors import RateLimited
from fechatter.ratelimit import RateLimiter, rate_share
from fechatter.text import normalize_email

CODE = "too_many_attempts"
SIGNIN_DETAIL = "too many sign-in attempts; try again later"


def account_key(email: str) -> bytes:
    """The per-account throttle key of ``email``: a digest of its identity form
    (``text.normalize_email``, the form accounts are stored under), so no spelling of an email
    escapes its account's throttle. Lone surrogates are tolerated (``surrogatepass``)."""
    identity = normalize_email(email)
    return hashlib.blake2b(identity.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class AuthThrottle:
    """The credential routes' throttles; ``clock`` returns seconds (``trio.current_time``)."""

    def __init__(
        self,
        *,
        account_burst: int,
        account_interval: float,
        address_burst: int,
        address_interval: float,
        signup_burst: int,
        signup_interval: float,
        max_keys: int,
        clock: Callable[[], float],
    ) -> None:
        self.accounts = RateLimiter(
            1.0 / account_interval,
            account_burst,
            clock,
            max_keys,
            detail=SIGNIN_DETAIL,
            code=CODE,
        )
        self.addresses = RateLimiter(
            1.0 / address_interval,
            address_burst,
            clock,
            max_keys,
            detail="too many failed attempts from this address; try again later",
            code=CODE,
        )
        self.signups = RateLimiter(
            1.0 / signup_interval,
            signup_burst,
            clock,
            max_keys,
            detail="too many sign-ups from this address; try again later",
            code=CODE,
        )

        # (limiter, whole rate, whole burst): the cluster's node share is taken from these.
        self._whole = [
            (limiter, limiter.rate, int(limiter.burst))
            for limiter in (self.accounts, self.addresses, self.signups)
        ]

    def share(self, nodes: int) -> None:
        """Enforce one node's share of every limit while ``nodes`` nodes are live (cluster
        mode, docs/api.md "Throttles in a cluster"): ``rate / nodes`` and
        ``ceil(burst / nodes)``, at least 1 (``ratelimit.rate_share``), so guesses spread
        over every node add up to the limit (rounded up per node)."""
        for limiter, rate, burst in self._whole:
            limiter.set_limits(*rate_share(rate, burst, nodes))

    @classmethod
    def from_settings(cls, settings: Settings, clock: Callable[[], float]) -> AuthThrottle:
        """Build from the ``signin_*``, ``auth_address_*``, ``signup_*`` settings."""
        return cls(
            account_burst=settings.signin_account_burst,
            account_interval=settings.signin_account_interval,
            address_burst=settings.auth_address_burst,
            address_interval=settings.auth_address_interval,
            signup_burst=settings.signup_address_burst,
            signup_interval=settings.signup_address_interval,
            max_keys=settings.throttle_max_keys,
            clock=clock,
        )

    # -- sign-in -------------------------------------------------------------------------
    def begin_signin(self, address: str, account: bytes) -> None:
        """Take one attempt from the address and the account, or raise ``RateLimited`` (429).

        The 429 reads the same whichever limit was hit and whether or not the email exists.
        """
        wait = self.addresses.try_acquire(address)
        if wait == 0:
            wait = self.accounts.try_acquire(account)
            if wait > 0:
                self.addresses.refund(address)
        if wait > 0:
            raise RateLimited(SIGNIN_DETAIL, retry_after=wait, code=CODE)

    def signin_succeeded(self, address: str, account: bytes) -> None:
        """The password was right: the address gets its attempt back, the account a clean slate."""
        self.addresses.refund(address)
        self.accounts.forget(account)

    def signin_not_checked(self, address: str, account: bytes) -> None:
        """The attempt ended before the password was checked: give both attempts back."""
        self.addresses.refund(address)
        self.accounts.refund(account)

    # -- password change -----------------------------------------------------------------
    def begin_password_check(self, account: bytes) -> None:
        """Take one attempt from the account (a wrong ``current_password`` is a guess)."""
        self.accounts.acquire(account)

    # -- refresh -------------------------------------------------------------------------
    def begin_refresh(self, address: str) -> None:
        """Take one failure allowance from the address, or raise ``RateLimited``."""
        self.addresses.acquire(address)

    def refresh_done(self, address: str) -> None:
        """The refresh succeeded (or was not judged): give the allowance back."""
        self.addresses.refund(address)

    # -- sign-up -------------------------------------------------------------------------
    def begin_signup(self, address: str) -> None:
        """Take one sign-up from the address, or raise ``RateLimited``."""
        self.signups.acquire(address)

    def signup_not_hashed(self, address: str) -> None:
        """The sign-up was refused before its password was hashed: give it back."""
        self.signups.refund(address)
