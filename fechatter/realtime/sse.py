"""A Server-Sent Events stream (``GET /api/notifications/events``).

The response is close-delimited ``text/event-stream``: no chunked framing, so every stream
gets byte-identical event blocks. The connection's task only waits: for the peer to close (or
send something, which is discarded), for the heartbeat (``: ping``), for token expiry, or for
its stream to be failed by the fan-out (slow consumer).
"""

from __future__ import annotations

import socket

import trio

from fechatter.auth import AccessClaims
from fechatter.events import RESYNC, Event
from fechatter.realtime.context import RealtimeContext
from fechatter.realtime.head import response_head
from fechatter.realtime.stream import Stream, Transport

PING = b": ping\n\n"


def opening(
    ctx: RealtimeContext,
    stream: Stream,
    position: str,
    resync: str | None,
    replay: list[Event],
    head: bytes,
) -> bytes:
    """Response head (if any), ``ready``, then ``resync`` or the replayed events."""
    sse = stream.transport is Transport.SSE
    parts = [head]
    ready = ctx.ready_event(position, stream.user_id, stream.connection_id)
    parts.append(ready.sse() if sse else ready.ws())
    if resync is not None:
        event = Event(RESYNC, {"reason": resync})
        event.id = ctx.hub.position
        parts.append(event.sse() if sse else event.ws())
    parts.extend(e.sse() if sse else e.ws() for e in replay)
    return b"".join(parts)


async def serve_sse(
    ctx: RealtimeContext,
    sock: socket.socket,
    claims: AccessClaims,
    last_event_id: str | None,
    cors: list[tuple[str, str]],
) -> str:
    """Run one SSE stream until it ends; returns why it ended."""
    head = response_head(
        200,
        [
            ("Content-Type", "text/event-stream; charset=utf-8"),
            ("Cache-Control", "no-store"),
            ("X-Accel-Buffering", "no"),
            *cors,
        ],
    )
    heartbeat = ctx.settings.heartbeat_interval
    expires = ctx.expiry_deadline(claims.expires_at)
    async with trio.open_nursery() as nursery:
        stream = Stream(
            sock, Transport.SSE, claims.user_id, ctx.hub.next_connection_id(), ctx.limits, nursery
        )
        stream.security_version = claims.security_version
        attached = ctx.hub.attach(stream, last_event_id)
        try:
            await stream.prime(
                opening(ctx, stream, attached.position, attached.resync, attached.replay, head)
            )
            next_ping = trio.current_time() + heartbeat
            while stream.close_reason is None:
                with stream.wait_scope(min(next_ping, expires)):
                    await trio.lowlevel.wait_readable(sock)
                    try:
                        data = sock.recv(65536)
                    except BlockingIOError:
                        continue
                    except OSError:
                        return "connection lost"
                    if not data:
                        return "closed by peer"
                    continue  # a client has nothing to say on an event stream: discard
                now = trio.current_time()
                if now >= expires:
                    return "token expired"
                if now >= next_ping:
                    stream.push(PING)
                    next_ping = now + heartbeat
            if stream.close_reason == "slow consumer":
                ctx.stats.slow_consumers += 1
            return stream.close_reason
        finally:
            ctx.hub.detach(stream)
            nursery.cancel_scope.cancel()
