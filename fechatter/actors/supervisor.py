"""Supervision: how many crashes an actor may have before it is stopped (Erlang/OTP's
``intensity`` and ``period``: at most ``budget`` restarts within ``window`` seconds).

``RestartPolicy`` is pure bookkeeping over a clock the caller passes in; the ``Directory``
applies it to each ChatActor (one-for-one: a crash restarts only that chat's actor, from
storage). Nothing here does I/O or owns a task.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class RestartPolicy:
    """A sliding window of crash times for one actor."""

    budget: int = 5
    window: float = 60.0  # seconds
    _crashes: deque[float] = field(default_factory=deque, repr=False)

    def crashed(self, now: float) -> bool:
        """Record a crash at ``now`` (seconds, any monotonic clock); True if the actor may be
        restarted, False if it exceeded ``budget`` crashes within ``window`` and must stop."""
        crashes = self._crashes
        crashes.append(now)
        while crashes and crashes[0] < now - self.window:
            crashes.popleft()
        return len(crashes) <= self.budget
