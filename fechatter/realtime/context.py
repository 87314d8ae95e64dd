"""What the realtime listener's connections share, built once by ``serve`` (no globals)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import trio

from fechatter.access_log import AccessLog
from fechatter.actors.user import UserHub
from fechatter.auth import Authenticator
from fechatter.config import Settings
from fechatter.domain.messages import Messages
from fechatter.events import READY, Event
from fechatter.metrics import RealtimeStats
from fechatter.realtime.stream import OpenStreams, StreamLimits
from fechatter.security import TokenGuard


@dataclass(frozen=True)
class RealtimeContext:
    settings: Settings
    hub: UserHub
    auth: Authenticator
    messages: Messages
    limits: StreamLimits
    origins: frozenset[str]  # browser origins allowed to open streams (exact match)
    guard: TokenGuard
    stats: RealtimeStats = field(default_factory=RealtimeStats)
    # The open streams, for the graceful stop (``OpenStreams.close_all``).
    streams: OpenStreams = field(default_factory=OpenStreams)
    # The access log (setting ``access_log``), None when off.
    access: AccessLog | None = None

    def ready_event(self, position: str, user_id: int, connection_id: int) -> Event:
        """The first event of every stream; its id is where a reconnect resumes from."""
        event = Event(
            READY,
            {
                "user_id": user_id,
                "connection_id": connection_id,
                "server_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
        )
        event.id = position
        return event

    def expiry_deadline(self, expires_at: float) -> float:
        """A token's wall-clock expiry as a deadline on trio's clock."""
        return trio.current_time() + max(0.0, expires_at - time.time())

    def origin_allowed(self, origin: str) -> bool:
        """Only configured origins (``Settings.origins``): never one derived from the request's
        own ``Host``, which any name pointing at this server would pass."""
        return origin in self.origins

    def cors_headers(self, origin: str | None) -> list[tuple[str, str]]:
        if origin is None or not self.origin_allowed(origin):
            return []
        return [
            ("Access-Control-Allow-Origin", origin),
            ("Vary", "Origin"),
        ]
