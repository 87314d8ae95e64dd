"""Token buckets keyed by anything hashable: message sends (SPEC §5: 20 sends/s sustained, burst
40 → 429 with Retry-After) and the sign-in / sign-up throttles of ``fechatter.throttle``.

Ours rather than a library's: ``limits`` (PyPI), the obvious candidate, keeps its in-memory
counters in a dict with no size bound, reads the wall clock (so trio's test clock cannot drive
it) and expires entries from a background timer thread. Here the clock is injected and the
table is bounded.

Bounded: at most ``max_keys`` buckets are kept, least recently used first in line to go. When a
new key finds the table full, buckets that have refilled completely (they carry no
information) are dropped, then the least recently used until a quarter of the table is free,
so a prune happens at most once per ``max_keys / 4`` new keys. A dropped key merely gets a full
bucket again: a full table weakens limiting, it never refuses anyone. Pure logic over a clock
function; no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable

from fechatter.errors import RateLimited


class RateLimiter:
    """Token buckets keyed by any hashable (user ids for sends, addresses / digests for sign-ins).

    ``rate`` is tokens regained per second, ``burst`` the bucket size; ``clock`` returns
    seconds (``trio.current_time`` in the server).
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Callable[[], float],
        max_keys: int = 100_000,
        *,
        detail: str = "too many messages; slow down",
        code: str | None = None,
    ) -> None:
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate must be positive; burst and max_keys at least 1")
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._max_keys = max_keys
        self._detail = detail
        self._code = code
        self._buckets: dict[Hashable, tuple[float, float]] = {}  # key -> (tokens, stamp), LRU first

    def set_limits(self, rate: float, burst: int) -> None:
        """Change the rate (tokens per second) and the bucket size from now on (a cluster
        node's share of the limits follows the live node count). Buckets keep their tokens,
        capped at the new ``burst`` when next read. ``ValueError`` as the constructor."""
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive; burst at least 1")
        self.rate = rate
        self.burst = float(burst)

    def acquire(self, key: Hashable) -> None:
        """Take one token or raise ``RateLimited`` saying when one will be free."""
        wait = self.try_acquire(key)
        if wait > 0:
            raise RateLimited(self._detail, retry_after=wait, code=self._code)

    def try_acquire(self, key: Hashable) -> float:
        """Take one token and return 0.0, or take nothing and return the seconds until one."""
        now = self._clock()
        tokens = self._tokens(key, now)
        if tokens < 1.0:
            self._store(key, tokens, now)
            return (1.0 - tokens) / self.rate
        self._store(key, tokens - 1.0, now)
        return 0.0

    def refund(self, key: Hashable) -> None:
        """Give back one token taken by ``try_acquire`` (never beyond ``burst``)."""
        if key in self._buckets:
            now = self._clock()
            self._store(key, min(self.burst, self._tokens(key, now) + 1.0), now)

    def forget(self, key: Hashable) -> None:
        """Drop ``key``'s bucket: its next request starts from a full one."""
        self._buckets.pop(key, None)

    def _tokens(self, key: Hashable, now: float) -> float:
        tokens, stamp = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - stamp) * self.rate)

    def _store(self, key: Hashable, tokens: float, now: float) -> None:
        if self._buckets.pop(key, None) is None and len(self._buckets) >= self._max_keys:
            self._prune(now)
        self._buckets[key] = (tokens, now)  # (re)inserted last: most recently used

    def _prune(self, now: float) -> None:
        full = [k for k, (t, s) in self._buckets.items() if t + (now - s) * self.rate >= self.burst]
        for k in full:
            del self._buckets[k]
        excess = len(self._buckets) - self._max_keys * 3 // 4
        if excess > 0:
            for k in list(self._buckets)[:excess]:
                del self._buckets[k]

    def __len__(self) -> int:
        return len(self._buckets)


def rate_share(rate: float, burst: int, nodes: int) -> tuple[float, int]:
    """One cluster node's share of a per-user limit of ``rate`` tokens/s and ``burst`` tokens when
    ``nodes`` nodes are live (at least 1 counted): ``(rate / nodes, ceil(burst / nodes))``.
    The rate is split exactly (a float: the shares add up to the limit, also below 1/s);
    the burst is whole tokens, rounded up so every node admits at least one."""
    n = max(1, nodes)
    return rate / n, math.ceil(burst / n)
