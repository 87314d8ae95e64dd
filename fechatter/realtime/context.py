"""What the realtime listener's connections share, built once by ``serve`` (no globals)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import trio

from fechatter.actors.directory import Directory
from fechatter.actors.user import UserHub
from fechatter.auth import Authenticator
from fechatter.config import Settings
from fechatter.events import READY, Event
from fechatter.ratelimit import RateLimiter
from fechatter.realtime.stream import StreamLimits
from fechatter.security import TokenGuard
from fechatter.storage import Storage


@dataclass
class RealtimeStats:
    """Counters of the listener (mutable; read by /api/sse/health and tests)."""

    active: int = 0
    accepted: int = 0
    refused: int = 0
    slow_consumers: int = 0
    bad_requests: int = 0


@dataclass(frozen=True)
class RealtimeContext:
    settings: Settings
    hub: UserHub
    directory: Directory
    storage: Storage
    auth: Authenticator
    send_limiter: RateLimiter
    limits: StreamLimits
    origins: frozenset[str]
    guard: TokenGuard
    api_port: int | None = None  # with no configured origins: the API's port on any host name
    stats: RealtimeStats = field(default_factory=RealtimeStats)

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

    def origin_allowed(self, origin: str, host: str | None) -> bool:
        """A configured origin, or (by default) the API listener on the host the browser used
        to reach us — so ``serve --host 0.0.0.0`` works from any of the machine's names."""
        if origin in self.origins:
            return True
        if self.api_port is None or not host:
            return False
        hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return origin in (
            f"http://{hostname}:{self.api_port}",
            f"https://{hostname}:{self.api_port}",
        )

    def cors_headers(self, origin: str | None, host: str | None) -> list[tuple[str, str]]:
        if origin is None or not self.origin_allowed(origin, host):
            return []
        return [
            ("Access-Control-Allow-Origin", origin),
            ("Vary", "Origin"),
        ]
