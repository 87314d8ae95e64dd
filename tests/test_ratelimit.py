"""Token buckets with a hand-driven clock."""

from __future__ import annotations

import pytest

from fechatter.errors import RateLimited
from fechatter.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_sustained_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=20, burst=40, clock=clock)
    for _ in range(40):
        limiter.acquire(1)
    with pytest.raises(RateLimited) as info:
        limiter.acquire(1)
    assert info.value.headers["Retry-After"] == "1"
    limiter.acquire(2)  # other users are unaffected
    clock.now += 0.05  # one token back at 20/s
    limiter.acquire(1)
    with pytest.raises(RateLimited):
        limiter.acquire(1)


def test_bounded_keys_drop_full_buckets_first() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=1, burst=2, clock=clock, max_keys=4)
    for key in range(4):
        limiter.acquire(key)
    clock.now += 10  # every bucket refilled: they carry no information
    limiter.acquire(99)
    assert len(limiter) == 1
    for key in range(10):
        limiter.acquire(100 + key)
    assert len(limiter) <= 4
