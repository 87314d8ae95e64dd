"""Per-user token buckets (SPEC §5: 20 sends/s sustained, burst 40 → 429 with Retry-After).

Bounded: at most ``max_keys`` buckets are kept; when full, buckets that have refilled
completely (they carry no information) are dropped, and if none has, the oldest half goes —
a dropped user merely gets a full bucket again. Pure logic over a clock function; no I/O.
"""

from __future__ import annotations

from collections.abc import Callable

from fechatter.errors import RateLimited


class RateLimiter:
    """Token buckets keyed by user id."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float], max_keys: int = 100_000
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[int, tuple[float, float]] = {}  # key -> (tokens, stamp)

    def acquire(self, key: int) -> None:
        """Take one token or raise ``RateLimited`` saying when one will be free."""
        now = self._clock()
        tokens, stamp = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - stamp) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            raise RateLimited(
                "too many messages; slow down", retry_after=(1.0 - tokens) / self.rate
            )
        if key not in self._buckets and len(self._buckets) >= self._max_keys:
            self._prune(now)
        self._buckets[key] = (tokens - 1.0, now)

    def _prune(self, now: float) -> None:
        full = [k for k, (t, s) in self._buckets.items() if t + (now - s) * self.rate >= self.burst]
        for k in full:
            del self._buckets[k]
        if len(self._buckets) >= self._max_keys:
            for k in list(self._buckets)[: len(self._buckets) // 2]:
                del self._buckets[k]

    def __len__(self) -> int:
        return len(self._buckets)
