"""Realtime event types and the sink that actors publish committed changes to.

An ``Event`` is built once per change, after the change committed (persist, then push), and
handed to every recipient as the same object; transports encode it once and share the bytes.
Publishing is synchronous and never blocks: a sink that cannot keep up drops the slow
consumer, never the chat (SPEC §4, guarantee 4). This module never does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

MESSAGE_CREATED = "message.created"
CHAT_CREATED = "chat.created"
CHAT_UPDATED = "chat.updated"
CHAT_DELETED = "chat.deleted"
MEMBER_ADDED = "chat.member_added"
MEMBER_REMOVED = "chat.member_removed"
TYPING = "typing"
READ = "read"


@dataclass(frozen=True, slots=True)
class Event:
    """One committed change, addressed to users by whoever publishes it."""

    name: str
    data: dict[str, Any]
    chat_id: int | None = None


class EventSink(Protocol):
    """Where actors hand events for online users."""

    def publish(self, user_ids: Iterable[int], event: Event) -> None:
        """Deliver to whichever of ``user_ids`` are online; must not block."""


class NullSink:
    """A sink with nobody online (tests of the core without realtime)."""

    def publish(self, user_ids: Iterable[int], event: Event) -> None:
        return None
