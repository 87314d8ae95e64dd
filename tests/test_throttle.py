"""The credential throttles' bookkeeping, with a hand-driven clock."""

from __future__ import annotations

import pytest

from fechatter.errors import RateLimited
from fechatter.throttle import AuthThrottle, account_key
from tests.test_ratelimit import Clock


def make(clock: Clock, *, account: int = 2, address: int = 3) -> AuthThrottle:
    return AuthThrottle(
        account_burst=account,
        account_interval=60.0,
        address_burst=address,
        address_interval=2.0,
        signup_burst=1,
        signup_interval=6.0,
        max_keys=100,
        clock=clock,
    )


def test_unchecked_attempts_are_given_back_and_successes_reset_the_account() -> None:
    throttle, acct = make(Clock()), account_key("a@example.com")
    for _ in range(5):  # a shed / storage-failed attempt costs nothing
        throttle.begin_signin("1.2.3.4", acct)
        throttle.signin_not_checked("1.2.3.4", acct)
    throttle.begin_signin("1.2.3.4", acct)  # a failure
    throttle.begin_signin("1.2.3.4", acct)  # a success
    throttle.signin_succeeded("1.2.3.4", acct)
    throttle.begin_signin("1.2.3.4", acct)  # account starts afresh: two more allowed
    throttle.begin_signin("1.2.3.4", acct)
    with pytest.raises(RateLimited) as info:
        throttle.begin_signin("1.2.3.4", account_key("b@example.com"))  # address is spent
    assert info.value.code == "too_many_attempts"
    assert info.value.headers["Retry-After"] == "2"


def test_account_refusal_leaves_the_address_untouched_and_time_heals() -> None:
    clock = Clock()
    throttle, acct = make(clock, account=1, address=2), account_key("a@example.com")
    throttle.begin_signin("1.2.3.4", acct)
    with pytest.raises(RateLimited) as info:
        throttle.begin_signin("1.2.3.4", acct)
    assert info.value.headers["Retry-After"] == "60"
    throttle.begin_signin("1.2.3.4", account_key("b@example.com"))  # address had one left
    clock.now += 60
    throttle.begin_signin("5.6.7.8", acct)  # a minute later the account has a try again


def test_account_key_is_coarser_than_identity() -> None:
    key = account_key("Jose@Example.com")
    assert account_key(" jose@example.com ") == key
    assert account_key("JOSE@EXAMPLE.COM\u200b") == key
    assert account_key("\uff2aose@example.com") == key  # fullwidth J
    assert account_key("jos\u00e9@x.com") == account_key("jose\u0301@x.com")
    assert len(account_key("\ud83d" * 300)) == 16
