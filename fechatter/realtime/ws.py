"""A WebSocket stream (``GET /api/notifications/ws``): its connection task and client ops.

The handshake was answered from the parsed head (``protocol.ws.handshake_response``); after
it, ``protocol.ws.WsProtocol`` turns the client's bytes into ops, answers and closes, and this
module only moves bytes, keeps the clocks (``protocol.timers``) and runs the ops against the
actors. Events go out as pre-encoded text frames shared by every connection.

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

from fechatter.auth import AccessClaims
from fechatter.close_reasons import CloseReason
from fechatter.errors import FechatterError
from fechatter.realtime.context import RealtimeContext
from fechatter.realtime.protocol.timers import Due, Timers
from fechatter.realtime.protocol.ws import (
    ClientOp,
    OpRefused,
    Reply,
    WsProtocol,
    error_frame,
    event_frame,
)
from fechatter.realtime.sockets import recv_some
from fechatter.realtime.sse import opening
from fechatter.realtime.stream import Stream, Transport
from fechatter.schemas import MAX_ID, MessageIn, ReadIn, validate

# A close frame after a protocol violation, a peer's close or at shutdown gets this long to
# go out; a slow consumer gets ``write_timeout`` to drain down to its 4008 (so it resumes).
CLOSE_PATIENCE = 1.0


class ChatOp(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="ignore", frozen=True)
    chat_id: int = pydantic.Field(strict=True, gt=0, le=MAX_ID)


class WsSession:
    """One WebSocket connection after the handshake."""

    def __init__(self, ctx: RealtimeContext, sock: socket.socket, claims: AccessClaims) -> None:
        self.ctx = ctx
        self.sock = sock
        self.user_id = claims.user_id
        self.security_version = claims.security_version
        self.expires = ctx.expiry_deadline(claims.expires_at)
        self.protocol = WsProtocol(ctx.settings.ws_max_message)

    async def run(self, accept: bytes, trailing: bytes, last_event_id: str | None) -> CloseReason:
        """Serve the stream until it ends; returns why it ended."""
        ctx = self.ctx
        async with trio.open_nursery() as nursery:
            stream = Stream(
                self.sock,
                Transport.WS,
                self.user_id,
                ctx.hub.next_connection_id(),
                ctx.limits,
                nursery,
                security_version=self.security_version,
            )
            # cluster: route first and check the resume point (no await after)
            prepared = await ctx.hub.arriving(stream.user_id, last_event_id)
            attached = ctx.hub.attach(stream, last_event_id, prepared)
            try:
                await stream.prime(opening(ctx, stream, attached, accept))
                ctx.streams.add(stream)  # from here a graceful stop closes it (close_all)
                return await self._serve(stream, trailing)
            except trio.Cancelled:
                reason = ctx.streams.closing or CloseReason.GOING_AWAY
                with trio.CancelScope(shield=True):
                    await self._send_close(stream, reason, CLOSE_PATIENCE)
                raise
            finally:
                ctx.streams.discard(stream)
                ctx.hub.detach(stream)
                nursery.cancel_scope.cancel()

    async def _serve(self, stream: Stream, trailing: bytes) -> CloseReason:
        settings = self.ctx.settings
        if trailing:
            self.protocol.receive_data(trailing)
            if (ended := await self._handle_events(stream)) is not None:
                return ended
        timers = Timers(
            trio.current_time(), settings.heartbeat_interval, self.expires, settings.ws_dead_after
        )
        while (reason := stream.close_reason) is None:
            data = None
            with stream.wait_scope(timers.deadline()):
                try:
                    data = await recv_some(self.sock)
                except OSError:
                    return CloseReason.CONNECTION_LOST
            now = trio.current_time()
            if data is not None:
                timers.heard_from_peer(now)
                self.protocol.receive_data(data)
                if (ended := await self._handle_events(stream)) is not None:
                    return ended
                now = trio.current_time()
            # Also after data: a peer that never stops sending still reaches its token's
            # expiry and its pings.
            due = timers.due(now)
            if due is Due.EXPIRED:
                reason = CloseReason.TOKEN_EXPIRED
                break
            if due is Due.DEAD:
                return CloseReason.DEAD_PEER
            if due is Due.PING:
                stream.push(self.protocol.ping())
        if reason is CloseReason.SLOW_CONSUMER:
            self.ctx.stats.slow_consumers += 1
            await self._send_close(stream, reason, stream.limits.write_timeout)
        else:
            await self._send_close(stream, reason, CLOSE_PATIENCE)
        return reason

    async def _send_close(self, stream: Stream, reason: CloseReason, patience: float) -> None:
        """Send the close frame for ``reason`` after anything half-written, within
        ``patience`` seconds; nothing if the peer is gone or not reading."""
        current = stream.close_reason
        if current is not None and not current.sends_close_frame:
            return
        with trio.move_on_after(patience):
            await stream.send_final(self.protocol.close(reason), reason)

    async def _handle_events(self, stream: Stream) -> CloseReason | None:
        """Act on what the protocol parsed; returns a reason if the connection must end."""
        for event in self.protocol.events():
            if stream.close_reason is not None:
                # Failed meanwhile (token revoked, slow consumer): ops still buffered behind it
                # must not run under that identity.
                return stream.close_reason
            if isinstance(event, ClientOp):
                if answer := await self._op(event):
                    stream.push(answer)
            elif isinstance(event, Reply):
                stream.push(event.data)
            elif isinstance(event, OpRefused):
                stream.push(event.frame())
            else:
                reason = event.reason
                if reason is CloseReason.PROTOCOL_ERROR or reason is CloseReason.INVALID_DATA:
                    self.ctx.stats.bad_requests += 1
                if event.data:
                    with trio.move_on_after(CLOSE_PATIENCE):
                        await stream.send_final(event.data, reason)
                return reason
        return None

    async def _op(self, op: ClientOp) -> bytes:
        """Run one client op; the frame to answer with (empty: no answer)."""
        frame = op.frame
        try:
            if op.name == "send":
                return await self._send(frame)
            chat = validate(ChatOp, frame).chat_id
            message_id = validate(ReadIn, frame).message_id if op.name == "read" else 0
            # The ChatActor itself answers outsiders (404, or 403 for a public channel).
            if op.name == "read":
                await self.ctx.messages.mark_read(self.user_id, chat, message_id)
            else:
                await self.ctx.messages.typing(self.user_id, chat)
            return b""
        except FechatterError as exc:
            return error_frame(exc, op.name)

    async def _send(self, frame: dict[str, Any]) -> bytes:
        chat = validate(ChatOp, frame).chat_id
        body = validate(MessageIn, frame)
        result = await self.ctx.messages.send(self.user_id, chat, body)
        return event_frame(
            "ack", {"client_id": body.client_id, "message": result.message.to_json()}
        )
