"""Realtime event types, ids, and their wire encodings (encoded once, shared by every stream).

An ``Event`` is built once per change, after the change committed (persist, then push), and
handed to every recipient as the same object. The hub stamps it with a process-wide increasing
``seq``; its public id is ``"<epoch>-<seq>"``, where the epoch changes at every start, so an id
from before a restart is recognised as unknown (and answered with ``resync``). The SSE and
WebSocket bytes are computed on first use and cached on the event: a fan-out to 10,000 streams
serialises the JSON once per transport. This module never does I/O.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Protocol

MESSAGE_CREATED = "message.created"
MESSAGE_UPDATED = "message.updated"
MESSAGE_DELETED = "message.deleted"
REACTION_ADDED = "reaction.added"
REACTION_REMOVED = "reaction.removed"
CHAT_CREATED = "chat.created"
CHAT_UPDATED = "chat.updated"
CHAT_DELETED = "chat.deleted"
MEMBER_ADDED = "chat.member_added"
MEMBER_REMOVED = "chat.member_removed"
MEMBER_UPDATED = "chat.member_updated"
TYPING = "typing"
READ = "read"
PRESENCE = "presence"
CHAT_MUTED = "chat.muted"  # {chat_id, muted}: the user's own mute, to their own streams
READY = "ready"
RESYNC = "resync"


def dumps(data: Any) -> bytes:
    """Compact UTF-8 JSON, the only serialisation used on the wire."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def ws_text_frame(payload: bytes) -> bytes:
    """An unmasked, unfragmented WebSocket text frame (server → client; RFC 6455 §5.2).

    Server frames carry no mask, so one frame's bytes serve every connection.
    """
    size = len(payload)
    if size < 126:
        header = bytes((0x81, size))
    elif size < 1 << 16:
        header = bytes((0x81, 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + size.to_bytes(8, "big")
    return header + payload


class Event:
    """One committed change, addressed to users by whoever publishes it."""

    __slots__ = ("_sse", "_ws", "chat_id", "committed", "data", "id", "name", "seq")

    def __init__(self, name: str, data: dict[str, Any], chat_id: int | None = None) -> None:
        self.name = name
        self.data = data
        self.chat_id = chat_id
        self.seq = 0  # stamped by the hub when published
        # Wall-clock seconds of the change's commit (0.0: unknown), set by whoever publishes
        # it after a write; only read to time the fan-out (``metrics.FanoutTimes``).
        self.committed = 0.0
        self.id = ""
        self._sse: bytes | None = None
        self._ws: bytes | None = None

    def stamp(self, epoch: str, seq: int) -> None:
        self.seq = seq
        self.id = f"{epoch}-{seq}"

    def sse(self) -> bytes:
        """``id:``/``event:``/``data:`` block, ``data`` a single line of JSON."""
        if self._sse is None:
            head = (
                f"id: {self.id}\nevent: {self.name}\ndata: ".encode()
                if self.id
                else (f"event: {self.name}\ndata: ".encode())
            )
            self._sse = head + dumps(self.data) + b"\n\n"
        return self._sse

    def ws(self) -> bytes:
        """One text frame: ``{"id": ..., "event": ..., "data": ...}``."""
        if self._ws is None:
            body: dict[str, Any] = {"id": self.id, "event": self.name, "data": self.data}
            if not self.id:
                del body["id"]
            self._ws = ws_text_frame(dumps(body))
        return self._ws

    def __repr__(self) -> str:
        return f"Event({self.name!r}, id={self.id!r}, chat_id={self.chat_id})"


class EventSink(Protocol):
    """Where actors hand events for online users."""

    def publish(self, user_ids: Iterable[int], event: Event) -> None:
        """Deliver to whichever of ``user_ids`` are online; must not block."""
