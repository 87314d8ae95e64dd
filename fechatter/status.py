"""User status (SPEC §7, docs/api.md "User status, profiles and mute"): the pure rules.

A person may choose ``away`` or ``busy`` (do not disturb), with an optional text and expiry,
on top of automatic presence. What others are shown:

- ``offline`` while the user has no live stream (anywhere in the cluster);
- else the chosen status while it has not expired;
- else ``online``.

Times here are seconds since the Unix epoch (floats) from a ``WallClock``; ``wall_clock()``
is the server's: wall time anchored once to trio's clock, so an expiry timer and the "has it
expired?" check read the same clock, and a test under trio's ``MockClock`` moves both (no
sleeps). This module never does I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import trio

from fechatter.models import format_time

Chosen = Literal["away", "busy"]
Shown = Literal["online", "away", "busy", "offline"]
MAX_TEXT = 100  # characters of status text
MAX_EXPIRES_IN = 30 * 24 * 3600  # seconds: a status may be set to clear itself within 30 days

WallClock = Callable[[], float]


def wall_clock() -> WallClock:
    """A clock of epoch seconds that advances with ``trio.current_time()`` (call inside trio).

    Anchored to ``time.time()`` when made: timers (``trio.sleep_until``) and expiry checks
    agree, and a wall-clock step does not fire or postpone a timer."""
    anchor = time.time() - trio.current_time()
    return lambda: anchor + trio.current_time()


@dataclass(frozen=True, slots=True)
class ChosenStatus:
    """A user's chosen status as stored: ``expires_at`` epoch seconds (None: until cleared)."""

    status: Chosen
    text: str | None
    expires_at: float | None

    def live(self, now: float) -> bool:
        """Whether it still applies at ``now`` (epoch seconds)."""
        return self.expires_at is None or self.expires_at > now


def epoch_to_rfc3339(seconds: float) -> str:
    """Epoch seconds as the RFC 3339 UTC string of the wire (``…Z``)."""
    return format_time(datetime.fromtimestamp(seconds, UTC))


def shown(online: bool, chosen: ChosenStatus | None, now: float) -> dict[str, Any]:
    """The ``presence`` object of ``GET /api/users/:id``: ``{status, text, expires_at}``
    (``text``/``expires_at`` null unless a chosen status shows)."""
    if not online:
        return {"status": "offline", "text": None, "expires_at": None}
    if chosen is None or not chosen.live(now):
        return {"status": "online", "text": None, "expires_at": None}
    expires = None if chosen.expires_at is None else epoch_to_rfc3339(chosen.expires_at)
    return {"status": chosen.status, "text": chosen.text, "expires_at": expires}


def presence_event(
    user_id: int, online: bool, chosen: ChosenStatus | None, now: float
) -> dict[str, Any]:
    """The ``presence`` event's data: ``{user_id, status}``, plus ``text`` and ``expires_at``
    (either may be null) when the status is a chosen one (``away``/``busy``)."""
    view = shown(online, chosen, now)
    data: dict[str, Any] = {"user_id": user_id, "status": view["status"]}
    if view["status"] in ("away", "busy"):
        data["text"] = view["text"]
        data["expires_at"] = view["expires_at"]
    return data
