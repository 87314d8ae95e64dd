"""A stream's clocks: when to send a heartbeat, when its token expires, when the peer is dead.

Fed the time (trio's clock, in seconds) by the connection's task, which sleeps until
``deadline()`` or until bytes arrive, then asks ``due(now)`` what, if anything, is owed:
``EXPIRED`` (the token's expiry, first), ``DEAD`` (nothing heard for ``dead_after``; SSE never
has one), ``PING`` (the heartbeat: the next one is scheduled by answering it). Sans-I/O: it
reads no clock of its own.
"""

from __future__ import annotations

import enum
import math


class Due(enum.Enum):
    NOTHING = "nothing"
    PING = "ping"
    EXPIRED = "expired"
    DEAD = "dead"


class Timers:
    """Heartbeat every ``heartbeat`` s; expiry at ``expires``; dead after ``dead_after`` s."""

    __slots__ = ("dead_after", "expires", "heard", "heartbeat", "next_ping")

    def __init__(
        self, now: float, heartbeat: float, expires: float, dead_after: float = math.inf
    ) -> None:
        self.heartbeat = heartbeat
        self.expires = expires
        self.dead_after = dead_after
        self.next_ping = now + heartbeat
        self.heard = now

    def deadline(self) -> float:
        """When ``due`` will next have something to say (if nothing arrives before)."""
        return min(self.next_ping, self.expires, self.heard + self.dead_after)

    def heard_from_peer(self, now: float) -> None:
        self.heard = now

    def due(self, now: float) -> Due:
        """What is owed at ``now``; a ``PING`` answer schedules the next heartbeat."""
        if now >= self.expires:
            return Due.EXPIRED
        if now >= self.heard + self.dead_after:
            return Due.DEAD
        if now >= self.next_ping:
            self.next_ping = now + self.heartbeat
            return Due.PING
        return Due.NOTHING
