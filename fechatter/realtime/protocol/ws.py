"""Inbound WebSocket frames → client ops, fed bytes (wsproto's frame layer underneath).

``WsProtocol`` is one server connection after the handshake. ``receive_data`` takes what the
socket gave (``b""`` at end of file); ``events`` then yields, in order:

- ``ClientOp(name, frame)``: a text message that decoded (``fechatter.wire.loads``) to a JSON
  object whose ``op`` is ``typing``, ``read`` or ``send``; the fields are the caller's to check.
- ``Reply(data)``: bytes to send in answer (a pong to a ping frame, ``{"event": "pong"}`` to a
  ``{"op": "ping"}``).
- ``OpRefused(error, op)``: a message that is not an op — too large (413 ``frame_too_large``
  past ``max_message`` characters, fragments counted together), binary, not JSON, not an
  object, an unknown op. ``frame()`` is the ``{"event": "error"}`` answer; the connection stays.
- ``Closing(reason, data)``: the connection ends; ``data`` is the close frame to send (empty at
  end of file). A violation of the WebSocket protocol itself closes with 1002, or 1007 for a
  text frame that is not UTF-8 (RFC 6455), reason ``PROTOCOL_ERROR`` / ``INVALID_DATA``; a close
  from the peer is echoed (``CLOSED_BY_PEER``). Nothing follows a ``Closing``.

``ping()`` and ``close(reason)`` build the frames the server starts. Sans-I/O: no socket, no
trio, no clock; the caller handles one event before it reads more bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.utilities import generate_accept_token

from fechatter import wire
from fechatter.close_reasons import INVALID_DATA, CloseReason
from fechatter.errors import BadRequest, FechatterError, Invalid, PayloadTooLarge
from fechatter.events import dumps, ws_text_frame
from fechatter.realtime.protocol.head import Head, response_head

PONG = ws_text_frame(b'{"event":"pong"}')
PING_PAYLOAD = b"fechatter"
OPS = ("typing", "read", "send")  # the ops a caller must run; ``ping`` is answered here


@dataclass(frozen=True, slots=True)
class ClientOp:
    name: str  # one of OPS
    frame: dict[str, Any]  # the decoded message, ``op`` included


@dataclass(frozen=True, slots=True)
class Reply:
    data: bytes


@dataclass(frozen=True, slots=True)
class OpRefused:
    error: FechatterError
    op: str | None  # the op the message named, when it named one as a string

    def frame(self) -> bytes:
        return error_frame(self.error, self.op)


@dataclass(frozen=True, slots=True)
class Closing:
    reason: CloseReason
    data: bytes  # the close frame to send back; empty when there is nobody to tell


WsEvent = ClientOp | Reply | OpRefused | Closing


def event_frame(event: str, data: Any) -> bytes:
    """``{"event": event, "data": data}`` as one server text frame."""
    return ws_text_frame(dumps({"event": event, "data": data}))


def error_frame(error: FechatterError, op: str | None) -> bytes:
    """The ``error`` event answering a failed op: the problem document, plus ``op``."""
    problem = error.problem()
    if op is not None:
        problem["op"] = op
    return event_frame("error", problem)


def handshake_response(head: Head, cors: list[tuple[str, str]]) -> bytes | None:
    """The 101 response for a valid upgrade (version 13 with a key), else None."""
    key = head.header("sec-websocket-key")
    if head.header("sec-websocket-version") != "13" or not key:
        return None
    return response_head(
        101,
        [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", generate_accept_token(key.encode("latin-1")).decode()),
            *cors,
        ],
    )


class WsProtocol:
    """One WebSocket connection's inbound side (and the frames the server starts)."""

    __slots__ = ("_ended", "_eof", "_oversized", "_text", "_text_size", "_ws", "max_message")

    def __init__(self, max_message: int) -> None:
        self.max_message = max_message  # characters in one message, fragments together
        self._ws = Connection(ConnectionType.SERVER)
        self._text: list[str] = []
        self._text_size = 0
        self._oversized = False
        self._eof = False
        self._ended = False

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer; ``b""`` means it closed the connection."""
        if self._ended:
            return
        if not data:
            self._eof = True
        else:
            self._ws.receive_data(data)

    def events(self) -> Iterator[WsEvent]:
        """What the bytes fed so far amount to (see the module docstring); stops at a close."""
        if self._ended:
            return
        for event in self._ws.events():
            if isinstance(event, TextMessage):
                if (answer := self._text_part(event.data, event.message_finished)) is not None:
                    yield answer
            elif isinstance(event, BytesMessage):
                if event.message_finished:
                    error = BadRequest("binary frames are not supported", code="unsupported_frame")
                    yield OpRefused(error, None)
            elif isinstance(event, Ping):
                yield Reply(self._ws.send(event.response()))
            elif isinstance(event, Pong):
                pass  # proof of life; the caller notes it heard from the peer
            elif isinstance(event, CloseConnection):
                # wsproto reports a frame it cannot parse (invalid UTF-8: 1007, any other
                # violation: 1002) as a close while the connection is still open: RFC 6455
                # says fail the connection, so we answer with that code and stop.
                if self._ws.state is ConnectionState.OPEN:
                    invalid = event.code == INVALID_DATA
                    reason = CloseReason.INVALID_DATA if invalid else CloseReason.PROTOCOL_ERROR
                else:
                    reason = CloseReason.CLOSED_BY_PEER
                self._ended = True
                yield Closing(reason, self._ws.send(event.response()))
                return
        if self._eof:
            self._ended = True
            yield Closing(CloseReason.CLOSED_BY_PEER, b"")

    def ping(self) -> bytes:
        """A ping frame (the heartbeat); empty once the connection is closing."""
        if self._ended or self._ws.state is not ConnectionState.OPEN:
            return b""
        return self._ws.send(Ping(PING_PAYLOAD))

    def close(self, reason: CloseReason) -> bytes:
        """The close frame for ``reason`` (its code and text); empty if one was already sent."""
        self._ended = True
        if self._ws.state not in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            return b""
        return self._ws.send(CloseConnection(code=reason.code, reason=reason.text))

    def _text_part(self, chunk: str, finished: bool) -> ClientOp | Reply | OpRefused | None:
        if not self._oversized:
            self._text_size += len(chunk)
            if self._text_size > self.max_message:
                self._oversized = True
                self._text.clear()
            else:
                self._text.append(chunk)
        if not finished:
            return None
        oversized = self._oversized
        text = "".join(self._text)
        self._text.clear()
        self._text_size = 0
        self._oversized = False
        if oversized:
            limit = self.max_message
            error = PayloadTooLarge(
                f"frames are limited to {limit} characters", code="frame_too_large"
            )
            return OpRefused(error, None)
        return decode_op(text)


def decode_op(text: str) -> ClientOp | Reply | OpRefused:
    """One complete text message → an op to run, the pong, or why it is not an op."""
    op: object = None
    try:
        frame = wire.loads(text, what="frame")
        if not isinstance(frame, dict):
            raise Invalid.field("op", "frame must be a JSON object with an op")
        op = frame.get("op")
        if op == "ping":
            return Reply(PONG)
        if op not in OPS:
            raise Invalid.field("op", "must be one of ping, typing, read, send")
    except FechatterError as exc:
        return OpRefused(exc, op if isinstance(op, str) else None)
    assert isinstance(op, str)
    return ClientOp(op, frame)
