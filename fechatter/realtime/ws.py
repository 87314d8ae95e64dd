"""A WebSocket stream (``GET /api/notifications/ws``) and its client ops.

The handshake is answered here (the head was parsed by h11); wsproto's frame-level
``Connection`` then parses what the client sends and builds control frames. Events go out as
pre-encoded text frames shared by every connection (server frames are unmasked).

Client → server text frames: ``{"op": "ping"}`` → ``{"event": "pong"}``; ``{"op": "typing",
"chat_id"}``; ``{"op": "read", "chat_id", "message_id"}``; ``{"op": "send", "chat_id",
"content", "client_id", ...}`` → ``{"event": "ack", "data": {"client_id", "message"}}``. Any
failure answers ``{"event": "error", "data": <problem>}`` and the connection stays up; only a
violation of the WebSocket protocol itself (invalid UTF-8, a malformed frame) closes it, with
1007 / 1002 as RFC 6455 requires. A frame is handled before the next is read, so a client that
floods ops is slowed by its own socket.
"""

from __future__ import annotations

import socket
from typing import Any

import pydantic
import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.utilities import generate_accept_token

from fechatter import wire
from fechatter.auth import AccessClaims
from fechatter.errors import BadRequest, FechatterError, Invalid, PayloadTooLarge
from fechatter.events import dumps, ws_text_frame
from fechatter.realtime.context import RealtimeContext
from fechatter.realtime.head import Head, recv_some, response_head
from fechatter.realtime.sse import opening
from fechatter.realtime.stream import Stream, Transport
from fechatter.schemas import MAX_ID, MessageIn, ReadIn, validate

SLOW_CONSUMER = 4008
TOKEN_EXPIRED = 4001
GOING_AWAY = 1001
PONG = ws_text_frame(b'{"event":"pong"}')


class ChatOp(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="ignore", frozen=True)
    chat_id: int = pydantic.Field(strict=True, gt=0, le=MAX_ID)


def handshake_response(head: Head, cors: list[tuple[str, str]]) -> bytes | None:
    """The 101 response for a valid upgrade, else None."""
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


def event_frame(event: str, data: Any) -> bytes:
    return ws_text_frame(dumps({"event": event, "data": data}))


class WsSession:
    """One WebSocket connection after the handshake."""

    def __init__(self, ctx: RealtimeContext, sock: socket.socket, claims: AccessClaims) -> None:
        self.ctx = ctx
        self.sock = sock
        self.user_id = claims.user_id
        self.security_version = claims.security_version
        self.expires = ctx.expiry_deadline(claims.expires_at)
        self.ws = Connection(ConnectionType.SERVER)
        self.text: list[str] = []
        self.text_size = 0
        self.oversized = False

    async def run(self, accept: bytes, trailing: bytes, last_event_id: str | None) -> str:
        ctx = self.ctx
        settings = ctx.settings
        async with trio.open_nursery() as nursery:
            stream = Stream(
                self.sock,
                Transport.WS,
                self.user_id,
                ctx.hub.next_connection_id(),
                ctx.limits,
                nursery,
            )
            stream.security_version = self.security_version
            attached = ctx.hub.attach(stream, last_event_id)
            reason = "closed"
            try:
                await stream.prime(
                    opening(
                        ctx, stream, attached.position, attached.resync, attached.replay, accept
                    )
                )
                if trailing:
                    self.ws.receive_data(trailing)
                    reason = await self._handle_events(stream) or reason
                now = trio.current_time()
                next_ping = now + settings.heartbeat_interval
                heard = now
                while stream.close_reason is None and reason == "closed":
                    deadline = min(next_ping, self.expires, heard + settings.ws_dead_after)
                    data = None
                    with stream.wait_scope(deadline):
                        try:
                            data = await recv_some(self.sock)
                        except OSError:
                            return "connection lost"
                    now = trio.current_time()
                    if data is not None:
                        if not data:
                            return "closed by peer"
                        heard = now
                        self.ws.receive_data(data)
                        if (ended := await self._handle_events(stream)) is not None:
                            return ended
                        continue
                    if now >= self.expires:
                        reason = "token expired"
                    elif now >= heard + settings.ws_dead_after:
                        return "dead peer"
                    elif now >= next_ping:
                        stream.push(self.ws.send(Ping(b"fechatter")))
                        next_ping = now + settings.heartbeat_interval
                reason = stream.close_reason or reason
                code = {
                    "slow consumer": SLOW_CONSUMER,
                    "token expired": TOKEN_EXPIRED,
                    "token revoked": TOKEN_EXPIRED,
                }.get(reason, GOING_AWAY)
                if reason == "slow consumer":
                    ctx.stats.slow_consumers += 1
                await self._close(stream, code, reason)
                return reason
            except trio.Cancelled:
                with trio.CancelScope(shield=True):
                    await self._close(stream, GOING_AWAY, "server shutting down")
                raise
            finally:
                ctx.hub.detach(stream)
                nursery.cancel_scope.cancel()

    async def _close(self, stream: Stream, code: int, reason: str) -> None:
        """Send a close frame after anything half-written.

        A slow consumer gets ``write_timeout`` to drain down to its close frame (so it learns
        the 4008 and resumes); anything else gets a second.
        """
        if stream.close_reason in ("connection lost", "write timeout"):
            return
        stream.close_reason = stream.close_reason or reason
        patience = stream.limits.write_timeout if code == SLOW_CONSUMER else 1.0
        with trio.move_on_after(patience):
            await stream.send_final(self.ws.send(CloseConnection(code=code, reason=reason)))

    async def _handle_events(self, stream: Stream) -> str | None:
        """Process what wsproto parsed; returns a reason if the connection must end."""
        for event in self.ws.events():
            if isinstance(event, TextMessage):
                await self._text(stream, event.data, event.message_finished)
            elif isinstance(event, BytesMessage):
                if event.message_finished:
                    stream.push(
                        event_frame(
                            "error",
                            BadRequest(
                                "binary frames are not supported", code="unsupported_frame"
                            ).problem(),
                        )
                    )
            elif isinstance(event, Ping):
                stream.push(self.ws.send(event.response()))
            elif isinstance(event, Pong):
                pass  # proof of life; the caller already noted we heard from the peer
            elif isinstance(event, CloseConnection):
                # wsproto reports a frame it cannot parse (invalid UTF-8: 1007, any other
                # protocol violation: 1002) as a close while the connection is still open:
                # RFC 6455 says fail the connection, so we answer with that code and stop.
                violation = self.ws.state is ConnectionState.OPEN
                reason = "protocol error" if violation else "closed by peer"
                if violation:
                    self.ctx.stats.bad_requests += 1
                stream.close_reason = stream.close_reason or reason
                with trio.move_on_after(1.0):
                    await stream.send_final(self.ws.send(event.response()))
                return reason
        return None

    async def _text(self, stream: Stream, chunk: str, finished: bool) -> None:
        limit = self.ctx.settings.ws_max_message
        if not self.oversized:
            self.text_size += len(chunk)
            if self.text_size > limit:
                self.oversized = True
                self.text.clear()
            else:
                self.text.append(chunk)
        if not finished:
            return
        if self.oversized:
            error: FechatterError = PayloadTooLarge(
                f"frames are limited to {limit} characters", code="frame_too_large"
            )
            stream.push(event_frame("error", error.problem()))
        else:
            if answer := await self._op("".join(self.text)):
                stream.push(answer)
        self.text.clear()
        self.text_size = 0
        self.oversized = False

    async def _op(self, text: str) -> bytes:
        """Run one client op; the frame to answer with (empty: no answer)."""
        op: object = None
        try:
            frame = wire.loads(text)
            if not isinstance(frame, dict):
                raise Invalid.field("op", "frame must be a JSON object with an op")
            op = frame.get("op")
            if op == "ping":
                return PONG
            if op == "send":
                return await self._send(frame)
            if op not in ("typing", "read"):
                raise Invalid.field("op", "must be one of ping, typing, read, send")
            chat = validate(ChatOp, frame).chat_id
            message_id = validate(ReadIn, frame).message_id if op == "read" else 0
            # The ChatActor itself answers outsiders (404, or 403 for a public channel).
            if op == "read":
                await self.ctx.messages.mark_read(self.user_id, chat, message_id)
            else:
                await self.ctx.messages.typing(self.user_id, chat)
            return b""
        except FechatterError as exc:
            data = exc.problem()
            if isinstance(op, str):
                data["op"] = op
            return event_frame("error", data)

    async def _send(self, frame: dict[str, Any]) -> bytes:
        chat = validate(ChatOp, frame).chat_id
        body = validate(MessageIn, frame)
        result = await self.ctx.messages.send(self.user_id, chat, body)
        return event_frame(
            "ack", {"client_id": body.client_id, "message": result.message.to_json()}
        )
