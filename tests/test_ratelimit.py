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


def test_refund_and_forget() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=0.1, burst=2, clock=clock)
    assert limiter.try_acquire("a") == 0.0
    assert limiter.try_acquire("a") == 0.0
    assert limiter.try_acquire("a") == pytest.approx(10.0)  # one token back at 0.1/s
    limiter.refund("a")
    assert limiter.try_acquire("a") == 0.0
    limiter.refund("a")
    limiter.refund("a")
    limiter.refund("a")  # never beyond the burst
    assert [limiter.try_acquire("a") for _ in range(3)][2] > 0
    limiter.forget("a")
    assert limiter.try_acquire("a") == 0.0
    limiter.refund("never seen")  # no bucket appears for it
    assert len(limiter) == 1


def test_full_table_evicts_least_recently_used_and_never_refuses() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=0.001, burst=1, clock=clock, max_keys=8)
    for key in range(8):
        limiter.acquire(key)
    limiter.try_acquire(0)  # denied, but key 0 is now the most recently used
    limiter.acquire(100)  # table full, nothing refilled: the least recently used quarter+ goes
    assert len(limiter) == 7  # 8 - 2 (down to three quarters) + the new key
    with pytest.raises(RateLimited):
        limiter.acquire(0)  # kept: still throttled
    limiter.acquire(1)  # evicted: a fresh bucket, throttling merely weakened
    # Pruning frees a quarter of the table, so it runs at most once per max_keys / 4 keys.
    for key in range(200, 210):
        limiter.acquire(key)
        assert len(limiter) <= 8


def test_custom_detail_and_code() -> None:
    limiter = RateLimiter(rate=1, burst=1, clock=Clock(), detail="slow", code="too_many_attempts")
    limiter.acquire("x")
    with pytest.raises(RateLimited) as info:
        limiter.acquire("x")
    assert (info.value.detail, info.value.code) == ("slow", "too_many_attempts")


def test_set_limits_applies_to_existing_buckets_from_now_on() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=20, burst=40, clock=clock)
    limiter.acquire(1)  # 39 tokens left
    limiter.set_limits(2.0, 3)  # a cluster node's share: the bucket is capped at 3
    for _ in range(3):
        limiter.acquire(1)
    assert limiter.try_acquire(1) == pytest.approx(0.5)  # one token at 2/s
    clock.now += 0.5
    limiter.acquire(1)
    limiter.set_limits(20, 40)  # back to the whole limit: refills at the new rate
    clock.now += 1.0
    for _ in range(20):
        limiter.acquire(1)
    with pytest.raises(RateLimited):
        limiter.acquire(1)
    with pytest.raises(ValueError, match="rate must be positive"):
        limiter.set_limits(0, 1)
    with pytest.raises(ValueError, match="burst at least 1"):
        limiter.set_limits(1, 0)
