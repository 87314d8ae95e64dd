"""Admission on the realtime listener: who may hold a connection, and for how long.

A connection is **pending** from accept until it presents a valid token, then a **stream**.
The two have separate budgets, so connections that never authenticate can never take the
slots of signed-in users' streams:

- pending: at most ``max_pending_connections``; each has ``head_timeout`` seconds to send its
  head (from when its task starts), then the listener's ``AUTH_TIMEOUT`` for the server's own
  token check and answer (``rearm``). When a newcomer finds the budget full, the **oldest**
  pending connection is dropped (closed without an answer; one that sent its head counts as
  the youngest): a real client sends its head within one round trip, so the oldest is almost
  always silent, and a newcomer — possibly a real user — is never refused.
- streams: at most ``max_connections`` in all (past it: 503 ``over_capacity``) and at most
  ``max_streams_per_user`` per user (past it: 429 ``too_many_streams``), checked before any
  stream starts.

Pure bookkeeping over cancel scopes: no sockets, no awaits. It must never block or start tasks.
"""

from __future__ import annotations

import enum
import math
from collections import OrderedDict

import trio

from fechatter.errors import RateLimited, Unavailable
from fechatter.metrics import RealtimeStats

# A hint only: a slot frees when one of the user's own streams closes, which we cannot predict.
TOO_MANY_STREAMS_RETRY_AFTER = 10.0


class Phase(enum.Enum):
    PENDING = "pending"  # accepted, no valid token yet; under the head deadline
    STREAM = "stream"  # admitted: counted against max_connections and the user's cap
    DROPPED = "dropped"  # evicted from a full pending budget; its task closes it
    CLOSED = "closed"


class Dropped(Exception):
    """The connection was evicted from the pending budget before it could be admitted."""


class Admission:
    """One connection's place in the budgets; ``scope`` bounds its pending phase."""

    __slots__ = ("key", "phase", "scope", "user_id")

    def __init__(self, key: int, deadline: float) -> None:
        self.key = key
        self.phase = Phase.PENDING
        self.scope = trio.CancelScope(deadline=deadline)
        self.user_id = 0


class Gate:
    """The listener's budgets (``max_pending``, ``max_streams``, ``per_user``)."""

    def __init__(
        self,
        stats: RealtimeStats,
        *,
        max_pending: int,
        max_streams: int,
        per_user: int,
        head_timeout: float,
    ) -> None:
        self.stats = stats
        self.max_pending = max_pending
        self.max_streams = max_streams
        self.per_user = per_user
        self.head_timeout = head_timeout
        self._pending: OrderedDict[int, Admission] = OrderedDict()  # oldest first
        self._streams = 0
        self._by_user: dict[int, int] = {}  # user id -> open streams (no zero entries)
        self._keys = 0

    def accept(self, now: float) -> Admission:
        """Admit a freshly accepted connection as pending, dropping the oldest if full."""
        while len(self._pending) >= self.max_pending:
            _, oldest = self._pending.popitem(last=False)
            oldest.phase = Phase.DROPPED
            oldest.scope.cancel()
            self.stats.pending -= 1
            self.stats.pending_dropped += 1
        self._keys += 1
        entry = Admission(self._keys, now + self.head_timeout)
        self._pending[entry.key] = entry
        self.stats.pending += 1
        return entry

    def rearm(self, entry: Admission, now: float, seconds: float | None = None) -> None:
        """Restart a pending connection's deadline: ``seconds`` (default ``head_timeout``)
        from ``now``.

        The listener calls it when the connection's task first runs (``head_timeout``: the
        client's time to send its head) and when the whole head has arrived (``AUTH_TIMEOUT``:
        the server's time to check the token and answer). In a storm of reconnects thousands
        of connections are accepted before their tasks run, then wait behind each other's
        token checks and presence queries; that wait is the server's and must not use up the
        client's deadline. Silent sockets are still cut at ``head_timeout``."""
        if entry.phase is Phase.PENDING:
            entry.scope.deadline = now + (self.head_timeout if seconds is None else seconds)
            if seconds is not None:
                # It sent its head: no longer the likeliest silent socket, so it goes to
                # the back of the drop-oldest order.
                self._pending.move_to_end(entry.key)

    def promote(self, entry: Admission, user_id: int) -> None:
        """Turn an authenticated pending connection into a stream of ``user_id``.

        Raises ``Dropped`` if it was evicted meanwhile, ``Unavailable`` (503 over_capacity) when
        ``max_streams`` are open, ``RateLimited`` (429 too_many_streams) when the user holds
        ``per_user`` streams. On a refusal it stays pending (its answer is still bounded).
        """
        if entry.phase is Phase.DROPPED:
            raise Dropped
        assert entry.phase is Phase.PENDING, entry.phase
        if self._streams >= self.max_streams:
            self.stats.refused += 1
            raise Unavailable("too many connections", code="over_capacity")
        if self._by_user.get(user_id, 0) >= self.per_user:
            self.stats.too_many_streams += 1
            raise RateLimited(
                f"at most {self.per_user} streams per user",
                code="too_many_streams",
                retry_after=TOO_MANY_STREAMS_RETRY_AFTER,
            )
        del self._pending[entry.key]
        self.stats.pending -= 1
        entry.phase = Phase.STREAM
        entry.user_id = user_id
        entry.scope.deadline = math.inf  # streams have their own liveness rules
        self._streams += 1
        self._by_user[user_id] = self._by_user.get(user_id, 0) + 1

    def release(self, entry: Admission) -> None:
        """The connection closed: give back whatever it held (idempotent)."""
        if entry.phase is Phase.PENDING:
            del self._pending[entry.key]
            self.stats.pending -= 1
            if entry.scope.cancelled_caught:  # its deadline passed (a dropped one is DROPPED)
                self.stats.head_timeouts += 1
        elif entry.phase is Phase.STREAM:
            self._streams -= 1
            left = self._by_user[entry.user_id] - 1
            if left:
                self._by_user[entry.user_id] = left
            else:
                del self._by_user[entry.user_id]
        entry.phase = Phase.CLOSED

    def streams_of(self, user_id: int) -> int:
        """Open streams of one user (for tests and operators)."""
        return self._by_user.get(user_id, 0)

    @property
    def streams(self) -> int:
        return self._streams
