"""Why a realtime stream ended, and the WebSocket close code that says so on the wire.

One enum for both transports: the SSE and WebSocket loops return it, the fan-out fails a
stream with it (``Stream.fail``), and a WebSocket close frame carries its ``code`` and its
``text`` (the close frame's reason, e.g. ``4008 "slow consumer"``). Reasons whose code is
1006 (RFC 6455: "abnormal closure", never sent in a frame) end without a close frame: the
peer is gone or not reading.

This module imports nothing from fechatter, so any layer may name a reason.
"""

from __future__ import annotations

import enum

# RFC 6455 §7.4.1 and the application range 4000-4999 (ours).
NORMAL = 1000
GOING_AWAY = 1001
SERVICE_RESTART = 1012  # IANA registry: "Service Restart"; a cluster node leaves (SPEC §10)
PROTOCOL_ERROR = 1002
ABNORMAL = 1006  # reserved: "closed without a close frame"; never written to the wire
INVALID_DATA = 1007
UNAUTHORIZED = 4001  # the token expired or was revoked: sign in again, then reconnect
SLOW_CONSUMER = 4008  # the client fell behind: reconnect and resume from the last event id


class CloseReason(enum.Enum):
    """A stream's end: ``text`` (log and close-frame reason) and ``code`` (WebSocket)."""

    text: str
    code: int

    SLOW_CONSUMER = ("slow consumer", SLOW_CONSUMER)
    TOKEN_EXPIRED = ("token expired", UNAUTHORIZED)
    TOKEN_REVOKED = ("token revoked", UNAUTHORIZED)
    GOING_AWAY = ("server shutting down", GOING_AWAY)
    # Cluster: this node leaves gracefully; reconnect (to another node) with the last event
    # id. SSE gets a ``retry:`` field before the end of the stream (SPEC §10).
    SERVICE_RESTART = ("service restart", SERVICE_RESTART)
    CLOSED_BY_PEER = ("closed by peer", NORMAL)  # the peer's own close code is echoed
    PROTOCOL_ERROR = ("protocol error", PROTOCOL_ERROR)
    INVALID_DATA = ("protocol error", INVALID_DATA)  # a text frame that is not UTF-8
    CONNECTION_LOST = ("connection lost", ABNORMAL)
    WRITE_TIMEOUT = ("write timeout", ABNORMAL)
    DEAD_PEER = ("dead peer", ABNORMAL)

    def __init__(self, text: str, code: int) -> None:
        self.text = text
        self.code = code

    @property
    def sends_close_frame(self) -> bool:
        """False when the peer is gone or not reading: the connection just ends."""
        return self.code != ABNORMAL

    def __str__(self) -> str:
        return self.text
