"""A Server-Sent Events stream (``GET /api/notifications/events``).

The response is close-delimited ``text/event-stream``: no chunked framing, so every stream
gets byte-identical event blocks. The connection's task only waits: for the peer to close (or
send something, which is discarded), for the heartbeat (``: ping``), for token expiry, or for
its stream to be failed by the fan-out (slow consumer, token revoked).
"""

from __future__ import annotations

import random
import socket

import trio

from fechatter.actors.user import Attached
from fechatter.auth import AccessClaims
from fechatter.close_reasons import CloseReason
from fechatter.events import RESYNC, Event
from fechatter.realtime.context import RealtimeContext
from fechatter.realtime.protocol.head import response_head
from fechatter.realtime.protocol.timers import Due, Timers
from fechatter.realtime.stream import Stream, Transport

PING = b": ping\n\n"
# A leaving cluster node's reconnect hint (SPEC §10): ``retry: <ms>``, then the end of the
# stream. The delay is spread per stream over [RETRY_MIN_MS, RETRY_MIN_MS + RETRY_SPREAD_MS)
# so a node's streams do not all reconnect in the same instant.
RETRY_MIN_MS = 500
RETRY_SPREAD_MS = 1000
# The hint's write gets this long (a peer that reads nothing does not hold the stop).
FINAL_PATIENCE = 1.0


def retry_field() -> bytes:
    """SSE's reconnect hint: a block with only a ``retry`` field (it dispatches no event;
    an ``EventSource`` waits that many milliseconds before it reconnects)."""
    return b"retry: %d\n\n" % (RETRY_MIN_MS + random.randrange(RETRY_SPREAD_MS))


def opening(ctx: RealtimeContext, stream: Stream, attached: Attached, head: bytes) -> bytes:
    """Response head (if any), ``ready``, then ``resync`` or the replayed events."""
    sse = stream.transport is Transport.SSE
    parts = [head]
    ready = ctx.ready_event(attached.position, stream.user_id, stream.connection_id)
    parts.append(ready.sse() if sse else ready.ws())
    if attached.resync is not None:
        event = Event(RESYNC, {"reason": attached.resync})
        event.id = attached.position  # the hub's newest in one process
        parts.append(event.sse() if sse else event.ws())
    parts.extend(e.sse() if sse else e.ws() for e in attached.replay)
    return b"".join(parts)


async def serve_sse(
    ctx: RealtimeContext,
    sock: socket.socket,
    claims: AccessClaims,
    last_event_id: str | None,
    cors: list[tuple[str, str]],
) -> CloseReason:
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
    async with trio.open_nursery() as nursery:
        stream = Stream(
            sock,
            Transport.SSE,
            claims.user_id,
            ctx.hub.next_connection_id(),
            ctx.limits,
            nursery,
            security_version=claims.security_version,
        )
        # cluster: route first and check the resume point (no await after)
        prepared = await ctx.hub.arriving(stream.user_id, last_event_id)
        attached = ctx.hub.attach(stream, last_event_id, prepared)
        try:
            reason = await _run(ctx, stream, claims, opening(ctx, stream, attached, head))
            if reason is CloseReason.SLOW_CONSUMER:
                ctx.stats.slow_consumers += 1
            elif reason is CloseReason.SERVICE_RESTART:
                with trio.move_on_after(FINAL_PATIENCE):
                    await stream.send_final(retry_field(), reason)
            return reason
        finally:
            ctx.streams.discard(stream)
            ctx.hub.detach(stream)
            nursery.cancel_scope.cancel()


async def _run(
    ctx: RealtimeContext, stream: Stream, claims: AccessClaims, first: bytes
) -> CloseReason:
    sock = stream.sock
    await stream.prime(first)
    ctx.streams.add(stream)  # from here a graceful stop closes it (``close_all``)
    timers = Timers(
        trio.current_time(), ctx.settings.heartbeat_interval, ctx.expiry_deadline(claims.expires_at)
    )
    while (reason := stream.close_reason) is None:
        with stream.wait_scope(timers.deadline()):
            await trio.lowlevel.wait_readable(sock)
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                return CloseReason.CONNECTION_LOST
            if not data:
                return CloseReason.CLOSED_BY_PEER
            # A client has nothing to say on an event stream: discard it, and still check the
            # timers below, so one that never stops sending reaches its token's expiry.
        due = timers.due(trio.current_time())
        if due is Due.EXPIRED:
            return CloseReason.TOKEN_EXPIRED
        if due is Due.PING:
            stream.push(PING)
    return reason
